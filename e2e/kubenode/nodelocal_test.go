package kubenode

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/internal/node"
)

// nodeLocalNS is the namespace whose pods dnstune points at the cache.
const nodeLocalNS = "e2e-nodelocal"

// nodeLocalClients are the pods of the node-local step: glibc and musl under
// dnstune's nodelocal profile; a musl pod that lists the cache alone (the
// alternative for musl, set by hand: dnstune does not offer it); and the
// plain pods of the resolver step, without dnstune, as the reference.
var nodeLocalClients = []resolverClient{
	{ns: nodeLocalNS, app: "glibc", image: GlibcClientImage, binary: "resolve-glibc", label: "dnstune nodelocal"},
	{ns: nodeLocalNS, app: "musl", image: MuslClientImage, binary: "resolve-musl", label: "dnstune nodelocal"},
	{ns: "e2e-plain", app: "musl-cache-only", image: MuslClientImage, binary: "resolve-musl", label: "cache only (by hand)"},
	{ns: "e2e-plain", app: "glibc", image: GlibcClientImage, binary: "resolve-glibc", label: "plain (no dnstune)"},
	{ns: "e2e-plain", app: "musl", image: MuslClientImage, binary: "resolve-musl", label: "plain (no dnstune)"},
}

// cacheOnlyPod is resolv.conf with the cache as the only nameserver, the
// nodelocal profile's options and musl's kept ndots:5.
func cacheOnlyPod(spec *corev1.PodSpec) {
	spec.DNSPolicy = corev1.DNSNone
	spec.DNSConfig = &corev1.PodDNSConfig{
		Nameservers: []string{NodeLocalIP},
		Searches:    []string{"e2e-plain.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("5")}, {Name: "timeout", Value: ptr.To("1")},
			{Name: "attempts", Value: ptr.To("2")}},
	}
}

// dnsCounts are the queries the cache and kube-dns answered: kube-dns's UDP
// queries come from pods directly (through the kube-dns DNAT), its TCP ones
// from the cache (force_tcp).
type dnsCounts struct{ cache, kubeDNSUDP, kubeDNSTCP float64 }

func countDNS(t *testing.T, c *Cluster) dnsCounts {
	t.Helper()
	var d dnsCounts
	if text, err := framework.Scrape(NodeLocalMetrics); err == nil { // down in the fault states
		d.cache, _ = metric(t, text, "coredns_dns_requests_total", nil)
	}
	d.kubeDNSUDP = kubeDNSMetric(t, c, "coredns_dns_requests_total", map[string]string{"proto": "udp"})
	d.kubeDNSTCP = kubeDNSMetric(t, c, "coredns_dns_requests_total", map[string]string{"proto": "tcp"})
	return d
}

func (d dnsCounts) minus(o dnsCounts) dnsCounts {
	return dnsCounts{d.cache - o.cache, d.kubeDNSUDP - o.kubeDNSUDP, d.kubeDNSTCP - o.kubeDNSTCP}
}

// stepNodeLocal runs the node-local cache on the node, resolves through it
// from glibc and musl, counts what reaches the cache and kube-dns, then
// breaks the cache in the ways a node does and measures each lookup.
func stepNodeLocal(t *testing.T, ctx context.Context, c *Cluster) {
	if err := c.InstallNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/sys/class/net/" + NodeLocalLink); err != nil {
		t.Fatalf("the cache's init container left no %s link: %v", NodeLocalLink, err)
	}
	if r := node.Query(ctx, net.JoinHostPort(NodeLocalIP, "53"), ServiceName+"."+ServiceNamespace+".svc.cluster.local.", time.Second); !r.Up {
		t.Fatalf("the node-local cache does not answer on the node: %s", r.Detail)
	}
	for _, cl := range nodeLocalClients {
		if cl.ns == "e2e-plain" && cl.app != "musl-cache-only" {
			continue // made by the resolver step
		}
		d := ClientDeployment(cl.ns, cl.app, cl.image)
		if cl.app == "musl-cache-only" {
			cacheOnlyPod(&d.Spec.Template.Spec)
		}
		if err := c.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]string{}
	for _, cl := range nodeLocalClients {
		if err := c.WaitDeploymentReady(ctx, cl.ns, cl.app, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		pod, err := c.RunningPod(ctx, cl.ns, cl.app)
		if err != nil {
			t.Fatal(err)
		}
		pods[cl.ns+"/"+cl.app] = pod.Name
		conf, text, err := c.ReadResolvConf(pod)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s/%s (%s): %s", cl.ns, cl.app, cl.label, strings.ReplaceAll(strings.TrimSpace(text), "\n", " | "))
		if cl.ns == nodeLocalNS && !slices.Equal(conf.Nameservers, []string{NodeLocalIP, KubeDNSIP}) {
			t.Fatalf("%s/%s nameservers %v, want the cache then kube-dns", cl.ns, cl.app, conf.Nameservers)
		}
	}

	// 1. Through the running cache: every name, counted at both servers.
	var rows []string
	for _, cl := range nodeLocalClients[:3] {
		for _, name := range lookupNames {
			before := countDNS(t, c)
			l := lookup(t, c, cl.ns, pods[cl.ns+"/"+cl.app], cl.binary, name)
			time.Sleep(100 * time.Millisecond) // the last answers are counted a moment after the client returns
			d := countDNS(t, c).minus(before)
			want := ServiceIP
			if name == ExternalName {
				want = ExternalIP
			}
			if !l.ok || l.answer != want {
				t.Errorf("%s/%s (%s) %s through the cache: got %v %s, want %s", cl.ns, cl.app, cl.label, name, l.ok, l.answer, want)
			}
			if d.cache == 0 {
				t.Errorf("%s/%s %s: the cache answered no query", cl.ns, cl.app, name)
			}
			switch {
			case cl.binary == "resolve-glibc" && d.kubeDNSUDP != 0:
				t.Errorf("glibc %s: %v queries went to kube-dns directly; with the cache up, glibc should ask only the first nameserver", name, d.kubeDNSUDP)
			case cl.app == "musl" && d.kubeDNSUDP == 0:
				t.Errorf("musl %s: no query went to kube-dns directly; musl asks every nameserver at once (res_msend): has that changed? revisit the README's musl nodelocal notes", name)
			case cl.app == "musl-cache-only" && d.kubeDNSUDP != 0:
				t.Errorf("musl, cache only, %s: %v queries went to kube-dns directly", name, d.kubeDNSUDP)
			}
			res := "ok " + l.answer
			if !l.ok {
				res = "**fails** (" + l.answer + ")"
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %s | `%s` | %s | %.0f | %.0f | %.0f |", c.ProxyMode, libcOf(cl), cl.label, name, res, d.cache, d.kubeDNSUDP, d.kubeDNSTCP))
		}
	}
	queries := "| kube-proxy | libc | pod | name | result | at the cache | at kube-dns from the pod (UDP, DNAT) | at kube-dns from the cache (TCP) |\n|---|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	t.Logf("queries through the node-local cache:\n%s", queries)

	// The node agent's probe sees the cache.
	waitNodeLocalUp(t, c, 1)

	// 2. Faults, each measured for every client against the plain pods.
	faultNames := []string{ServiceName + "." + ServiceNamespace, ExternalName}
	// One row per state, one cell per pod: "ok A / B ms", the lookups of
	// faultNames in order.
	var faults []string
	measure := func(state string) map[string]lookupOutcome {
		got := map[string]lookupOutcome{}
		row := "| " + c.ProxyMode + " | " + state + " |"
		limited := icmpRateLimited(t)
		for _, cl := range nodeLocalClients {
			var ok = true
			var ms []string
			for _, name := range faultNames {
				l := lookup(t, c, cl.ns, pods[cl.ns+"/"+cl.app], cl.binary, name)
				got[cl.ns+"/"+cl.app+" "+name] = l
				ok = ok && l.ok
				ms = append(ms, fmt.Sprintf("%.0f", l.ms))
			}
			if ok {
				row += " ok " + strings.Join(ms, " / ") + " ms |"
			} else {
				row += " **fails** after " + strings.Join(ms, " / ") + " ms |"
			}
		}
		held := "n/a (kernel before 6.0)"
		if now := icmpRateLimited(t); limited >= 0 && now >= 0 {
			held = strconv.Itoa(now - limited)
		}
		faults = append(faults, row+" "+held+" |")
		return got
	}
	measure("cache up")

	// Killed: SIGKILL to the cache's container; kubelet restarts it. The
	// gap is from the kill until the cache answers again.
	killed := time.Now()
	killContainer(t, ctx, c, "kube-system", "k8s-app=node-local-dns", "node-cache")
	during := measure("cache killed, restarting")
	var gap time.Duration
	if err := framework.Eventually(2*time.Minute, 50*time.Millisecond, func() error {
		if r := node.Query(ctx, net.JoinHostPort(NodeLocalIP, "53"), "kubernetes.default.svc.cluster.local.", 200*time.Millisecond); !r.Up {
			return fmt.Errorf("the cache does not answer after its kill: %s", r.Detail)
		}
		gap = time.Since(killed)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("cache SIGKILLed: it answered again after %s", gap.Round(time.Millisecond))
	checkFallback(t, "cache killed", during)

	// Deleted: the pod is gone, the address and the rules stay (node-cache
	// killed without its teardown does the same): queries are refused.
	if err := c.DeleteNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	downSince := time.Now()
	waitNodeLocalUp(t, c, 0)
	t.Logf("node agent: dnstune_node_nodelocal_up 0 %s after the DaemonSet was deleted", time.Since(downSince).Round(time.Millisecond))
	waitNodeEvent(t, ctx, c, "NodeLocalDNSDown")
	checkFallback(t, "DaemonSet deleted", measure("DaemonSet deleted (address left, nothing listens)"))

	// No cache on the node: nothing holds the address, so the node drops
	// the packets silently, as a real network does.
	if err := c.RemoveNodeCacheFromHost(); err != nil {
		t.Fatal(err)
	}
	noCache := measure("no cache on the node (silent drop)")
	checkFallback(t, "no cache on the node", noCache)
	for _, name := range faultNames {
		if l := noCache[nodeLocalNS+"/glibc "+name]; l.ms < 1000 {
			t.Errorf("glibc %s with no cache on the node took %.0f ms: it should wait out timeout:1 on the dead address first; is the outage still a silent drop?", name, l.ms)
		}
		if l := noCache["e2e-plain/musl-cache-only "+name]; l.ok {
			t.Errorf("musl with the cache as its only nameserver resolved %s with no cache on the node", name)
		}
	}

	// Back: the DaemonSet again.
	if err := c.InstallNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	waitNodeLocalUp(t, c, 1)
	waitNodeEvent(t, ctx, c, "NodeLocalDNSUp")
	back := measure("recovered")
	for k, l := range back {
		if !l.ok {
			t.Errorf("after recovery %s: %s", k, l.answer)
		}
	}
	head := "| kube-proxy | state |"
	for _, cl := range nodeLocalClients {
		head += " " + libcOf(cl) + " " + cl.label + " |"
	}
	head += " port unreachables the node's ICMP rate limit held back |"
	table := fmt.Sprintf("%s\nFaults (cache SIGKILLed: it answered again after %s; each cell `%s`):\n\n%s\n%s\n%s\n",
		queries, gap.Round(time.Millisecond), strings.Join(faultNames, "` / `"), head,
		"|---|---|"+strings.Repeat("---|", len(nodeLocalClients)+1), strings.Join(faults, "\n"))
	t.Logf("node-local faults:\n%s", table)
	if err := os.WriteFile(filepath.Join(framework.RepoRoot(), "bin", "node-nodelocal-"+c.ProxyMode+".md"), []byte(table), 0o644); err != nil {
		t.Error(err)
	}
}

// icmpRateLimited is the node's IcmpOutRateLimitHost (/proc/net/snmp, the
// node's network namespace is this process's): ICMP errors, port
// unreachables among them, the kernel did not send because of the
// per-destination rate limit (net.ipv4.icmp_ratelimit); -1 on kernels
// without the counter (before 6.0).
func icmpRateLimited(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "OutRateLimitHost" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	return -1
}

func libcOf(cl resolverClient) string {
	if cl.binary == "resolve-musl" {
		return "musl"
	}
	return "glibc"
}

// checkFallback: pods under dnstune's nodelocal profile still resolve while
// the cache is down (kube-dns is their second nameserver), as plain pods do.
func checkFallback(t *testing.T, state string, got map[string]lookupOutcome) {
	t.Helper()
	for k, l := range got {
		if strings.HasPrefix(k, "e2e-plain/musl-cache-only") {
			continue
		}
		if !l.ok {
			t.Errorf("%s: %s failed (%s)", state, k, l.answer)
		}
	}
}

// waitNodeLocalUp waits until the node agent exports
// dnstune_node_nodelocal_up = want for the cache's address: within one
// probe interval (5 s, the chart's default) and its timeout, plus a scrape.
func waitNodeLocalUp(t *testing.T, c *Cluster, want float64) {
	t.Helper()
	if err := framework.Eventually(10*time.Second, 250*time.Millisecond, func() error {
		text, err := framework.Scrape("http://" + net.JoinHostPort(NodeIP, "9741") + "/metrics")
		if err != nil {
			return err
		}
		v, ok := metric(t, text, "dnstune_node_nodelocal_up", map[string]string{"address": NodeLocalIP})
		if !ok || v != want {
			return fmt.Errorf("dnstune_node_nodelocal_up{address=%q} = %v (exported: %v), want %v", NodeLocalIP, v, ok, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitNodeEvent waits for an Event with reason on the Node.
func waitNodeEvent(t *testing.T, ctx context.Context, c *Cluster, reason string) {
	t.Helper()
	if err := framework.Eventually(30*time.Second, 500*time.Millisecond, func() error {
		evs, err := c.Clientset.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + NodeName + ",reason=" + reason})
		if err != nil {
			return err
		}
		if len(evs.Items) == 0 {
			return fmt.Errorf("no %s Event on node %s", reason, NodeName)
		}
		t.Logf("Event %s: %s", reason, evs.Items[len(evs.Items)-1].Message)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
