package report

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/policy"
)

// Workload is one owner of pods (Deployment, StatefulSet, DaemonSet,
// CronJob, Job, ReplicaSet or ReplicationController without an owner, or a
// bare Pod) and how its pods stand.
type Workload struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Audit is true in an audit namespace: the webhook would not change
	// new pods, but would if enforced.
	Audit     bool `json:"audit,omitempty"`
	UpToDate  int  `json:"upToDate"`
	OutOfDate int  `json:"outOfDate"`
	Skipped   int  `json:"skipped"`
	// Profile and Change: what a restart gives, for out-of-date pods.
	Profile string `json:"profile,omitempty"`
	Change  string `json:"change,omitempty"`
	// SkipReasons of the skipped pods.
	SkipReasons []policy.Reason `json:"skipReasons,omitempty"`
	// PinsDNSPolicyNone: the workload's own template sets dnsPolicy None;
	// rollout leaves it alone.
	PinsDNSPolicyNone bool `json:"pinsDNSPolicyNone,omitempty"`
	// NodeLocalEgress, when set, says that the workload's pods are (or, in
	// audit, would be) pointed at the node-local cache while their
	// namespace's NetworkPolicies block DNS to it (policy.EgressWarning).
	NodeLocalEgress string      `json:"nodeLocalEgress,omitempty"`
	Pods            []PodResult `json:"pods"`
}

// Options for Scan.
type Options struct {
	Client client.Reader
	Policy *policy.Policy
	// ClusterDNS for nodelocal when the policy sets none (the kube-dns IP).
	ClusterDNS netip.Addr
	// Namespace limits the scan to one namespace; "" scans every opted-in
	// and audit namespace.
	Namespace string
}

// Scan reads opted-in (and audit) namespaces and returns one Workload per
// owner of pods, sorted by namespace, kind and name.
func Scan(ctx context.Context, o Options) ([]Workload, error) {
	nsList := &metav1.PartialObjectMetadataList{}
	nsList.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := o.Client.List(ctx, nsList); err != nil {
		return nil, fmt.Errorf("failed to list namespaces: %w", err)
	}
	var out []Workload
	for _, ns := range nsList.Items {
		inject := ns.Labels[policy.InjectLabel]
		if (o.Namespace != "" && ns.Name != o.Namespace) || (inject != policy.InjectEnabled && inject != policy.InjectAudit) {
			continue
		}
		w, err := scanNamespace(ctx, o, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		if err != nil {
			return nil, err
		}
		out = append(out, w...)
	}
	return out, nil
}

// owners indexes one namespace's pod owners by UID.
type owners struct {
	templates map[types.UID]*corev1.PodTemplateSpec
	parents   map[types.UID]metav1.OwnerReference // controller of an owner
	objects   map[types.UID]metav1.OwnerReference // the owner itself, as a reference
}

func (w *owners) add(obj metav1.Object, kind string, tmpl *corev1.PodTemplateSpec) {
	w.templates[obj.GetUID()] = tmpl
	w.objects[obj.GetUID()] = metav1.OwnerReference{Kind: kind, Name: obj.GetName(), UID: obj.GetUID()}
	if c := metav1.GetControllerOf(obj); c != nil {
		w.parents[obj.GetUID()] = *c
	}
}

func listOwners(ctx context.Context, c client.Reader, ns string) (*owners, error) {
	w := &owners{templates: map[types.UID]*corev1.PodTemplateSpec{}, parents: map[types.UID]metav1.OwnerReference{}, objects: map[types.UID]metav1.OwnerReference{}}
	in := client.InNamespace(ns)
	var (
		rs  appsv1.ReplicaSetList
		dep appsv1.DeploymentList
		sts appsv1.StatefulSetList
		ds  appsv1.DaemonSetList
		job batchv1.JobList
		cj  batchv1.CronJobList
		rc  corev1.ReplicationControllerList
	)
	for _, l := range []client.ObjectList{&rs, &dep, &sts, &ds, &job, &cj, &rc} {
		if err := c.List(ctx, l, in); err != nil {
			return nil, fmt.Errorf("failed to list %T in %s: %w", l, ns, err)
		}
	}
	for i := range rs.Items {
		w.add(&rs.Items[i], "ReplicaSet", &rs.Items[i].Spec.Template)
	}
	for i := range dep.Items {
		w.add(&dep.Items[i], "Deployment", &dep.Items[i].Spec.Template)
	}
	for i := range sts.Items {
		w.add(&sts.Items[i], "StatefulSet", &sts.Items[i].Spec.Template)
	}
	for i := range ds.Items {
		w.add(&ds.Items[i], "DaemonSet", &ds.Items[i].Spec.Template)
	}
	for i := range job.Items {
		w.add(&job.Items[i], "Job", &job.Items[i].Spec.Template)
	}
	for i := range cj.Items {
		w.add(&cj.Items[i], "CronJob", &cj.Items[i].Spec.JobTemplate.Spec.Template)
	}
	for i := range rc.Items {
		w.add(&rc.Items[i], "ReplicationController", rc.Items[i].Spec.Template)
	}
	return w, nil
}

// top follows controller references up to the workload a user manages.
func (w *owners) top(ref metav1.OwnerReference) metav1.OwnerReference {
	for range 4 {
		p, ok := w.parents[ref.UID]
		if !ok {
			return ref
		}
		if _, known := w.objects[p.UID]; !known {
			return p
		}
		ref = w.objects[p.UID]
	}
	return ref
}

func scanNamespace(ctx context.Context, o Options, ns policy.Namespace) ([]Workload, error) {
	var pods corev1.PodList
	if err := o.Client.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
		return nil, fmt.Errorf("failed to list pods in %s: %w", ns.Name, err)
	}
	w, err := listOwners(ctx, o.Client, ns.Name)
	if err != nil {
		return nil, err
	}
	var nps networkingv1.NetworkPolicyList
	if err := o.Client.List(ctx, &nps, client.InNamespace(ns.Name)); err != nil {
		return nil, fmt.Errorf("failed to list NetworkPolicies in %s: %w", ns.Name, err)
	}
	byOwner := map[string]*Workload{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		key := metav1.OwnerReference{Kind: "Pod", Name: p.Name}
		var tmpl *corev1.PodTemplateSpec
		if c := metav1.GetControllerOf(p); c != nil {
			tmpl = w.templates[c.UID]
			key = w.top(*c)
		}
		id := key.Kind + "/" + key.Name
		wl := byOwner[id]
		if wl == nil {
			wl = &Workload{Kind: key.Kind, Namespace: ns.Name, Name: key.Name, Audit: ns.Labels[policy.InjectLabel] == policy.InjectAudit}
			if tmpl != nil && tmpl.Spec.DNSPolicy == corev1.DNSNone {
				wl.PinsDNSPolicyNone = true
			}
			byOwner[id] = wl
		}
		r := Evaluate(p, tmpl, ns, o.Policy, o.ClusterDNS)
		wl.Pods = append(wl.Pods, r)
		if prof := o.Policy.Profiles[r.Profile]; wl.NodeLocalEgress == "" && r.Status != Skipped && prof != nil && prof.Mode == policy.ModeNodeLocal {
			wl.NodeLocalEgress = policy.EgressWarning(policy.CacheEgress(p, nps.Items, o.Policy.NodeLocalDNS), ns.Name, o.Policy.NodeLocalDNS)
		}
		switch r.Status {
		case UpToDate:
			wl.UpToDate++
		case OutOfDate:
			wl.OutOfDate++
			wl.Profile, wl.Change = r.Profile, r.Change
		case Skipped:
			wl.Skipped++
			if !slices.Contains(wl.SkipReasons, r.Reason) {
				wl.SkipReasons = append(wl.SkipReasons, r.Reason)
			}
		}
	}
	out := make([]Workload, 0, len(byOwner))
	for _, wl := range byOwner {
		sort.Slice(wl.Pods, func(i, j int) bool { return wl.Pods[i].Name < wl.Pods[j].Name })
		slices.Sort(wl.SkipReasons)
		out = append(out, *wl)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// OutOfDateAny reports whether any workload has an out-of-date pod.
func OutOfDateAny(ws []Workload) bool {
	return slices.ContainsFunc(ws, func(w Workload) bool { return w.OutOfDate > 0 })
}
