package report

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/policy"
)

// DefaultReportInterval is how often the Reporter rescans without a
// policy or namespace change.
const DefaultReportInterval = 5 * time.Minute

// Reporter keeps one PolicyReport per opted-in namespace and the gauge
// dnstune_pods_out_of_date{profile}, rescanning every Interval and when
// the policy or the set of opted-in namespaces changes. It runs on the
// leader only. Reads come from informers started for opted-in namespaces
// only (pods and their owners, stripped to what the decision reads), so a
// scan makes no API list calls; an opted-out namespace's informers stop.
type Reporter struct {
	Config *rest.Config
	Scheme *runtime.Scheme
	// Namespaces reads namespace metadata (the manager's metadata cache).
	Namespaces client.Reader
	// Writer writes PolicyReports (server-side apply) and reads discovery.
	Writer     client.Client
	Policy     func() *policy.Policy
	Generation func() int64
	ClusterDNS func() netip.Addr
	// Interval, default DefaultReportInterval.
	Interval time.Duration
	// OutOfDate is the gauge; nil: not exported.
	OutOfDate *prometheus.GaugeVec
	Log       logr.Logger

	mu      sync.Mutex
	caches  map[string]*nsCache
	written map[string]bool
}

type nsCache struct {
	c      cache.Cache
	cancel context.CancelFunc
}

// NewOutOfDateGauge is dnstune_pods_out_of_date{profile}.
func NewOutOfDateGauge() *prometheus.GaugeVec {
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
	r.caches, r.written = map[string]*nsCache{}, map[string]bool{}
	defer r.stopAll()
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
		if v := ns.Labels[policy.InjectLabel]; v == policy.InjectEnabled || v == policy.InjectAudit {
			out = append(out, ns.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// scan brings the informers to the opted-in set, scans from them, and
// writes every report and the gauge.
func (r *Reporter) scan(ctx context.Context, opted []string) error {
	start := time.Now()
	if err := r.syncCaches(ctx, opted); err != nil {
		return err
	}
	ws, err := Scan(ctx, Options{Client: r.reader(), Policy: r.Policy(), ClusterDNS: r.ClusterDNS()})
	if err != nil {
		return err
	}
	byNS := map[string][]Workload{}
	for _, ns := range opted {
		byNS[ns] = nil
	}
	perProfile := map[string]int{}
	pods := 0
	for _, w := range ws {
		byNS[w.Namespace] = append(byNS[w.Namespace], w)
		pods += w.UpToDate + w.OutOfDate + w.Skipped
		if w.OutOfDate > 0 {
			perProfile[w.Profile] += w.OutOfDate
		}
	}
	now := time.Now()
	for ns, list := range byNS {
		u := PolicyReport(ns, list, now)
		if err := r.Writer.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("dnstune"), client.ForceOwnership); err != nil {
			return fmt.Errorf("failed to write the PolicyReport of %s: %w", ns, err)
		}
		r.written[ns] = true
	}
	for ns := range r.written {
		if _, ok := byNS[ns]; ok {
			continue
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(PolicyReportGVK)
		u.SetNamespace(ns)
		u.SetName(ReportName)
		if err := client.IgnoreNotFound(r.Writer.Delete(ctx, u)); err != nil {
			return fmt.Errorf("failed to delete the PolicyReport of %s, no longer opted in: %w", ns, err)
		}
		delete(r.written, ns)
	}
	if r.OutOfDate != nil {
		r.OutOfDate.Reset()
		for p, n := range perProfile {
			r.OutOfDate.WithLabelValues(p).Set(float64(n))
		}
	}
	r.Log.Info("reports updated", "namespaces", len(opted), "workloads", len(ws), "pods", pods, "outOfDate", sum(perProfile), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// syncCaches starts informers for newly opted-in namespaces (and waits for
// them) and stops those of namespaces no longer opted in.
func (r *Reporter) syncCaches(ctx context.Context, opted []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ns, c := range r.caches {
		if !slices.Contains(opted, ns) {
			c.cancel()
			delete(r.caches, ns)
		}
	}
	for _, ns := range opted {
		if _, ok := r.caches[ns]; ok {
			continue
		}
		c, err := cache.New(r.Config, cache.Options{
			Scheme:            r.Scheme,
			DefaultNamespaces: map[string]cache.Config{ns: {}},
			DefaultTransform:  strip,
		})
		if err != nil {
			return fmt.Errorf("failed to create the cache of %s: %w", ns, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		go func() { _ = c.Start(cctx) }()
		for _, obj := range []client.Object{&corev1.Pod{}, &appsv1.ReplicaSet{}, &appsv1.Deployment{}, &appsv1.StatefulSet{}, &appsv1.DaemonSet{}, &batchv1.Job{}, &batchv1.CronJob{}, &corev1.ReplicationController{}} {
			if _, err := c.GetInformer(ctx, obj); err != nil {
				cancel()
				return fmt.Errorf("failed to watch %T in %s: %w", obj, ns, err)
			}
		}
		if !c.WaitForCacheSync(ctx) {
			cancel()
			return fmt.Errorf("the cache of %s did not sync", ns)
		}
		r.caches[ns] = &nsCache{c: c, cancel: cancel}
	}
	return nil
}

func (r *Reporter) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ns, c := range r.caches {
		c.cancel()
		delete(r.caches, ns)
	}
}

// reader serves Scan: namespace metadata from the manager, everything else
// from the namespace's own informers.
func (r *Reporter) reader() client.Reader { return dispatch{r: r} }

type dispatch struct{ r *Reporter }

func (d dispatch) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c, err := d.cache(key.Namespace)
	if err != nil {
		return err
	}
	return c.Get(ctx, key, obj, opts...)
}

func (d dispatch) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*metav1.PartialObjectMetadataList); ok {
		return d.r.Namespaces.List(ctx, list, opts...)
	}
	lo := &client.ListOptions{}
	lo.ApplyOptions(opts)
	c, err := d.cache(lo.Namespace)
	if err != nil {
		return err
	}
	// The scan only reads (Evaluate copies before deciding): no deep copy
	// of every cached object per scan.
	return c.List(ctx, list, append(opts, client.UnsafeDisableDeepCopy)...)
}

func (d dispatch) cache(ns string) (cache.Cache, error) {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	c, ok := d.r.caches[ns]
	if !ok {
		return nil, fmt.Errorf("namespace %q is not opted in: no cache", ns)
	}
	return c.c, nil
}

// strip keeps, of each cached object, what the scan reads: metadata
// without managed fields, and of pod specs the fields the decision reads.
func strip(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		stripSpec(&o.Spec)
		o.Status = corev1.PodStatus{Phase: o.Status.Phase}
	case *appsv1.ReplicaSet:
		stripSpec(&o.Spec.Template.Spec)
		o.Status = appsv1.ReplicaSetStatus{}
	case *appsv1.Deployment:
		stripSpec(&o.Spec.Template.Spec)
		o.Status = appsv1.DeploymentStatus{}
	case *appsv1.StatefulSet:
		stripSpec(&o.Spec.Template.Spec)
		o.Status = appsv1.StatefulSetStatus{}
	case *appsv1.DaemonSet:
		stripSpec(&o.Spec.Template.Spec)
		o.Status = appsv1.DaemonSetStatus{}
	case *batchv1.Job:
		stripSpec(&o.Spec.Template.Spec)
		o.Status = batchv1.JobStatus{}
	case *batchv1.CronJob:
		stripSpec(&o.Spec.JobTemplate.Spec.Template.Spec)
		o.Status = batchv1.CronJobStatus{}
	case *corev1.ReplicationController:
		if o.Spec.Template != nil {
			stripSpec(&o.Spec.Template.Spec)
		}
		o.Status = corev1.ReplicationControllerStatus{}
	}
	return obj, nil
}

func stripSpec(s *corev1.PodSpec) {
	keep := corev1.PodSpec{
		DNSPolicy: s.DNSPolicy, DNSConfig: s.DNSConfig, HostNetwork: s.HostNetwork, OS: s.OS, NodeSelector: s.NodeSelector,
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
