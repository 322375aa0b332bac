//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestNodeLocalNetworkPolicy: the webhook warns, on the real apiserver, when
// a pod it points at the node-local cache may not send DNS there under its
// namespace's NetworkPolicies (the usual "DNS to kube-dns only" recipe),
// enforced and audit alike, counts it, and stops once a policy allows the
// cache's address. (This control plane enforces no NetworkPolicy: the
// detection is what is tested here; e2e/kubenode checks the verdicts against
// a real enforcer, kube-router, on the real node.)
func TestNodeLocalNetworkPolicy(t *testing.T) {
	ctx := context.Background()
	dns := []networkingv1.NetworkPolicyPort{
		{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromInt32(53))},
		{Protocol: ptr(corev1.ProtocolTCP), Port: ptr(intstr.FromInt32(53))},
	}
	kubeDNSOnly := func(ns string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "dns-to-kube-dns", Namespace: ns},
			Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: dns, To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
				}}}},
			},
		}
	}
	warningFor := func(ns string) string {
		return "dnstune: NetworkPolicy " + ns + "/dns-to-kube-dns selects this pod for egress and allows no UDP or TCP port 53 to the node-local DNS cache 169.254.20.10"
	}
	// waitWarning creates pods (server-side dry run) until the webhook's
	// NetworkPolicy cache has caught up and the warning is there (or not).
	waitWarning := func(ns string, want bool) []string {
		var last []string
		eventually(t, 20*time.Second, func() error {
			_, last = create(t, newPod(ns), client.DryRunAll)
			has := slices.ContainsFunc(last, func(w string) bool { return strings.HasPrefix(w, warningFor(ns)) })
			if has != want {
				return fmt.Errorf("egress warning present %v, want %v: %q", has, want, last)
			}
			return nil
		})
		return last
	}

	enforced := namespace(t, "np-nodelocal", map[string]string{"dnstune.io/inject": "enabled", "dnstune.io/profile": "nodelocal"})
	audit := namespace(t, "np-audit", map[string]string{"dnstune.io/inject": "audit", "dnstune.io/profile": "nodelocal"})
	options := namespace(t, "np-options", enabled())
	before, _ := metric(t, "dnstune_nodelocal_egress_blocked_total", map[string]string{"profile": "nodelocal", "result": "mutated"})
	for _, ns := range []string{enforced, audit, options} {
		if err := env.Client.Create(ctx, kubeDNSOnly(ns)); err != nil {
			t.Fatal(err)
		}
	}
	waitWarning(enforced, true)
	p, warnings := create(t, newPod(enforced))
	if p.Spec.DNSPolicy != corev1.DNSNone {
		t.Fatalf("the warning must not stop the mutation: dnsPolicy %s", p.Spec.DNSPolicy)
	}
	if !slices.ContainsFunc(warnings, func(w string) bool {
		return w == warningFor(enforced)+": each lookup waits out the timeout there before it reaches kube-dns; add an egress rule to 169.254.20.10/32 with ports 53/UDP and 53/TCP"
	}) {
		t.Errorf("warnings %q", warnings)
	}
	if after, _ := metric(t, "dnstune_nodelocal_egress_blocked_total", map[string]string{"profile": "nodelocal", "result": "mutated"}); after <= before {
		t.Errorf("dnstune_nodelocal_egress_blocked_total{result=mutated}: %v -> %v", before, after)
	}
	waitWarning(audit, true)
	if n, _ := metric(t, "dnstune_nodelocal_egress_blocked_total", map[string]string{"profile": "nodelocal", "result": "audited"}); n == 0 {
		t.Error("no audited egress finding counted")
	}
	// Options profiles keep kube-dns: nothing to warn about.
	if _, w := create(t, newPod(options), client.DryRunAll); slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "NetworkPolicy") }) {
		t.Errorf("options profile got an egress warning: %q", w)
	}
	// A second policy with an ipBlock for the cache: the union allows it.
	allow := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "dns-to-nodelocal", Namespace: enforced},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: dns, To: []networkingv1.NetworkPolicyPeer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "169.254.20.10/32"}}}}},
		},
	}
	if err := env.Client.Create(ctx, allow); err != nil {
		t.Fatal(err)
	}
	waitWarning(enforced, false)
	// A pod the policies do not select is not isolated.
	if err := env.Client.Delete(ctx, allow); err != nil {
		t.Fatal(err)
	}
	np := kubeDNSOnly(enforced)
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(np), np); err != nil {
		t.Fatal(err)
	}
	np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}
	if err := env.Client.Update(ctx, np); err != nil {
		t.Fatal(err)
	}
	waitWarning(enforced, false)
}
