// Package report finds the running pods whose DNS settings are not what the
// policy gives now: created before their namespace was opted in, before a
// policy change, or while the webhook was unreachable (failurePolicy:
// Ignore admits them unchanged). dnsConfig can't change on a running pod,
// so each out-of-date pod is reported by the workload that owns it, which
// a restart brings up to date.
//
// evaluate is pure: it judges one pod against the same policy.Decide the
// webhook runs. Scan (scan.go) reads the cluster and groups by workload.
package report

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/dnstune/dnstune/policy"
)

// Status of a pod against the policy.
type Status string

// Statuses.
const (
	// UpToDate: the pod has what the policy gives a pod created now.
	UpToDate Status = "up-to-date"
	// OutOfDate: a pod created now would get other DNS settings.
	OutOfDate Status = "out-of-date"
	// Skipped: the policy leaves such pods alone (Reason says why).
	Skipped Status = "skipped"
)

// PodResult is one pod's status.
type PodResult struct {
	Name   string        `json:"name"`
	Status Status        `json:"status"`
	Reason policy.Reason `json:"reason,omitempty"`
	// Profile is the profile a pod created now gets.
	Profile string `json:"profile,omitempty"`
	// Change says what a restart would change, for out-of-date pods.
	Change string `json:"change,omitempty"`
}

// evaluate judges a running pod. template is the pod template its workload
// creates pods from (nil for a bare pod): the webhook saw the template, not
// the running pod, so the decision is made on it. The pod is up to date
// when its dnsPolicy, dnsConfig (options compared as a set: kubelet and
// merges may reorder them) and profile annotation are those the decision
// gives the template.
func evaluate(pod *corev1.Pod, template *corev1.PodTemplateSpec, ns policy.Namespace, pol *policy.Policy, clusterDNS netip.Addr) PodResult {
	res := PodResult{Name: pod.Name}
	base := &corev1.Pod{}
	if template != nil {
		base.ObjectMeta = *template.ObjectMeta.DeepCopy()
		base.Spec = *template.Spec.DeepCopy()
	} else {
		base = pod.DeepCopy()
	}
	base.Namespace = pod.Namespace
	d := policy.Decide(base, ns, pol, clusterDNS)
	res.Profile = d.Profile
	switch {
	case d.Action == policy.Skip && d.Reason == policy.ReasonAlreadyConfigured:
		// The template already has what the profile adds.
	case d.Action == policy.Skip && template == nil && d.Reason == policy.ReasonDNSPolicyNone && pod.Annotations[policy.ProfileLabel] != "":
		// A bare pod dnstune set to dnsPolicy None (nodelocal): judge it by
		// the profile it got, as its original spec is gone.
		if prof := chosenProfile(ns, pol); prof != "" && prof != pod.Annotations[policy.ProfileLabel] {
			res.Status, res.Profile = OutOfDate, prof
			res.Change = "profile " + pod.Annotations[policy.ProfileLabel] + " -> " + prof
			return res
		}
		res.Status, res.Profile = UpToDate, pod.Annotations[policy.ProfileLabel]
		return res
	case d.Action == policy.Skip:
		res.Status, res.Reason = Skipped, d.Reason
		return res
	}
	want := base.DeepCopy()
	applied := d
	applied.Action = policy.Mutate // audit namespaces: what enforcing would give
	applied.Apply(&want.Annotations, &want.Spec)
	if d.Action == policy.Skip { // already configured: the template is the target
		want.Annotations = pod.Annotations
	}
	if sameDNS(pod, want) {
		res.Status = UpToDate
		return res
	}
	res.Status = OutOfDate
	res.Change = d.Summary()
	if d.Action == policy.Skip {
		res.Change = "recreate from the current template"
	}
	return res
}

// sameDNS compares what the webhook sets: dnsPolicy, dnsConfig (options as
// a set) and the profile annotation.
func sameDNS(got, want *corev1.Pod) bool {
	if policy.EffectiveDNSPolicy(got.Spec.DNSPolicy) != policy.EffectiveDNSPolicy(want.Spec.DNSPolicy) {
		return false
	}
	if got.Annotations[policy.ProfileLabel] != want.Annotations[policy.ProfileLabel] {
		return false
	}
	g, w := got.Spec.DNSConfig, want.Spec.DNSConfig
	if g == nil || w == nil {
		return (g == nil || isEmpty(g)) && (w == nil || isEmpty(w))
	}
	return slices.Equal(g.Nameservers, w.Nameservers) && slices.Equal(g.Searches, w.Searches) &&
		equality.Semantic.DeepEqual(sortedOptions(g.Options), sortedOptions(w.Options))
}

func isEmpty(c *corev1.PodDNSConfig) bool {
	return len(c.Nameservers) == 0 && len(c.Searches) == 0 && len(c.Options) == 0
}

func sortedOptions(o []corev1.PodDNSConfigOption) []string {
	out := make([]string, len(o))
	for i, x := range o {
		out[i] = x.Name
		if x.Value != nil {
			out[i] += ":" + *x.Value
		}
	}
	slices.Sort(out)
	return out
}

// chosenProfile is the profile a plain pod created in ns gets now ("" if
// none). The probe's cluster DNS only lets nodelocal decide.
func chosenProfile(ns policy.Namespace, pol *policy.Policy) string {
	probe := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe"}}}}
	return policy.Decide(probe, ns, pol, netip.MustParseAddr("192.0.2.53")).Profile
}
