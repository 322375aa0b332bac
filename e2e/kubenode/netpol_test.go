//go:build e2e

package kubenode

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/policy"
)

// netpolCase is one set of egress NetworkPolicies, created in a namespace.
type netpolCase struct {
	name     string
	policies func(ns string) []*networkingv1.NetworkPolicy
}

func dnsPorts(protos ...corev1.Protocol) []networkingv1.NetworkPolicyPort {
	var ports []networkingv1.NetworkPolicyPort
	for _, p := range protos {
		ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: ptr.To(p), Port: ptr.To(intstr.FromInt32(53))})
	}
	return ports
}

// egressPolicy selects the pods of selector (every pod when nil) for
// egress, with rules.
func egressPolicy(ns, name string, selector map[string]string, rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selector},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      rules,
		},
	}
}

// kubeDNSRule is the usual recipe: DNS to kube-dns's pods only.
var kubeDNSRule = networkingv1.NetworkPolicyEgressRule{
	Ports: dnsPorts(corev1.ProtocolUDP, corev1.ProtocolTCP),
	To: []networkingv1.NetworkPolicyPeer{{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
	}},
}

func cacheRule(block networkingv1.IPBlock, ports []networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{Ports: ports, To: []networkingv1.NetworkPolicyPeer{{IPBlock: &block}}}
}

var cacheCIDR = networkingv1.IPBlock{CIDR: NodeLocalIP + "/32"}

// netpolCases are the real-node NetworkPolicy cases (issue 31).
var netpolCases = []netpolCase{
	{"egress to kube-dns's pods only (the usual recipe)", func(ns string) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{egressPolicy(ns, "dns", nil, kubeDNSRule)}
	}},
	{"the recipe + ipBlock " + NodeLocalIP + "/32, UDP and TCP 53 (the documented fix)", func(ns string) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{egressPolicy(ns, "dns", nil, kubeDNSRule, cacheRule(cacheCIDR, dnsPorts(corev1.ProtocolUDP, corev1.ProtocolTCP)))}
	}},
	{"the recipe + ipBlock 169.254.0.0/16 except " + NodeLocalIP + "/32", func(ns string) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{egressPolicy(ns, "dns", nil, kubeDNSRule,
			cacheRule(networkingv1.IPBlock{CIDR: "169.254.0.0/16", Except: []string{NodeLocalIP + "/32"}}, dnsPorts(corev1.ProtocolUDP, corev1.ProtocolTCP)))}
	}},
	{"the recipe + ipBlock " + NodeLocalIP + "/32, ports 50–60 (endPort)", func(ns string) []*networkingv1.NetworkPolicy {
		var ports []networkingv1.NetworkPolicyPort
		for _, p := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: ptr.To(p), Port: ptr.To(intstr.FromInt32(50)), EndPort: ptr.To[int32](60)})
		}
		return []*networkingv1.NetworkPolicy{egressPolicy(ns, "dns", nil, kubeDNSRule, cacheRule(cacheCIDR, ports))}
	}},
	{"the recipe + ipBlock " + NodeLocalIP + "/32, UDP 53 only", func(ns string) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{egressPolicy(ns, "dns", nil, kubeDNSRule, cacheRule(cacheCIDR, dnsPorts(corev1.ProtocolUDP)))}
	}},
	{"two policies whose union allows the cache (UDP in one, TCP in the other)", func(ns string) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{
			egressPolicy(ns, "dns", nil, kubeDNSRule, cacheRule(cacheCIDR, dnsPorts(corev1.ProtocolUDP))),
			egressPolicy(ns, "dns-tcp", nil, cacheRule(cacheCIDR, dnsPorts(corev1.ProtocolTCP))),
		}
	}},
	{"a policy that selects other pods only (deny all egress of app=other)", func(ns string) []*networkingv1.NetworkPolicy {
		return []*networkingv1.NetworkPolicy{egressPolicy(ns, "other", map[string]string{"app": "other"})}
	}},
	{"no egress policy", func(string) []*networkingv1.NetworkPolicy { return nil }},
}

// netpolRow is what one case did in the nodelocal and options namespaces.
type netpolRow struct {
	c                    netpolCase
	blocked              []corev1.Protocol // dnstune's evaluation (policy.CacheEgress), as the webhook warns
	warned               bool              // the webhook's admission warning
	udp, tcp             string            // what the enforcer did to a DNS query to the cache from the pod
	glibc, musl          lookupOutcome     // nodelocal namespace
	glibcCache, glibcUDP float64           // queries the cache, and kube-dns over UDP, answered during the glibc lookup
	held                 int               // port unreachables the node's ICMP rate limit held back during the case
	optGlibc, optMusl    lookupOutcome     // options namespace
	optWarned            bool
}

// stepNetworkPolicy runs the NetworkPolicy cases with kube-router
// enforcing them: for each, dnstune's verdict (policy.CacheEgress, and the
// webhook's warning on a pod created in the namespace) against what the
// enforcer does to DNS sent to the cache from a running pod, and the
// lookups of glibc and musl pods.
func stepNetworkPolicy(t *testing.T, ctx context.Context, c *Cluster) {
	if err := c.InstallKubeRouter(ctx); err != nil {
		t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n kube-system describe pods -l k8s-app=kube-router | tail -30; kubectl -n kube-system logs -l k8s-app=kube-router --tail=40"))
	}
	defer func() {
		if err := c.RemoveKubeRouter(context.Background()); err != nil {
			t.Errorf("remove kube-router: %v", err)
		}
	}()
	w := &framework.Warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*corev1.Pod{}
	for _, ns := range []string{nodeLocalNS, "e2e-enabled"} {
		for _, app := range []string{"glibc", "musl"} {
			p, err := c.RunningPod(ctx, ns, app)
			if err != nil {
				t.Fatal(err)
			}
			pods[ns+"/"+app] = p
		}
	}
	netns, err := c.PodNetNS(ctx, pods[nodeLocalNS+"/glibc"])
	if err != nil {
		t.Fatal(err)
	}
	cache := netip.MustParseAddr(NodeLocalIP)
	name := ServiceName + "." + ServiceNamespace
	var rows []netpolRow
	for _, tc := range netpolCases {
		// The case's policies in both namespaces, and every other one gone.
		syncs, err := c.KubeRouterSyncs()
		if err != nil {
			t.Fatal(err)
		}
		var applied []networkingv1.NetworkPolicy
		for _, ns := range []string{nodeLocalNS, "e2e-enabled"} {
			if err := c.Clientset.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, np := range tc.policies(ns) {
				if _, err := c.Clientset.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				if ns == nodeLocalNS {
					applied = append(applied, *np)
				}
			}
		}
		// kube-router syncs on every policy event; two more syncs means one
		// started after the last change.
		if err := framework.Eventually(30*time.Second, 200*time.Millisecond, func() error {
			n, err := c.KubeRouterSyncs()
			if err != nil {
				return fmt.Errorf("kube-router's metrics: %w", err)
			}
			if n < syncs+2 {
				return fmt.Errorf("kube-router: %v syncs since the change, want 2", n-syncs)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		row := netpolRow{c: tc, blocked: policy.CacheEgress(pods[nodeLocalNS+"/glibc"], applied, cache).Blocked}
		limited := icmpRateLimited(t)
		// The webhook's verdict on a pod created now (dry run), once its
		// NetworkPolicy informer has the case's policies.
		warned := func(ns string) bool {
			before := len(w.Messages())
			tmpl := ClientDeployment(ns, "glibc", GlibcClientImage).Spec.Template
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "verdict-", Labels: tmpl.Labels},
				Spec: tmpl.Spec}, metav1.CreateOptions{DryRun: []string{"All"}}); err != nil {
				t.Fatal(err)
			}
			return slices.ContainsFunc(w.Messages()[before:], func(m string) bool { return strings.HasPrefix(m, "dnstune: NetworkPolicy ") })
		}
		if err := framework.Eventually(20*time.Second, 250*time.Millisecond, func() error {
			if row.warned = warned(nodeLocalNS); row.warned != (len(row.blocked) > 0) {
				return fmt.Errorf("the webhook warned %v; policy.CacheEgress blocks %v", row.warned, row.blocked)
			}
			return nil
		}); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		row.optWarned = warned("e2e-enabled")
		// What the enforcer does, from the pod's own network namespace.
		row.udp, row.tcp = dnsFrom(netns, "udp"), dnsFrom(netns, "tcp")
		before := countDNS(t, c)
		row.glibc = lookup(t, c, nodeLocalNS, pods[nodeLocalNS+"/glibc"].Name, "resolve-glibc", name)
		time.Sleep(100 * time.Millisecond)
		d := countDNS(t, c).minus(before)
		row.glibcCache, row.glibcUDP = d.cache, d.kubeDNSUDP
		row.musl = lookup(t, c, nodeLocalNS, pods[nodeLocalNS+"/musl"].Name, "resolve-musl", name)
		row.optGlibc = lookup(t, c, "e2e-enabled", pods["e2e-enabled/glibc"].Name, "resolve-glibc", name)
		row.optMusl = lookup(t, c, "e2e-enabled", pods["e2e-enabled/musl"].Name, "resolve-musl", name)
		row.held = icmpRateLimited(t) - limited
		rows = append(rows, row)
		t.Logf("%s: dnstune blocks %v (warned %v); enforcer UDP %s, TCP %s; glibc %v %.0f ms (cache %v, kube-dns %v), musl %v %.0f ms; options ns glibc %.0f ms, musl %.0f ms; ICMP held back %d",
			tc.name, row.blocked, row.warned, row.udp, row.tcp, row.glibc.ok, row.glibc.ms, row.glibcCache, row.glibcUDP, row.musl.ok, row.musl.ms, row.optGlibc.ms, row.optMusl.ms, row.held)

		// Agreement: what dnstune says is blocked is what the enforcer blocks.
		for _, p := range []struct {
			proto corev1.Protocol
			got   string
		}{{corev1.ProtocolUDP, row.udp}, {corev1.ProtocolTCP, row.tcp}} {
			if dnstune, enforcer := slices.Contains(row.blocked, p.proto), p.got != "answered"; dnstune != enforcer {
				t.Errorf("%s: dnstune says %s to the cache is blocked: %v; the enforcer: %s", tc.name, p.proto, dnstune, p.got)
			}
		}
		for _, l := range []struct {
			what string
			o    lookupOutcome
		}{{"glibc", row.glibc}, {"musl", row.musl}, {"options glibc", row.optGlibc}, {"options musl", row.optMusl}} {
			if !l.o.ok || l.o.answer != ServiceIP {
				t.Errorf("%s: %s lookup of %s: %v %s", tc.name, l.what, name, l.o.ok, l.o.answer)
			}
		}
		if row.optWarned {
			t.Errorf("%s: the webhook warned in the options namespace, whose pods never use the cache", tc.name)
		}
		// glibc asks kube-dns directly only when the cache does not answer
		// (the cache's own queries to kube-dns go over TCP; the node agent's
		// probe may add one query at the cache to any window).
		if udpOpen := !slices.Contains(row.blocked, corev1.ProtocolUDP); udpOpen && (row.glibcCache == 0 || row.glibcUDP != 0) {
			t.Errorf("%s: UDP to the cache allowed, yet glibc's queries went to the cache %v times, to kube-dns %v times", tc.name, row.glibcCache, row.glibcUDP)
		} else if !udpOpen && row.glibcUDP == 0 {
			t.Errorf("%s: UDP to the cache blocked, yet none of glibc's queries reached kube-dns", tc.name)
		}
	}
	table := netpolTable(rows, c.ProxyMode)
	t.Logf("NetworkPolicy cases with kube-router enforcing:\n%s", table)
	if err := os.WriteFile(filepath.Join(framework.RepoRoot(), "bin", "node-netpol-"+c.ProxyMode+".md"), []byte(table), 0o644); err != nil { // #nosec G306 -- a report
		t.Error(err)
	}
	for _, ns := range []string{nodeLocalNS, "e2e-enabled"} {
		if err := c.Clientset.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Error(err)
		}
	}
}

// dnsFrom sends one DNS query (A, for the test Service) to the cache from
// network namespace netns over proto, and says what happened: "answered",
// "refused" (an ICMP unreachable, or a TCP reset) or "no answer in 1 s".
func dnsFrom(netns, proto string) string {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var conn net.Conn
		err := framework.InNetNS(netns, func() error {
			var err error
			conn, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, proto, net.JoinHostPort(NodeLocalIP, "53"))
			return err
		})
		return conn, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addrs, err := r.LookupIPAddr(ctx, ServiceName+"."+ServiceNamespace+".svc.cluster.local.")
	switch {
	case err == nil && len(addrs) > 0:
		return "answered"
	case err != nil && strings.Contains(err.Error(), "refused"):
		return "refused"
	default:
		return "no answer in 1 s"
	}
}

func netpolTable(rows []netpolRow, mode string) string {
	var b strings.Builder
	b.WriteString("| kube-proxy | egress policies | dnstune (webhook warning: blocked to the cache) | kube-router: UDP / TCP query to the cache from the pod | glibc nodelocal | its queries at the cache / at kube-dns | musl nodelocal | options ns: glibc / musl |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		verdict := "no warning"
		if r.warned {
			var ps []string
			for _, p := range r.blocked {
				ps = append(ps, string(p))
			}
			verdict = "**warns**: " + strings.Join(ps, ", ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s / %s | %s | %.0f / %.0f | %s | %s / %s |\n", mode, r.c.name, verdict, r.udp, r.tcp,
			outcome(r.glibc), r.glibcCache, r.glibcUDP, outcome(r.musl), outcome(r.optGlibc), outcome(r.optMusl))
	}
	return b.String()
}

func outcome(l lookupOutcome) string {
	if !l.ok {
		return fmt.Sprintf("**fails** after %.0f ms", l.ms)
	}
	return fmt.Sprintf("ok %.0f ms", l.ms)
}
