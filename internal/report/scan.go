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

	"github.com/dnstune/dnstune/api/v1alpha1"
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
	// OnDelete: a StatefulSet with updateStrategy OnDelete, whose pods a
	// template change does not replace; rollout lists it as a manual step.
	OnDelete bool `json:"onDelete,omitempty"`
	// NodeLocalEgress, when set, says that the workload's pods are (or, in
	// audit, would be) pointed at the node-local cache while their
	// namespace's NetworkPolicies block DNS to it (policy.EgressWarning).
	NodeLocalEgress string `json:"nodeLocalEgress,omitempty"`
	// OnNodesWithoutCache are the workload's running pods that use the
	// node-local cache on a node where it does not answer, as
	// "pod on node (reason)" (Options.CacheMissing).
	OnNodesWithoutCache []string    `json:"onNodesWithoutCache,omitempty"`
	Pods                []PodResult `json:"pods"`
}

// Options for Scan.
type Options struct {
	Client client.Reader
	Policy *policy.Policy
	// ClusterDNS for nodelocal when the policy sets none (the kube-dns IP).
	ClusterDNS netip.Addr
	// Namespace limits the scan to one namespace, which must exist and be
	// opted in (or audit); "" scans every opted-in and audit namespace.
	Namespace string
	// PageSize is how many objects one LIST returns, default 500.
	PageSize int64
	// CacheMissing maps the nodes where the node-local cache does not
	// answer to why (Coverage.MissingNodes); nil: not checked.
	CacheMissing map[string]string
}

// DefaultPageSize is Options.PageSize's default.
const DefaultPageSize = 500

// Scan reads opted-in (and audit) namespaces and returns one Workload per
// owner of pods, sorted by namespace, kind and name. It lists each kind
// once for the whole cluster (or the one namespace), page by page, and
// keeps of each object only what the decision reads (strip), so its cost
// grows with the pods and workloads, not with the number of namespaces,
// and it opens no watch.
func Scan(ctx context.Context, o Options) ([]Workload, error) {
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	nsList := &metav1.PartialObjectMetadataList{}
	nsList.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := o.Client.List(ctx, nsList); err != nil {
		return nil, fmt.Errorf("failed to list namespaces: %w", err)
	}
	opted := map[string]policy.Namespace{}
	found := false
	for _, ns := range nsList.Items {
		if o.Namespace != "" && ns.Name != o.Namespace {
			continue
		}
		found = true
		if inject := ns.Labels[policy.InjectLabel]; inject == policy.InjectEnabled || inject == policy.InjectAudit {
			opted[ns.Name] = policy.Namespace{Name: ns.Name, Labels: ns.Labels}
		}
	}
	if o.Namespace != "" && !found {
		return nil, fmt.Errorf("namespace %q not found", o.Namespace)
	}
	if o.Namespace != "" && len(opted) == 0 {
		return nil, fmt.Errorf("namespace %q is not opted in (label it %s=%s, or %s for audit)", o.Namespace, policy.InjectLabel, policy.InjectEnabled, policy.InjectAudit)
	}
	if len(opted) == 0 {
		return nil, nil
	}
	var in []client.ListOption
	if o.Namespace != "" {
		in = append(in, client.InNamespace(o.Namespace))
	}
	w, err := listOwners(ctx, o, opted, in)
	if err != nil {
		return nil, err
	}
	netpols := map[string][]networkingv1.NetworkPolicy{}
	if err := eachPage(ctx, o, &networkingv1.NetworkPolicyList{}, in, func(l client.ObjectList) {
		for _, np := range l.(*networkingv1.NetworkPolicyList).Items {
			if _, ok := opted[np.Namespace]; ok {
				netpols[np.Namespace] = append(netpols[np.Namespace], np)
			}
		}
	}); err != nil {
		return nil, err
	}
	byOwner := map[string]*Workload{}
	err = eachPage(ctx, o, &corev1.PodList{}, in, func(l client.ObjectList) {
		for i := range l.(*corev1.PodList).Items {
			p := &l.(*corev1.PodList).Items[i]
			ns, ok := opted[p.Namespace]
			if !ok || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			stripPod(p)
			addPod(byOwner, w, p, ns, o, netpols[p.Namespace])
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]Workload, 0, len(byOwner))
	for _, wl := range byOwner {
		sort.Slice(wl.Pods, func(i, j int) bool { return wl.Pods[i].Name < wl.Pods[j].Name })
		slices.Sort(wl.SkipReasons)
		out = append(out, *wl)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// eachPage lists list's kind page by page (o.PageSize each), calling page
// on every page; the page's items are not kept by eachPage.
func eachPage(ctx context.Context, o Options, list client.ObjectList, in []client.ListOption, page func(client.ObjectList)) error {
	cont := ""
	for {
		opts := append([]client.ListOption{client.Limit(o.PageSize), client.Continue(cont)}, in...)
		if err := o.Client.List(ctx, list, opts...); err != nil {
			return fmt.Errorf("failed to list %T: %w", list, err)
		}
		page(list)
		if cont = list.(metav1.ListInterface).GetContinue(); cont == "" {
			return nil
		}
	}
}

// addPod judges one pod and counts it in its workload.
func addPod(byOwner map[string]*Workload, w *owners, p *corev1.Pod, ns policy.Namespace, o Options, nps []networkingv1.NetworkPolicy) {
	key := metav1.OwnerReference{Kind: "Pod", Name: p.Name}
	var tmpl *corev1.PodTemplateSpec
	if c := metav1.GetControllerOf(p); c != nil {
		tmpl = w.templates[c.UID]
		key = w.top(*c)
	}
	id := ns.Name + "/" + key.Kind + "/" + key.Name
	wl := byOwner[id]
	if wl == nil {
		wl = &Workload{Kind: key.Kind, Namespace: ns.Name, Name: key.Name, Audit: ns.Labels[policy.InjectLabel] == policy.InjectAudit}
		if tmpl != nil && tmpl.Spec.DNSPolicy == corev1.DNSNone {
			wl.PinsDNSPolicyNone = true
		}
		wl.OnDelete = w.onDelete[key.UID]
		byOwner[id] = wl
	}
	r := evaluate(p, tmpl, ns, o.Policy, o.ClusterDNS)
	wl.Pods = append(wl.Pods, r)
	if prof := o.Policy.Profiles[r.Profile]; wl.NodeLocalEgress == "" && r.Status != Skipped && prof != nil && prof.Mode == v1alpha1.ModeNodeLocal {
		wl.NodeLocalEgress = policy.EgressWarning(policy.CacheEgress(p, nps, o.Policy.NodeLocalDNS), ns.Name, o.Policy.NodeLocalDNS)
	}
	if why, ok := o.CacheMissing[p.Spec.NodeName]; ok && p.Spec.DNSConfig != nil && slices.Contains(p.Spec.DNSConfig.Nameservers, o.Policy.NodeLocalDNS.String()) {
		wl.OnNodesWithoutCache = append(wl.OnNodesWithoutCache, p.Name+" on "+p.Spec.NodeName+" ("+why+")")
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

// owners indexes the pod owners of opted-in namespaces by UID (unique
// cluster-wide).
type owners struct {
	templates map[types.UID]*corev1.PodTemplateSpec
	parents   map[types.UID]metav1.OwnerReference // controller of an owner
	objects   map[types.UID]metav1.OwnerReference // the owner itself, as a reference
	onDelete  map[types.UID]bool                  // StatefulSets with updateStrategy OnDelete
}

func (w *owners) add(obj metav1.Object, kind string, tmpl *corev1.PodTemplateSpec) {
	w.templates[obj.GetUID()] = tmpl
	w.objects[obj.GetUID()] = metav1.OwnerReference{Kind: kind, Name: obj.GetName(), UID: obj.GetUID()}
	if c := metav1.GetControllerOf(obj); c != nil {
		w.parents[obj.GetUID()] = *c
	}
}

func listOwners(ctx context.Context, o Options, opted map[string]policy.Namespace, in []client.ListOption) (*owners, error) {
	w := &owners{templates: map[types.UID]*corev1.PodTemplateSpec{}, parents: map[types.UID]metav1.OwnerReference{},
		objects: map[types.UID]metav1.OwnerReference{}, onDelete: map[types.UID]bool{}}
	kinds := []struct {
		list client.ObjectList
		add  func(client.ObjectList)
	}{
		{&appsv1.ReplicaSetList{}, func(l client.ObjectList) {
			for i := range l.(*appsv1.ReplicaSetList).Items {
				x := l.(*appsv1.ReplicaSetList).Items[i]
				w.keep(opted, &x, "ReplicaSet", &x.Spec.Template)
			}
		}},
		{&appsv1.DeploymentList{}, func(l client.ObjectList) {
			for i := range l.(*appsv1.DeploymentList).Items {
				x := l.(*appsv1.DeploymentList).Items[i]
				w.keep(opted, &x, "Deployment", &x.Spec.Template)
			}
		}},
		{&appsv1.StatefulSetList{}, func(l client.ObjectList) {
			for i := range l.(*appsv1.StatefulSetList).Items {
				x := l.(*appsv1.StatefulSetList).Items[i]
				if w.keep(opted, &x, "StatefulSet", &x.Spec.Template) && x.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
					w.onDelete[x.UID] = true
				}
			}
		}},
		{&appsv1.DaemonSetList{}, func(l client.ObjectList) {
			for i := range l.(*appsv1.DaemonSetList).Items {
				x := l.(*appsv1.DaemonSetList).Items[i]
				w.keep(opted, &x, "DaemonSet", &x.Spec.Template)
			}
		}},
		{&batchv1.JobList{}, func(l client.ObjectList) {
			for i := range l.(*batchv1.JobList).Items {
				x := l.(*batchv1.JobList).Items[i]
				w.keep(opted, &x, "Job", &x.Spec.Template)
			}
		}},
		{&batchv1.CronJobList{}, func(l client.ObjectList) {
			for i := range l.(*batchv1.CronJobList).Items {
				x := l.(*batchv1.CronJobList).Items[i]
				w.keep(opted, &x, "CronJob", &x.Spec.JobTemplate.Spec.Template)
			}
		}},
		{&corev1.ReplicationControllerList{}, func(l client.ObjectList) {
			for i := range l.(*corev1.ReplicationControllerList).Items {
				x := l.(*corev1.ReplicationControllerList).Items[i]
				w.keep(opted, &x, "ReplicationController", x.Spec.Template)
			}
		}},
	}
	for _, k := range kinds {
		if err := eachPage(ctx, o, k.list, in, k.add); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// keep indexes an owner of an opted-in namespace, stripped to what the
// decision reads, and reports whether it did.
func (w *owners) keep(opted map[string]policy.Namespace, obj client.Object, kind string, tmpl *corev1.PodTemplateSpec) bool {
	if _, ok := opted[obj.GetNamespace()]; !ok {
		return false
	}
	if tmpl != nil {
		stripSpec(&tmpl.Spec)
		tmpl = &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec}
	}
	w.add(obj, kind, tmpl)
	return true
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

// OutOfDateAny reports whether any workload has an out-of-date pod.
func OutOfDateAny(ws []Workload) bool {
	return slices.ContainsFunc(ws, func(w Workload) bool { return w.OutOfDate > 0 })
}
