package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestCacheEgress(t *testing.T) {
	cache := netip.MustParseAddr("169.254.20.10")
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	port := func(proto corev1.Protocol, p intstr.IntOrString, end ...int32) networkingv1.NetworkPolicyPort {
		np := networkingv1.NetworkPolicyPort{Protocol: ptr.To(proto), Port: &p}
		if len(end) > 0 {
			np.EndPort = &end[0]
		}
		return np
	}
	dns := []networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(53)), port(tcp, intstr.FromInt32(53))}
	block := func(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
	}
	kubeSystem := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
	}
	np := func(name string, sel map[string]string, types []networkingv1.PolicyType, rules ...networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types, Egress: rules}}
	}
	egress := []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	rule := func(ports []networkingv1.NetworkPolicyPort, to ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyEgressRule {
		return networkingv1.NetworkPolicyEgressRule{Ports: ports, To: to}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}}
	cases := []struct {
		name     string
		addr     netip.Addr
		policies []networkingv1.NetworkPolicy
		isolated bool
		blocked  []corev1.Protocol
		selected []string
	}{
		{name: "no policies: not isolated", addr: cache},
		{name: "ingress only: not isolated for egress", addr: cache, policies: []networkingv1.NetworkPolicy{np("in", nil, ingress)}},
		{name: "another pod's policy", addr: cache, policies: []networkingv1.NetworkPolicy{np("db", map[string]string{"app": "db"}, egress)}},
		{name: "deny all egress (no rules)", addr: cache, policies: []networkingv1.NetworkPolicy{np("deny", nil, egress)},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"deny"}},
		{name: "the usual recipe: DNS to kube-dns's pods only", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns, kubeSystem))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"dns"}},
		{name: "ipBlock /32 with both ports", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns, kubeSystem, block("169.254.20.10/32")))},
			isolated: true, selected: []string{"dns"}},
		{name: "ipBlock containing it, except excluding it", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns, block("169.254.0.0/16", "169.254.20.0/24")))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"dns"}},
		{name: "ipBlock containing it, except elsewhere", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns, block("0.0.0.0/0", "10.0.0.0/8", "169.254.169.254/32")))},
			isolated: true, selected: []string{"dns"}},
		{name: "ipBlock elsewhere", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns, block("10.0.0.0/8")))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"dns"}},
		{name: "UDP only", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns[:1], block("169.254.20.10/32")))},
			isolated: true, blocked: []corev1.Protocol{tcp}, selected: []string{"dns"}},
		{name: "protocol unset means TCP", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule([]networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromInt32(53))}}, block("169.254.20.10/32")))},
			isolated: true, blocked: []corev1.Protocol{udp}, selected: []string{"dns"}},
		{name: "a rule with no to: every destination", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dns", nil, egress, rule(dns))},
			isolated: true, selected: []string{"dns"}},
		{name: "a rule with no ports: every port", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("all", nil, egress, rule(nil, block("169.254.20.0/24")))},
			isolated: true, selected: []string{"all"}},
		{name: "a port with protocol and no number: every port of it", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("udp", nil, egress, rule([]networkingv1.NetworkPolicyPort{{Protocol: ptr.To(udp)}, {Protocol: ptr.To(tcp)}}))},
			isolated: true, selected: []string{"udp"}},
		{name: "another port", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("dot", nil, egress, rule([]networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(853)), port(tcp, intstr.FromInt32(853))}))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"dot"}},
		{name: "endPort range holding 53", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("range", nil, egress, rule([]networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(1), 1024), port(tcp, intstr.FromInt32(53), 53)}))},
			isolated: true, selected: []string{"range"}},
		{name: "endPort range past 53", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("range", nil, egress, rule([]networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(54), 1024), port(tcp, intstr.FromInt32(1), 52)}))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"range"}},
		{name: "named port: resolved against pods, never the cache's address", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("named", nil, egress, rule([]networkingv1.NetworkPolicyPort{port(udp, intstr.FromString("dns")), port(tcp, intstr.FromString("dns-tcp"))}))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"named"}},
		{name: "union of policies: UDP from one, TCP from another", addr: cache,
			policies: []networkingv1.NetworkPolicy{
				np("z-udp", nil, egress, rule(dns[:1], block("169.254.20.10/32"))),
				np("a-tcp", map[string]string{"app": "web"}, both, rule(dns[1:], block("169.254.20.10/32"))),
				np("other", map[string]string{"app": "db"}, egress),
			},
			isolated: true, selected: []string{"a-tcp", "z-udp"}},
		{name: "union: a deny-all beside an allowing policy still allows", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("deny", nil, egress), np("dns", nil, egress, rule(dns, block("169.254.20.10/32")))},
			isolated: true, selected: []string{"deny", "dns"}},
		{name: "no policyTypes with egress rules: applies to egress", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("implied", nil, nil, rule(dns, block("10.0.0.0/8")))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"implied"}},
		{name: "no policyTypes and no egress rules: ingress only", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("implied-in", nil, nil)}},
		{name: "IPv6 cache in an IPv6 block", addr: netip.MustParseAddr("fd00:10::a"),
			policies: []networkingv1.NetworkPolicy{np("v6", nil, egress, rule(dns, block("fd00:10::/64", "fd00:10::1/128")))},
			isolated: true, selected: []string{"v6"}},
		{name: "IPv6 cache, excepted", addr: netip.MustParseAddr("fd00:10::a"),
			policies: []networkingv1.NetworkPolicy{np("v6", nil, egress, rule(dns, block("fd00:10::/64", "fd00:10::/120")))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"v6"}},
		{name: "IPv6 cache, only an IPv4 block", addr: netip.MustParseAddr("fd00:10::a"),
			policies: []networkingv1.NetworkPolicy{np("v4", nil, egress, rule(dns, block("0.0.0.0/0")))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"v4"}},
		{name: "IPv4 cache, ::/0 only", addr: cache,
			policies: []networkingv1.NetworkPolicy{np("v6", nil, egress, rule(dns, block("::/0")))},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"v6"}},
		{name: "matchExpressions selector", addr: cache,
			policies: []networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "expr"}, Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}}}},
				PolicyTypes: egress}}},
			isolated: true, blocked: []corev1.Protocol{udp, tcp}, selected: []string{"expr"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := CacheEgress(pod, tc.policies, tc.addr)
			if e.Isolated != tc.isolated || !slices.Equal(e.Blocked, tc.blocked) || !slices.Equal(e.Policies, tc.selected) {
				t.Errorf("CacheEgress = %+v, want isolated %v, blocked %v, policies %v", e, tc.isolated, tc.blocked, tc.selected)
			}
			if e.Allowed() != (len(tc.blocked) == 0) {
				t.Errorf("Allowed() = %v with blocked %v", e.Allowed(), e.Blocked)
			}
			w := EgressWarning(e, "shop", tc.addr)
			if (w == "") != e.Allowed() {
				t.Errorf("warning %q for allowed=%v", w, e.Allowed())
			}
		})
	}
}

func TestEgressWarning(t *testing.T) {
	e := Egress{Isolated: true, Policies: []string{"a", "b"}, Blocked: []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP}}
	got := EgressWarning(e, "shop", netip.MustParseAddr("169.254.20.10"))
	want := "dnstune: NetworkPolicy shop/a, shop/b selects this pod for egress and allows no UDP or TCP port 53 to the node-local DNS cache 169.254.20.10: each lookup waits out the timeout there before it reaches kube-dns; add an egress rule to 169.254.20.10/32 with ports 53/UDP and 53/TCP"
	if got != want {
		t.Errorf("warning\n got %q\nwant %q", got, want)
	}
	if w := EgressWarning(Egress{Isolated: true, Policies: []string{"v6"}, Blocked: []corev1.Protocol{corev1.ProtocolTCP}}, "x", netip.MustParseAddr("fd00::a")); !strings.Contains(w, "no TCP port 53") || !strings.Contains(w, "fd00::a/128") {
		t.Errorf("IPv6 warning %q", w)
	}
}
