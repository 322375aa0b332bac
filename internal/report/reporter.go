package report

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/policy"
)

// DefaultReportInterval is how often the Reporter rescans without a
// policy or namespace change.
const DefaultReportInterval = 5 * time.Minute

// Reporter keeps the PolicyReports of every opted-in namespace and the
// gauge dnstune_pods_out_of_date{profile}, rescanning every Interval and
// when the policy or the set of opted-in namespaces changes. It runs on
// the leader only. A scan is one paginated LIST per kind for the whole
// cluster (Scan), read straight from the API: no informer and no watch, so
// what it costs grows with pods and workloads, not with namespaces, and
// nothing is held between scans but what was last written. Reports whose
// content did not change are not written again.
type Reporter struct {
	// Reader lists pods, their owners and NetworkPolicies (the API, not a cache).
	Reader client.Reader
	// Namespaces reads namespace metadata (the manager's metadata cache).
	Namespaces client.Reader
	// Writer writes PolicyReports (server-side apply) and reads discovery.
	Writer     client.Client
	Policy     func() *policy.Policy
	Generation func() int64
	ClusterDNS func() netip.Addr
	// Interval, default DefaultReportInterval.
	Interval time.Duration
	// PageSize of each LIST, default DefaultPageSize.
	PageSize int64
	// OutOfDate is the gauge; nil: not exported.
	OutOfDate *prometheus.GaugeVec
	// Events, when set, receives an Event on About when the node-local
	// coverage's advice changes (the policy's address answers nowhere, a
	// well-known one everywhere).
	Events record.EventRecorder
	About  runtime.Object
	Log    logr.Logger

	advice string // the last Coverage.Advice said

	may     bool                // mayReport's last answer
	checked time.Time           // when it was asked
	written map[string]int      // namespace -> reports written
	hashes  map[string][32]byte // namespace/name -> content last written
}

// newOutOfDateGauge is dnstune_pods_out_of_date{profile}.
func newOutOfDateGauge() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dnstune_pods_out_of_date",
		Help: "Running pods in opted-in namespaces whose DNS settings a restart would change, by the profile they would get (last scan).",
	}, []string{"profile"})
}

// NeedLeaderElection is true: one replica writes the reports.
func (r *Reporter) NeedLeaderElection() bool { return true }

// Start scans until ctx ends.
func (r *Reporter) Start(ctx context.Context) error {
	if r.Interval <= 0 {
		r.Interval = DefaultReportInterval
	}
	r.written, r.hashes = map[string]int{}, map[string][32]byte{}
	var lastGen int64 = -1
	var lastNS []string
	var lastScan time.Time
	warned := false
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		opted, err := r.optedIn(ctx)
		switch {
		case err != nil:
			r.Log.Error(err, "cannot list namespaces; reports not updated")
		case !r.crdServed():
			if !warned {
				r.Log.Info("PolicyReport CRD (wgpolicyk8s.io/v1alpha2) not installed: no reports; apply manifests/reports.yaml to turn them on")
				warned = true
			}
		case !r.allowed(ctx):
			// The CRD is there (Kyverno and Policy Reporter install it), but
			// not dnstune's report RBAC: do nothing, say so once.
			if !warned {
				r.Log.Info("PolicyReport CRD installed, but this ServiceAccount may not list pods or write PolicyReports: no reports; apply manifests/reports.yaml (or the chart with reports.enabled) to turn them on, or run with --reports=off")
				warned = true
			}
		case r.Generation() != lastGen || !slices.Equal(opted, lastNS) || time.Since(lastScan) >= r.Interval:
			warned = false
			if err := r.scan(ctx, opted); err != nil {
				r.Log.Error(err, "report scan failed; will retry")
			} else {
				lastGen, lastNS, lastScan = r.Generation(), opted, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// allowed is mayReport, asked at most once a minute.
func (r *Reporter) allowed(ctx context.Context) bool {
	if time.Since(r.checked) >= time.Minute {
		r.may, r.checked = r.mayReport(ctx), time.Now()
	}
	return r.may
}

// mayReport asks the API (SelfSubjectAccessReview) whether this identity
// may do what a scan and its writes need. An answer it cannot get counts
// as no.
func (r *Reporter) mayReport(ctx context.Context) bool {
	for _, a := range []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "pods"},
		{Verb: "list", Group: "apps", Resource: "replicasets"},
		{Verb: "create", Group: PolicyReportGVK.Group, Resource: "policyreports"},
		{Verb: "patch", Group: PolicyReportGVK.Group, Resource: "policyreports"},
	} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &a}}
		if err := r.Writer.Create(ctx, review); err != nil || !review.Status.Allowed {
			return false
		}
	}
	return true
}

func (r *Reporter) crdServed() bool {
	_, err := r.Writer.RESTMapper().RESTMapping(PolicyReportGVK.GroupKind(), PolicyReportGVK.Version)
	if err != nil {
		if rm, ok := r.Writer.RESTMapper().(meta.ResettableRESTMapper); ok {
			rm.Reset() // look again next time: the CRD may be applied later
		}
		return false
	}
	return true
}

func (r *Reporter) optedIn(ctx context.Context) ([]string, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := r.Namespaces.List(ctx, list); err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range list.Items {
		if v := ns.Labels[policy.InjectLabel]; (v == policy.InjectEnabled || v == policy.InjectAudit) && ns.DeletionTimestamp == nil {
			out = append(out, ns.Name) // a namespace being deleted takes no new reports
		}
	}
	slices.Sort(out)
	return out, nil
}

// scan scans the cluster and writes every changed report and the gauge.
func (r *Reporter) scan(ctx context.Context, opted []string) error {
	start := time.Now()
	pol := r.Policy()
	var missing map[string]string
	cov, err := ReadCoverage(ctx, r.Reader, pol)
	switch {
	case err != nil:
		r.Log.V(1).Info("node-local coverage not in the reports", "reason", err.Error())
	case cov != nil:
		missing = cov.MissingNodes()
		r.advise(cov.Advice())
	}
	ws, err := Scan(ctx, Options{Client: r.Reader, Policy: pol, ClusterDNS: r.ClusterDNS(), PageSize: r.PageSize, CacheMissing: missing})
	if err != nil {
		return err
	}
	scanned := time.Since(start)
	byNS := map[string][]Workload{}
	for _, ns := range opted {
		byNS[ns] = nil
	}
	perProfile := map[string]int{}
	pods := 0
	for _, w := range ws {
		if _, ok := byNS[w.Namespace]; !ok {
			continue // its namespace is being deleted (optedIn leaves it out)
		}
		byNS[w.Namespace] = append(byNS[w.Namespace], w)
		pods += w.UpToDate + w.OutOfDate + w.Skipped
		if w.OutOfDate > 0 {
			perProfile[w.Profile] += w.OutOfDate
		}
	}
	now := time.Now()
	writes := 0
	// One namespace's failed write (deleted meanwhile, say) does not stop
	// the others' reports or the gauge; the scan's error names them all.
	var errs []error
	for ns, list := range byNS {
		parts := PolicyReports(ns, list, now)
		failed := false
		for _, u := range parts {
			h := contentHash(u)
			if r.hashes[ns+"/"+u.GetName()] == h {
				continue
			}
			if err := r.Writer.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("dnstune"), client.ForceOwnership); err != nil {
				errs = append(errs, fmt.Errorf("failed to write PolicyReport %s/%s: %w", ns, u.GetName(), err))
				failed = true
				break
			}
			r.hashes[ns+"/"+u.GetName()] = h
			writes++
		}
		if failed {
			continue
		}
		if err := r.deleteParts(ctx, ns, len(parts)); err != nil {
			errs = append(errs, err)
			continue
		}
		r.written[ns] = len(parts)
	}
	for ns := range r.written {
		if _, ok := byNS[ns]; ok {
			continue
		}
		if err := r.deleteParts(ctx, ns, 0); err != nil { // deleteParts ignores NotFound
			errs = append(errs, fmt.Errorf("%w (namespace no longer opted in)", err))
			continue
		}
		delete(r.written, ns)
	}
	if r.OutOfDate != nil {
		r.OutOfDate.Reset()
		for p, n := range perProfile {
			r.OutOfDate.WithLabelValues(p).Set(float64(n))
		}
	}
	r.Log.Info("reports updated", "namespaces", len(opted), "workloads", len(ws), "pods", pods, "outOfDate", sum(perProfile),
		"written", writes, "failed", len(errs), "scan", scanned.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// advise logs and records an Event when the coverage's advice changes.
func (r *Reporter) advise(a string) {
	if a == r.advice {
		return
	}
	r.advice = a
	if a == "" {
		return
	}
	r.Log.Info(a)
	if r.Events != nil && r.About != nil {
		r.Events.Event(r.About, corev1.EventTypeWarning, "NodeLocalDNSAddress", a)
	}
}

// deleteParts deletes the namespace's reports from the keep-th on (those
// it had before that it needs no more).
func (r *Reporter) deleteParts(ctx context.Context, ns string, keep int) error {
	for i := keep; i < r.written[ns]; i++ {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(PolicyReportGVK)
		u.SetNamespace(ns)
		u.SetName(partName(i))
		if err := client.IgnoreNotFound(r.Writer.Delete(ctx, u)); err != nil {
			return fmt.Errorf("failed to delete PolicyReport %s/%s: %w", ns, u.GetName(), err)
		}
		delete(r.hashes, ns+"/"+u.GetName())
	}
	return nil
}

// contentHash is a report's content without its timestamps: a report that
// says the same is not written again.
func contentHash(u *unstructured.Unstructured) [32]byte {
	c := u.DeepCopy()
	results, _, _ := unstructured.NestedSlice(c.Object, "results")
	for _, x := range results {
		delete(x.(map[string]any), "timestamp")
	}
	_ = unstructured.SetNestedSlice(c.Object, results, "results")
	b, _ := json.Marshal(c.Object)
	return sha256.Sum256(b)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// stripPod keeps of a listed pod what the scan reads: metadata without
// managed fields, of its spec the fields the decision reads, of its status
// the phase. Owners keep only their stripped template (owners.keep).
func stripPod(p *corev1.Pod) *corev1.Pod {
	p.SetManagedFields(nil)
	stripSpec(&p.Spec)
	p.Status = corev1.PodStatus{Phase: p.Status.Phase}
	return p
}

func stripSpec(s *corev1.PodSpec) {
	keep := corev1.PodSpec{
		DNSPolicy: s.DNSPolicy, DNSConfig: s.DNSConfig, HostNetwork: s.HostNetwork, OS: s.OS, NodeSelector: s.NodeSelector, NodeName: s.NodeName,
		Containers: containersNamesImages(s.Containers), InitContainers: containersNamesImages(s.InitContainers),
	}
	if s.Affinity != nil && s.Affinity.NodeAffinity != nil {
		keep.Affinity = &corev1.Affinity{NodeAffinity: s.Affinity.NodeAffinity}
	}
	*s = keep
}

func containersNamesImages(cs []corev1.Container) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Image: c.Image}
	}
	return out
}
