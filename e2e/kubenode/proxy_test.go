//go:build e2e

package kubenode

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// kube-dns is served by the real kube-proxy in the mode the suite runs
// under: its own rules for the Service are on the node (no other DNAT is),
// and queries to the ClusterIP reach both CoreDNS pods.
func TestKubeProxyServesKubeDNS(t *testing.T) {
	c := need(t)
	var rules []byte
	var err error
	switch c.ProxyMode {
	case ProxyNFTables:
		rules, err = exec.Command("nft", "list", "table", "ip", "kube-proxy").CombinedOutput()
	default:
		rules, err = exec.Command("iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES").CombinedOutput()
	}
	if err != nil {
		t.Fatalf("kube-proxy's %s rules: %v: %s", c.ProxyMode, err, rules)
	}
	if !strings.Contains(string(rules), KubeDNSIP) {
		t.Errorf("kube-proxy's %s rules do not mention kube-dns (%s):\n%s", c.ProxyMode, KubeDNSIP, rules)
	}
	if c.ProxyMode == ProxyNFTables {
		if out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").CombinedOutput(); err == nil && strings.Contains(string(out), "KUBE-SERVICES") {
			t.Errorf("nftables mode, yet iptables holds kube-proxy's chains:\n%s", out)
		}
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", nftTable).CombinedOutput(); strings.Contains(string(out), "dnat") {
		t.Errorf("the harness's own table DNATs; Services must be kube-proxy's alone:\n%s", out)
	}

	before := perPod(t, c)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "udp", net.JoinHostPort(KubeDNSIP, "53"))
	}}
	const queries = 60
	for i := range queries {
		// A new socket (source port) per query: kube-proxy balances per
		// connection, so each may land on either pod.
		if _, err := r.LookupHost(t.Context(), fmt.Sprintf("q%d.%s.%s.svc.cluster.local", i, ServiceName, ServiceNamespace)); err == nil {
			t.Fatalf("q%d answered: CoreDNS should say NXDOMAIN for it", i)
		}
	}
	after := perPod(t, c)
	for i := range after {
		if after[i]-before[i] == 0 {
			t.Errorf("CoreDNS pod %d answered none of %d queries through kube-dns (%v before, %v after): kube-proxy should spread them over both pods", i, queries, before, after)
		}
	}
	t.Logf("kube-proxy %s mode: %d lookups through %s answered per CoreDNS pod: %v", c.ProxyMode, queries, KubeDNSIP, diff(after, before))
}

func perPod(t *testing.T, c *Cluster) []float64 {
	t.Helper()
	texts, err := c.KubeDNSMetrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var v []float64
	for _, text := range texts {
		n, _ := metric(t, text, "coredns_dns_requests_total", nil)
		v = append(v, n)
	}
	return v
}

func diff(a, b []float64) []float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}
