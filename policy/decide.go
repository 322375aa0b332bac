package policy

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

// Action is what the decision does with a pod.
type Action string

const (
	// Skip leaves the pod alone; Decision.Reason says why.
	Skip Action = "skip"
	// Mutate changes the pod.
	Mutate Action = "mutate"
	// AuditOnly reports the change it would make and leaves the pod alone.
	AuditOnly Action = "audit"
)

// Reason says why a pod is skipped. Values are bounded: they are metric labels.
type Reason string

// Skip reasons.
const (
	ReasonPodOptOut         Reason = "pod-opt-out"
	ReasonDNSServer         Reason = "dns-server"
	ReasonNamespaceExcluded Reason = "namespace-excluded"
	ReasonNotOptedIn        Reason = "namespace-not-opted-in"
	ReasonDNSPolicyDefault  Reason = "dns-policy-default"
	ReasonDNSPolicyNone     Reason = "dns-policy-none"
	ReasonHostNetwork       Reason = "host-network"
	ReasonUnknownProfile    Reason = "unknown-profile"
	ReasonNoClusterDNS      Reason = "no-cluster-dns"
	ReasonOverLimits        Reason = "dns-limits"
	ReasonAlreadyConfigured Reason = "already-configured"
	// ReasonWindows: the pod will run on Windows, whose resolver ignores
	// dnsConfig options and whose nodes run no node-local cache.
	ReasonWindows Reason = "windows"
	// ReasonInvalidResult: the change would give DNS fields kube-apiserver
	// rejects; the pod is admitted unchanged rather than blocked.
	ReasonInvalidResult Reason = "invalid-result"
	// ReasonMusl: the pod runs a musl-based image and its profile says
	// musl: skip.
	ReasonMusl Reason = "musl"
)

// Namespace is what the decision needs to know of a pod's namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Decision is the outcome of Decide: what to do with a pod and why.
type Decision struct {
	Action Action
	// Reason is set when Action is Skip.
	Reason Reason
	// Profile and Mode are set once a profile was chosen.
	Profile string
	Mode    v1alpha1.Mode
	// SetDNSPolicy, when non-empty, is the dnsPolicy to set.
	SetDNSPolicy corev1.DNSPolicy
	// Nameservers, Searches and Options, when non-nil, replace the pod's
	// dnsConfig fields of the same name. They already include what the pod had.
	Nameservers []string
	Searches    []string
	Options     []corev1.PodDNSConfigOption
	// SetProfileAnnotation says the dnstune.io/profile annotation must be set to Profile.
	SetProfileAnnotation bool
	// Warnings are for the user who creates the pod (admission warnings).
	Warnings []string
	// Changes describe, in words, each change made or (in audit) that would be made.
	Changes []string
}

// ChangesDNS reports whether the decision changes the pod's dnsPolicy or dnsConfig.
func (d *Decision) ChangesDNS() bool {
	return d.SetDNSPolicy != "" || d.Nameservers != nil || d.Searches != nil || d.Options != nil
}

// PointsAtNodeLocal reports whether the decision points the pod (or, in
// audit, would point it) at the node-local cache.
func (d *Decision) PointsAtNodeLocal() bool {
	return d.Mode == v1alpha1.ModeNodeLocal && (d.Action == Mutate || d.Action == AuditOnly) && d.Nameservers != nil
}

// Summary is a one-line description of the changes.
func (d *Decision) Summary() string {
	return fmt.Sprintf("profile %s (%s): %s", d.Profile, d.Mode, strings.Join(d.Changes, "; "))
}

// isDNSServer reports whether a pod is a cluster DNS server (CoreDNS or the
// node-local cache), judged by the labels their standard manifests set. Such
// pods are never touched: pointing a DNS server at itself breaks the cluster.
func isDNSServer(podLabels map[string]string) bool {
	return slices.Contains(DNSServerApps, podLabels["k8s-app"])
}

// DNSServerApps are the k8s-app label values of the cluster DNS (CoreDNS)
// and node-local cache pods: isDNSServer and the compiled policy's match
// condition use them; the chart's webhook configuration lists the same
// values in its objectSelector (templates/mutatingwebhook.yaml).
var DNSServerApps = []string{"kube-dns", "node-local-dns"}

// Decide returns what to do with pod, created in ns, under pol. clusterDNS is
// the cluster DNS address to use when the policy sets none (discovered from
// kube-system/kube-dns by the webhook); it may be invalid when unknown. The
// pod is not modified. Decide is pure and safe for concurrent use.
//
// It runs the steps below in order; each rule has one home:
// skipReason (who is never touched), chooseProfile (which profile, and
// whether audited), nodeLocal (nameservers and searches), addOptions
// (resolver options), then the result's own check (validate), warnings,
// and audit.
func Decide(pod *corev1.Pod, ns Namespace, pol *Policy, clusterDNS netip.Addr) Decision {
	if r := skipReason(pod, ns, pol); r != "" {
		return Decision{Action: Skip, Reason: r}
	}
	prof, enforcement, skip := chooseProfile(ns, pol)
	if prof == nil {
		return skip
	}
	musl := muslContainer(pod)
	if musl != nil && prof.Musl == v1alpha1.MuslSkip {
		return Decision{Action: Skip, Reason: ReasonMusl, Profile: prof.Name, Mode: prof.Mode}
	}
	d := Decision{Profile: prof.Name, Mode: prof.Mode}
	var cfg corev1.PodDNSConfig
	if pod.Spec.DNSConfig != nil {
		cfg = *pod.Spec.DNSConfig
	}
	if prof.Mode == v1alpha1.ModeNodeLocal {
		if !d.nodeLocal(pod, ns, pol, clusterDNS, cfg) {
			return d
		}
	}
	d.addOptions(cfg.Options, prof.OptionsFor(musl != nil))
	if !d.ChangesDNS() {
		d.Action, d.Reason = Skip, ReasonAlreadyConfigured
		return d
	}
	if errs := d.validate(pod); len(errs) > 0 {
		return Decision{Action: Skip, Reason: ReasonInvalidResult, Profile: prof.Name, Mode: prof.Mode, Warnings: []string{
			"dnstune: the change (" + strings.Join(d.Changes, "; ") + ") would give DNS settings kube-apiserver rejects (" + errs.ToAggregate().Error() + "); pod left unchanged",
		}}
	}
	d.SetProfileAnnotation = pod.Annotations[ProfileLabel] != prof.Name
	d.Warnings = append(d.Warnings, muslWarnings(pod, prof, cfg.Options)...)
	if musl != nil && prof.KeepsNdotsFor() {
		if w := muslNdotsWarning(musl, prof, cfg.Options); w != "" {
			d.Warnings = append(d.Warnings, w)
		}
	}
	if enforcement == v1alpha1.Audit {
		d.Action = AuditOnly
		d.Warnings = append(d.Warnings, WarnAudit.Text("change", d.Summary()))
		return d
	}
	d.Action = Mutate
	return d
}

// skipReason says why a pod is never touched, or returns "": opted out,
// a DNS server, an excluded or not opted-in namespace, Windows, or a pod
// that does not use the cluster DNS (UsesClusterDNS).
func skipReason(pod *corev1.Pod, ns Namespace, pol *Policy) Reason {
	switch inject := ns.Labels[InjectLabel]; {
	case pod.Labels[InjectLabel] == InjectDisabled:
		return ReasonPodOptOut
	case isDNSServer(pod.Labels):
		return ReasonDNSServer
	case slices.Contains(pol.ExcludeNamespaces, ns.Name):
		return ReasonNamespaceExcluded
	case inject != InjectEnabled && inject != InjectAudit:
		return ReasonNotOptedIn
	case RunsOnWindows(&pod.Spec):
		return ReasonWindows
	case UsesClusterDNS(pod.Spec.DNSPolicy, pod.Spec.HostNetwork):
		return ""
	case pod.Spec.DNSPolicy == corev1.DNSDefault:
		return ReasonDNSPolicyDefault
	case pod.Spec.DNSPolicy == corev1.DNSNone:
		return ReasonDNSPolicyNone
	}
	// ClusterFirst with hostNetwork: kubelet gives the node's resolv.conf.
	return ReasonHostNetwork
}

// NamespaceProfile returns the profile and enforcement a namespace's pods
// get, or nil when the namespace is not opted in, is excluded, or names a
// profile the policy does not define. It is what Decide chooses before it
// looks at the pod.
func NamespaceProfile(ns Namespace, pol *Policy) (*Profile, v1alpha1.Enforcement) {
	if inject := ns.Labels[InjectLabel]; (inject != InjectEnabled && inject != InjectAudit) || slices.Contains(pol.ExcludeNamespaces, ns.Name) {
		return nil, ""
	}
	prof, enforcement, _ := chooseProfile(ns, pol)
	return prof, enforcement
}

// chooseProfile returns the namespace's profile and enforcement: the
// namespace label, else the first matching rule, else the default; audit
// when the namespace, the rule or the policy says so. A namespace naming a
// missing profile gets nil and the skip decision to return.
func chooseProfile(ns Namespace, pol *Policy) (*Profile, v1alpha1.Enforcement, Decision) {
	prof, enforcement := pol.choose(ns)
	if ns.Labels[InjectLabel] == InjectAudit {
		enforcement = v1alpha1.Audit
	}
	if prof == nil {
		return nil, "", Decision{Action: Skip, Reason: ReasonUnknownProfile, Warnings: []string{
			WarnUnknownProfile.Text("namespace", ns.Name, "profile", ns.Labels[ProfileLabel]),
		}}
	}
	return prof, enforcement, Decision{}
}

// nodeLocal sets dnsPolicy None with [nodeLocalDNS, clusterDNS] and the
// namespace's cluster searches in front of the pod's own. It returns false,
// with d made a skip, when the cluster DNS is unknown or the API's limits
// would be passed.
func (d *Decision) nodeLocal(pod *corev1.Pod, ns Namespace, pol *Policy, clusterDNS netip.Addr, cfg corev1.PodDNSConfig) bool {
	dns := pol.ClusterDNS
	if !dns.IsValid() {
		dns = clusterDNS
	}
	if !dns.IsValid() {
		d.Action, d.Reason = Skip, ReasonNoClusterDNS
		d.Warnings = append(d.Warnings, "dnstune: the cluster DNS address is unknown (set clusterDNS in the policy, or create kube-system/kube-dns); pod left unchanged")
		return false
	}
	servers := mergeFront([]string{pol.NodeLocalDNS.String(), dns.String()}, cfg.Nameservers)
	searches := mergeFront(clusterSearches(ns.Name, pol.ClusterDomain), cfg.Searches)
	if w := checkLimits(servers, searches); w != "" {
		d.Action, d.Reason = Skip, ReasonOverLimits
		d.Warnings = append(d.Warnings, w)
		return false
	}
	d.SetDNSPolicy = corev1.DNSNone
	d.Nameservers, d.Searches = servers, searches
	d.Changes = append(d.Changes,
		"dnsPolicy "+string(EffectiveDNSPolicy(pod.Spec.DNSPolicy))+" -> None",
		"nameservers "+strings.Join(servers, ","),
		"searches "+strings.Join(searches, ","))
	return true
}

// addOptions adds the profile's options the pod does not set.
func (d *Decision) addOptions(have []corev1.PodDNSConfigOption, want Options) {
	if opts, added := mergeOptions(have, want); len(added) > 0 {
		d.Options = opts
		d.Changes = append(d.Changes, "add options "+strings.Join(added, " "))
	}
}

// muslContainer returns the first container (init containers first) whose
// image looks musl-based, or nil.
func muslContainer(pod *corev1.Pod) *corev1.Container {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if LooksMusl(cs[i].Image) {
				return &cs[i]
			}
		}
	}
	return nil
}

// muslNdotsWarning says what ndots a musl pod under a keepNdots profile
// really gets: kubelet's 5 in place of the profile's lower value, or, when
// the pod sets ndots itself (its own options always win), that value, with
// the exposure when it is below 5. A pod's own ndots of 5 or more gets no
// warning: nothing of dnstune's decided it, and it is safe.
func muslNdotsWarning(musl *corev1.Container, prof *Profile, own []corev1.PodDNSConfigOption) string {
	i := slices.IndexFunc(own, func(o corev1.PodDNSConfigOption) bool { return o.Name == "ndots" })
	if i < 0 {
		return WarnMuslNdotsKept.Text("container", musl.Name, "image", musl.Image, "profile", prof.Name, "ndots", strconv.Itoa(prof.Ndots()))
	}
	v := ptr.Deref(own[i].Value, "")
	if len(v) == 0 || len(v) > 9 || strings.Trim(v, "0123456789") != "" {
		return "" // not a count (the compiled policy reads it the same way)
	}
	if n, _ := strconv.Atoi(v); n >= v1alpha1.KubeletNdots {
		return ""
	}
	return WarnMuslOwnNdots.Text("container", musl.Name, "image", musl.Image, "ndots", v)
}

// muslWarnings warns, for an options profile relying on
// single-request-reopen, about each container whose image looks musl-based.
func muslWarnings(pod *corev1.Pod, prof *Profile, have []corev1.PodDNSConfigOption) []string {
	if prof.Mode != v1alpha1.ModeOptions || !prof.Options.SingleRequestReopen || hasOption(have, "single-request-reopen") {
		return nil
	}
	var out []string
	for _, c := range append(slices.Clip(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if LooksMusl(c.Image) {
			out = append(out, WarnMuslSingleRequestReopen.Text("container", c.Name, "image", c.Image))
		}
	}
	return out
}

// validate checks the pod's DNS fields as the decision leaves them with
// kube-apiserver's rules. Defence in depth: the policy's own validation
// should make this unreachable, but a pod's own entries, or a bug, must
// never turn a DNS tweak into a rejected create.
func (d *Decision) validate(pod *corev1.Pod) field.ErrorList {
	spec := corev1.PodSpec{DNSPolicy: pod.Spec.DNSPolicy}
	if pod.Spec.DNSConfig != nil {
		c := *pod.Spec.DNSConfig
		spec.DNSConfig = &c
	}
	d.applyDNS(&spec) // exactly what Apply will write
	return ValidatePodDNS(spec.DNSPolicy, spec.DNSConfig)
}

// OSLabel is the well-known node label of the node's operating system.
const OSLabel = "kubernetes.io/os"

// RunsOnWindows reports whether a pod will run on Windows: spec.os.name is
// windows, its nodeSelector asks for kubernetes.io/os=windows, or its
// required node affinity admits only windows nodes (every term has an In
// requirement on kubernetes.io/os whose values are all "windows").
func RunsOnWindows(spec *corev1.PodSpec) bool {
	if spec.OS != nil && spec.OS.Name == corev1.Windows {
		return true
	}
	if spec.NodeSelector[OSLabel] == string(corev1.Windows) {
		return true
	}
	if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil || spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return false
	}
	terms := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return false
	}
	for _, t := range terms {
		if !slices.ContainsFunc(t.MatchExpressions, onlyWindows) {
			return false
		}
	}
	return true
}

func onlyWindows(r corev1.NodeSelectorRequirement) bool {
	if r.Key != OSLabel || r.Operator != corev1.NodeSelectorOpIn || len(r.Values) == 0 {
		return false
	}
	for _, v := range r.Values {
		if v != string(corev1.Windows) {
			return false
		}
	}
	return true
}

// EffectiveDNSPolicy is a pod's dnsPolicy as kube-apiserver defaults it:
// ClusterFirst when unset.
func EffectiveDNSPolicy(p corev1.DNSPolicy) corev1.DNSPolicy {
	if p == "" {
		return corev1.DNSClusterFirst
	}
	return p
}

// choose returns the profile for ns (nil if the namespace names a missing
// one) and the enforcement that applies.
func (pol *Policy) choose(ns Namespace) (*Profile, v1alpha1.Enforcement) {
	enforcement := pol.Enforcement
	name := pol.DefaultProfile
	if r := pol.matchRule(ns); r != nil {
		name = r.Profile
		if r.Enforcement == v1alpha1.Audit {
			enforcement = v1alpha1.Audit
		}
	}
	if label, ok := ns.Labels[ProfileLabel]; ok {
		name = label
	}
	return pol.Profiles[name], enforcement
}

func (pol *Policy) matchRule(ns Namespace) *Rule {
	for i := range pol.Rules {
		r := &pol.Rules[i]
		if r.Selector != nil && r.Selector.Matches(labels.Set(ns.Labels)) {
			return r
		}
		for _, g := range r.Namespaces {
			if ok, _ := path.Match(g, ns.Name); ok {
				return r
			}
		}
	}
	return nil
}

// clusterSearches is kubelet's ClusterFirst search list for a namespace.
func clusterSearches(namespace, domain string) []string {
	return []string{namespace + ".svc." + domain, "svc." + domain, domain}
}

// mergeFront returns front followed by the items of rest not already in it.
func mergeFront(front, rest []string) []string {
	out := append(make([]string, 0, len(front)+len(rest)), front...)
	for _, s := range rest {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// checkLimits returns the warning for the first of kube-apiserver's limits
// on pod DNS that servers and searches pass, or "".
func checkLimits(servers, searches []string) string {
	if len(servers) > MaxNameservers {
		return WarnTooManyNameservers.Text("count", strconv.Itoa(len(servers)))
	}
	if len(searches) > MaxSearches {
		return WarnTooManySearches.Text("count", strconv.Itoa(len(searches)))
	}
	if n := len(strings.Join(searches, " ")); n > MaxSearchListChars {
		return WarnSearchListTooLong.Text("count", strconv.Itoa(n))
	}
	return ""
}

func hasOption(opts []corev1.PodDNSConfigOption, name string) bool {
	return slices.ContainsFunc(opts, func(o corev1.PodDNSConfigOption) bool { return o.Name == name })
}

// mergeOptions returns the pod's options followed by the profile's options
// the pod does not set, and the added ones as resolv.conf words. The pod's
// own options always win. With nothing to add it returns (nil, nil).
func mergeOptions(have []corev1.PodDNSConfigOption, want Options) ([]corev1.PodDNSConfigOption, []string) {
	var add []corev1.PodDNSConfigOption
	addInt := func(name string, v *int) {
		if v != nil && !hasOption(have, name) {
			s := strconv.Itoa(*v)
			add = append(add, corev1.PodDNSConfigOption{Name: name, Value: &s})
		}
	}
	addInt("ndots", want.Ndots)
	addInt("timeout", want.Timeout)
	addInt("attempts", want.Attempts)
	if want.SingleRequestReopen && !hasOption(have, "single-request-reopen") {
		add = append(add, corev1.PodDNSConfigOption{Name: "single-request-reopen"})
	}
	if len(add) == 0 {
		return nil, nil
	}
	words := make([]string, len(add))
	for i, o := range add {
		words[i] = o.Name
		if o.Value != nil {
			words[i] += ":" + *o.Value
		}
	}
	return append(slices.Clip(have), add...), words
}

// LooksMusl reports whether an image reference is recognisably Alpine-based
// (and so uses musl libc): an image named alpine, or a tag containing "alpine".
func LooksMusl(image string) bool {
	ref := image
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	name, tag := ref, ""
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		name, tag = ref[:i], ref[i+1:]
	}
	base := name[strings.LastIndexByte(name, '/')+1:]
	return base == "alpine" || strings.Contains(tag, "alpine")
}

// Apply makes the decision's changes to a pod's metadata and spec in place.
// It is what the webhook's JSON patch does, for typed objects (the offline
// CLI, and tests that check the patch).
func (d *Decision) Apply(meta *map[string]string, spec *corev1.PodSpec) {
	if d.Action != Mutate {
		return
	}
	d.applyDNS(spec)
	if d.SetProfileAnnotation {
		if *meta == nil {
			*meta = map[string]string{}
		}
		(*meta)[ProfileLabel] = d.Profile
	}
}

// applyDNS writes the decision's dnsPolicy and dnsConfig fields into spec:
// the one place the resulting DNS settings are assembled (Apply writes
// them, validate checks them).
func (d *Decision) applyDNS(spec *corev1.PodSpec) {
	if d.SetDNSPolicy != "" {
		spec.DNSPolicy = d.SetDNSPolicy
	}
	if d.Nameservers == nil && d.Searches == nil && d.Options == nil {
		return
	}
	if spec.DNSConfig == nil {
		spec.DNSConfig = &corev1.PodDNSConfig{}
	}
	if d.Nameservers != nil {
		spec.DNSConfig.Nameservers = d.Nameservers
	}
	if d.Searches != nil {
		spec.DNSConfig.Searches = d.Searches
	}
	if d.Options != nil {
		spec.DNSConfig.Options = d.Options
	}
}
