package report

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/policy"
)

var (
	enabled   = policy.Namespace{Name: "shop", Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled}}
	nodelocal = policy.Namespace{Name: "shop", Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled, policy.ProfileLabel: "nodelocal"}}
	kubeDNS   = netip.MustParseAddr("10.96.0.10")
)

func template(mods ...func(*corev1.PodTemplateSpec)) *corev1.PodTemplateSpec {
	t := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
	for _, m := range mods {
		m(t)
	}
	return t
}

// podFrom is the pod the API stores for a template: as is (webhook down,
// or not opted in yet), or as the webhook mutates it under pol.
func podFrom(t *corev1.PodTemplateSpec, ns policy.Namespace, pol *policy.Policy, mutated bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: *t.ObjectMeta.DeepCopy(), Spec: *t.Spec.DeepCopy()}
	p.Name, p.Namespace = "web-1", ns.Name
	if mutated {
		d := policy.Decide(p, ns, pol, kubeDNS)
		d.Apply(&p.Annotations, &p.Spec)
	}
	return p
}

func TestEvaluate(t *testing.T) {
	pol := policy.Default()
	ndots3 := policy.Default()
	three := 3
	ndots3.Profiles["resilient"].Options.Ndots = &three
	reordered := podFrom(template(), enabled, pol, true)
	o := reordered.Spec.DNSConfig.Options
	o[0], o[3] = o[3], o[0]
	tests := []struct {
		name   string
		pod    *corev1.Pod
		tmpl   *corev1.PodTemplateSpec
		ns     policy.Namespace
		pol    *policy.Policy
		want   Status
		reason policy.Reason
	}{
		{"created before opt-in", podFrom(template(), enabled, pol, false), template(), enabled, pol, OutOfDate, ""},
		{"mutated", podFrom(template(), enabled, pol, true), template(), enabled, pol, UpToDate, ""},
		{"mutated, options reordered by kubelet", reordered, template(), enabled, pol, UpToDate, ""},
		{"mutated under an older policy", podFrom(template(), enabled, pol, true), template(), enabled, ndots3, OutOfDate, ""},
		{"nodelocal, mutated", podFrom(template(), nodelocal, pol, true), template(), nodelocal, pol, UpToDate, ""},
		{"nodelocal, created while the webhook was down", podFrom(template(), nodelocal, pol, false), template(), nodelocal, pol, OutOfDate, ""},
		{"bare pod, nodelocal, mutated", podFrom(template(), nodelocal, pol, true), nil, nodelocal, pol, UpToDate, ""},
		{"bare pod, not mutated", podFrom(template(), enabled, pol, false), nil, enabled, pol, OutOfDate, ""},
		{"bare pod, mutated", podFrom(template(), enabled, pol, true), nil, enabled, pol, UpToDate, ""},
		{"hostNetwork", podFrom(template(func(t *corev1.PodTemplateSpec) { t.Spec.HostNetwork = true }), enabled, pol, false),
			template(func(t *corev1.PodTemplateSpec) { t.Spec.HostNetwork = true }), enabled, pol, Skipped, policy.ReasonHostNetwork},
		{"windows", podFrom(template(func(t *corev1.PodTemplateSpec) { t.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }), enabled, pol, false),
			template(func(t *corev1.PodTemplateSpec) { t.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }), enabled, pol, Skipped, policy.ReasonWindows},
		{"template pins dnsPolicy None", podFrom(template(func(t *corev1.PodTemplateSpec) {
			t.Spec.DNSPolicy, t.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
		}), enabled, pol, false), template(func(t *corev1.PodTemplateSpec) {
			t.Spec.DNSPolicy, t.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
		}), enabled, pol, Skipped, policy.ReasonDNSPolicyNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := evaluate(tt.pod, tt.tmpl, tt.ns, tt.pol, kubeDNS)
			if r.Status != tt.want || r.Reason != tt.reason {
				t.Fatalf("got %s/%s (%s), want %s/%s", r.Status, r.Reason, r.Change, tt.want, tt.reason)
			}
			if r.Status == OutOfDate && r.Change == "" {
				t.Error("an out-of-date pod without the change")
			}
		})
	}
}
