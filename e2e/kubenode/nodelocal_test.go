//go:build e2e

package kubenode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/node"
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
	// The cache was never on this node: no interface holds its address, and
	// the node agent answers there itself (added to lo), so pods pointed at
	// it resolve. The cache then starts beside it and the agent steps aside.
	waitCovering(t, 1)
	waitNodeCondition(t, ctx, c, corev1.ConditionFalse, node.ReasonCovered)
	if !loHolds(t, NodeLocalIP) {
		t.Fatalf("the cover answers at %s but lo does not hold it", NodeLocalIP)
	}
	if r := node.Query(ctx, net.JoinHostPort(NodeLocalIP, "53"), ServiceName+"."+ServiceNamespace+".svc.cluster.local.", time.Second); !r.Up {
		t.Fatalf("the cover does not answer on the node: %s", r.Detail)
	}
	if err := c.InstallNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	waitCovering(t, 0)
	if loHolds(t, NodeLocalIP) {
		t.Errorf("lo still holds %s with the cache running: the cover left its address", NodeLocalIP)
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
	during := measure("cache killed, restarting: dnstune takes over at once")
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
	checkCovered(t, "cache killed", during)

	// Deleted: the pod is gone, the address and the rules stay (node-cache
	// killed without its teardown does the same): queries are refused until
	// the node agent, two probes later, answers there itself (the cover).
	if err := c.DeleteNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	downSince := time.Now()
	waitNodeLocalUp(t, c, 0)
	t.Logf("node agent: dnstune_node_nodelocal_up 0 %s after the DaemonSet was deleted", time.Since(downSince).Round(time.Millisecond))
	waitNodeEvent(t, ctx, c, "NodeLocalDNSDown")
	waitCovering(t, 1)
	t.Logf("node agent: covering %s after the DaemonSet was deleted", time.Since(downSince).Round(time.Millisecond))
	waitNodeEvent(t, ctx, c, "NodeLocalDNSCovered")
	waitNodeCondition(t, ctx, c, corev1.ConditionFalse, node.ReasonCovered)
	checkCovered(t, "DaemonSet deleted", measure("DaemonSet deleted (address left, nothing listens): dnstune covers"))

	// No cache on the node: the cache's interface goes, with the address;
	// the cover takes the address onto lo (else the node would drop the
	// packets silently, as a real network does, and glibc would wait out
	// timeout:1 on every lookup).
	if err := c.RemoveNodeCacheFromHost(); err != nil {
		t.Fatal(err)
	}
	if err := framework.Eventually(5*time.Second, 100*time.Millisecond, func() error {
		if !loHolds(t, NodeLocalIP) {
			return fmt.Errorf("lo does not hold %s: the cover did not take the address", NodeLocalIP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	noCache := measure("no cache on the node: dnstune covers")
	checkCovered(t, "no cache on the node", noCache)
	checkReportCoverage(t, c, "answers on 0/1 nodes (missing: "+NodeName+" Covered)", nodeLocalNS+"/"+pods[nodeLocalNS+"/glibc"]+" on "+NodeName+" (Covered)")

	// Pods created during the outage get the nodelocal profile (no
	// admission gating) and resolve through the cover as well.
	var duringRows []string
	for _, cl := range nodeLocalClients[:2] {
		app := cl.app + "-during"
		if err := c.Client.Create(ctx, ClientDeployment(cl.ns, app, cl.image)); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitDeploymentReady(ctx, cl.ns, app, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		pod, err := c.RunningPod(ctx, cl.ns, app)
		if err != nil {
			t.Fatal(err)
		}
		conf, _, err := c.ReadResolvConf(pod)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(conf.Nameservers, []string{NodeLocalIP, KubeDNSIP}) {
			t.Errorf("%s/%s created during the outage: nameservers %v, want the cache then kube-dns", cl.ns, app, conf.Nameservers)
		}
		got := map[string]lookupOutcome{}
		var ms []string
		for _, name := range faultNames {
			l := lookup(t, c, cl.ns, pod.Name, cl.binary, name)
			got[cl.ns+"/"+app+" "+name] = l
			ms = append(ms, fmt.Sprintf("%.0f", l.ms))
		}
		checkCovered(t, "created during the outage", got)
		duringRows = append(duringRows, fmt.Sprintf("| %s | %s | %s ms |", c.ProxyMode, libcOf(cl), strings.Join(ms, " / ")))
	}

	// Back: the DaemonSet again. The cache binds beside the cover (both
	// set SO_REUSEPORT), the cover steps aside and takes its address off lo.
	backSince := time.Now()
	if err := c.InstallNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	waitCovering(t, 0)
	t.Logf("node agent: stopped covering %s after the DaemonSet was created again", time.Since(backSince).Round(time.Millisecond))
	waitNodeEvent(t, ctx, c, "NodeLocalDNSCoverEnded")
	if loHolds(t, NodeLocalIP) {
		t.Errorf("lo still holds %s after the cache came back: the cover left its address", NodeLocalIP)
	}
	waitNodeLocalUp(t, c, 1)
	waitNodeEvent(t, ctx, c, "NodeLocalDNSUp")
	waitNodeCondition(t, ctx, c, corev1.ConditionTrue, node.ReasonAnswers)
	back := measure("recovered")
	for k, l := range back {
		if !l.ok {
			t.Errorf("after recovery %s: %s", k, l.answer)
		}
	}
	before := countDNS(t, c)
	if l := lookup(t, c, nodeLocalNS, pods[nodeLocalNS+"/glibc"], "resolve-glibc", ServiceName+"."+ServiceNamespace); !l.ok {
		t.Errorf("glibc after recovery: %s", l.answer)
	}
	time.Sleep(100 * time.Millisecond)
	if d := countDNS(t, c).minus(before); d.cache == 0 || d.kubeDNSUDP != 0 {
		t.Errorf("after recovery a glibc lookup reached the cache %v times and kube-dns directly %v times: want the cache alone", d.cache, d.kubeDNSUDP)
	}
	restart := rollingRestartUnderLoad(t, ctx, c, pods)
	otherAddress(t, ctx, c)

	head := "| kube-proxy | state |"
	for _, cl := range nodeLocalClients {
		head += " " + libcOf(cl) + " " + cl.label + " |"
	}
	head += " port unreachables the node's ICMP rate limit held back |"
	table := fmt.Sprintf("%s\nFaults (cache SIGKILLed: it answered again after %s; each cell `%s`):\n\n%s\n%s\n%s\n\nCreated during the outage (no cache on the node, dnstune covers), nodelocal profile:\n\n| kube-proxy | libc | `%s` |\n|---|---|---|\n%s\n",
		queries, gap.Round(time.Millisecond), strings.Join(faultNames, "` / `"), head,
		"|---|---|"+strings.Repeat("---|", len(nodeLocalClients)+1), strings.Join(faults, "\n"),
		strings.Join(faultNames, "` / `"), strings.Join(duringRows, "\n")) + "\n" + restart
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

// rollingRestartUnderLoad restarts the cache's DaemonSet as kubectl
// rollout restart does while the glibc and musl pods of the nodelocal
// namespace resolve without pause (resolve with the same name 300 times per
// run, runs back to back until the new cache answers, then one more): every
// lookup must succeed. It returns a table row per libc: lookups, failures,
// those over 500 ms, the worst.
func rollingRestartUnderLoad(t *testing.T, ctx context.Context, c *Cluster, pods map[string]string) string {
	t.Helper()
	name := ServiceName + "." + ServiceNamespace
	args := make([]string, 300)
	for i := range args {
		args[i] = name
	}
	type tally struct {
		n, failed, slow int
		worst           float64
		firstFail       string
	}
	var mu sync.Mutex
	tallies := map[string]*tally{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, cl := range nodeLocalClients[:2] {
		tl := &tally{}
		tallies[libcOf(cl)] = tl
		wg.Go(func() {
			last := false
			for {
				select {
				case <-done:
					last = true
				default:
				}
				out, err := c.Exec(cl.ns, pods[cl.ns+"/"+cl.app], append([]string{"/usr/local/bin/" + cl.binary}, args...)...)
				if err != nil {
					t.Errorf("%s lookups during the restart: %v", cl.app, err)
					return
				}
				mu.Lock()
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					f := strings.Fields(line)
					if len(f) < 3 {
						continue
					}
					ms, _ := strconv.ParseFloat(f[2], 64)
					tl.n++
					tl.worst = max(tl.worst, ms)
					if ms >= 500 {
						tl.slow++
					}
					if f[1] != "ok" {
						tl.failed++
						if tl.firstFail == "" {
							tl.firstFail = line
						}
					}
				}
				mu.Unlock()
				if last {
					return
				}
			}
		})
	}
	start := time.Now()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, start.Format(time.RFC3339))
	if _, err := c.Clientset.AppsV1().DaemonSets("kube-system").Patch(ctx, "node-local-dns", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	err := framework.Eventually(2*time.Minute, 200*time.Millisecond, func() error {
		ds, err := c.Clientset.AppsV1().DaemonSets("kube-system").Get(ctx, "node-local-dns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.ObservedGeneration < ds.Generation || ds.Status.UpdatedNumberScheduled != 1 || ds.Status.NumberReady != 1 {
			return fmt.Errorf("node-local-dns not rolled out: %d updated, %d ready", ds.Status.UpdatedNumberScheduled, ds.Status.NumberReady)
		}
		if r := node.Query(ctx, net.JoinHostPort(NodeLocalIP, "53"), "kubernetes.default.svc.cluster.local.", 200*time.Millisecond); !r.Up {
			return fmt.Errorf("the new cache does not answer: %s", r.Detail)
		}
		return nil
	})
	took := time.Since(start)
	close(done)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, libc := range []string{"glibc", "musl"} {
		tl := tallies[libc]
		t.Logf("rolling restart of node-local-dns (%s until the new cache answered), %s: %d lookups, %d failed, %d over 500 ms, worst %.0f ms", took.Round(time.Millisecond), libc, tl.n, tl.failed, tl.slow, tl.worst)
		if tl.failed > 0 {
			t.Errorf("%s: %d of %d lookups failed during the cache's rolling restart (first: %s)", libc, tl.failed, tl.n, tl.firstFail)
		}
		if tl.n < 300 {
			t.Errorf("%s: only %d lookups during the restart", libc, tl.n)
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %d | %d | %d | %.0f ms |", c.ProxyMode, libc, took.Round(100*time.Millisecond), tl.n, tl.failed, tl.slow, tl.worst))
	}
	return "\nRolling restart of the cache's DaemonSet under a steady lookup load (nodelocal profile, `" + name + "` back to back):\n\n" +
		"| kube-proxy | libc | until the new cache answered | lookups | failed | over 500 ms | worst |\n|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
}

// otherAddress runs the platform's cache at another address than the
// policy's (AKS LocalDNS's 169.254.10.11) with the policy's gone: the agent
// covers the policy's address and names the other in its Node condition,
// and dnstune report says which address to set. Then it puts the policy's
// cache back.
func otherAddress(t *testing.T, ctx context.Context, c *Cluster) {
	t.Helper()
	// The policy's cache goes first: both declare host ports 53 and 9253
	// (hostNetwork), and the scheduler places one pod per host port (AKS
	// says not to run node-local-dns beside LocalDNS either).
	if err := c.DeleteNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	if err := removeCacheFromHost(theNodeCache); err != nil {
		t.Fatal(err)
	}
	if err := c.InstallOtherNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	waitCovering(t, 1)
	if err := framework.Eventually(20*time.Second, 250*time.Millisecond, func() error {
		n, err := c.Clientset.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == node.ConditionType && cond.Reason == node.ReasonCovered && strings.Contains(cond.Message, OtherNodeCache.ip+" (AKS LocalDNS (pod traffic))") {
				t.Logf("Node condition with the cache at another address: %s %s: %s", cond.Status, cond.Reason, cond.Message)
				return nil
			}
		}
		return fmt.Errorf("the Node condition is not Covered naming %s as answering", OtherNodeCache.ip)
	}); err != nil {
		t.Fatal(err)
	}
	checkReportCoverage(t, c, "AKS LocalDNS (pod traffic) answers at "+OtherNodeCache.ip+" on 1/1 nodes; set nodeLocalDNS: "+OtherNodeCache.ip, "answers on 0/1 nodes")
	agentStopsWhileCovering(t, ctx, c)
	if err := c.DeleteOtherNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.InstallNodeCache(ctx); err != nil {
		t.Fatal(err)
	}
	waitCovering(t, 0)
	waitNodeLocalUp(t, c, 1)
}

// agentStopsWhileCovering deletes the node agent's DaemonSet while the
// agent covers for a cache the node does not have (its address on lo, its
// sockets on port 53 there): when its pod is gone, so are they. Then the
// install is applied again and the agent covers again.
func agentStopsWhileCovering(t *testing.T, ctx context.Context, c *Cluster) {
	t.Helper()
	if !loHolds(t, NodeLocalIP) || !boundAt(t, NodeLocalIP, 53) {
		t.Fatalf("covering with no cache on the node, yet lo does not hold %s or nothing is bound at %s:53", NodeLocalIP, NodeLocalIP)
	}
	sh(t, c, "kubectl -n dnstune-system delete daemonset dnstune-node --wait=true --timeout=60s")
	if err := c.waitPodsGone(ctx, "dnstune-system", "app.kubernetes.io/component=node", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if loHolds(t, NodeLocalIP) {
		t.Errorf("the node agent stopped while covering and left %s on lo", NodeLocalIP)
	}
	if boundAt(t, NodeLocalIP, 53) {
		t.Errorf("the node agent stopped while covering and left a socket bound at %s:53", NodeLocalIP)
	}
	t.Logf("the node agent stopped while covering: lo no longer holds %s, nothing is bound at %s:53", NodeLocalIP, NodeLocalIP)
	sh(t, c, InstallCommand)
	if err := c.WaitDaemonSetReady(ctx, "dnstune-system", "dnstune-node", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitCovering(t, 1)
}

// boundAt says whether a UDP socket of the node's network namespace is
// bound, or a TCP one listens, at addr:port (/proc/net/udp and tcp, the
// address in little-endian hex).
func boundAt(t *testing.T, addr string, port int) bool {
	t.Helper()
	ip := net.ParseIP(addr).To4()
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port)
	for _, f := range []string{"/proc/net/udp", "/proc/net/tcp"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// UDP: bound; TCP: listening (state 0A), not a closed
			// connection's TIME_WAIT.
			if fields := strings.Fields(line); len(fields) > 3 && fields[1] == local && (f == "/proc/net/udp" || fields[3] == "0A") {
				return true
			}
		}
	}
	return false
}

// checkCovered: while the node agent covers for the cache, every pod
// pointed at it resolves (the musl pod with the cache alone too) without
// waiting out a timeout first: a lookup that waited timeout:1 takes at
// least 1,000 ms; a covered one takes what a plain pod's does (a few ms).
func checkCovered(t *testing.T, state string, got map[string]lookupOutcome) {
	t.Helper()
	for k, l := range got {
		if strings.HasPrefix(k, "e2e-plain/glibc") || strings.HasPrefix(k, "e2e-plain/musl ") {
			continue // plain pods: the reference
		}
		if !l.ok || l.ms >= 500 {
			t.Errorf("%s, covered: %s: ok %v after %.0f ms (%s); want an answer without a timeout waited", state, k, l.ok, l.ms, l.answer)
		}
	}
}

// checkReportCoverage runs dnstune report -A and checks its coverage
// lines (the summary, a nodelocal pod listed on a node without a cache, the
// advice): each of want.
func checkReportCoverage(t *testing.T, c *Cluster, want ...string) {
	t.Helper()
	out, err := exec.Command(c.Dnstune, "report", "-A", "--kubeconfig", c.Kubeconfig).Output() // #nosec G204 -- the binary under test
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 2) {
		t.Fatalf("dnstune report -A: %v: %s", err, out)
	}
	text := string(out)
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("dnstune report -A says:\n%s\nwant %q in it", text, w)
		}
	}
	if i := strings.Index(text, "node-local DNS cache"); i >= 0 {
		t.Logf("dnstune report -A, coverage:\n%s", text[i:])
	}
}

// loHolds says whether lo holds addr (the cover's address).
func loHolds(t *testing.T, addr string) bool {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := lo.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if strings.HasPrefix(a.String(), addr+"/") {
			return true
		}
	}
	return false
}

// waitCovering waits until the node agent exports
// dnstune_node_nodelocal_covering = want for the cache's address (absent
// counts as 0): two failed probes (5 s apart, the second 1 s after the
// first) and a scrape.
func waitCovering(t *testing.T, want float64) {
	t.Helper()
	if err := framework.Eventually(20*time.Second, 100*time.Millisecond, func() error {
		text, err := framework.Scrape("http://" + net.JoinHostPort(NodeIP, "9741") + "/metrics")
		if err != nil {
			return err
		}
		v, _ := metric(t, text, "dnstune_node_nodelocal_covering", map[string]string{"address": NodeLocalIP})
		if v != want {
			return fmt.Errorf("dnstune_node_nodelocal_covering{address=%q} = %v, want %v", NodeLocalIP, v, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitNodeCondition waits until the Node carries the agent's condition
// with status and reason.
func waitNodeCondition(t *testing.T, ctx context.Context, c *Cluster, status corev1.ConditionStatus, reason string) {
	t.Helper()
	if err := framework.Eventually(20*time.Second, 250*time.Millisecond, func() error {
		n, err := c.Clientset.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == node.ConditionType {
				if cond.Status != status || cond.Reason != reason {
					return fmt.Errorf("condition %s is %s %s (%s), want %s %s", node.ConditionType, cond.Status, cond.Reason, cond.Message, status, reason)
				}
				t.Logf("Node condition %s %s %s: %s", cond.Type, cond.Status, cond.Reason, cond.Message)
				return nil
			}
		}
		return fmt.Errorf("node %s has no %s condition", NodeName, node.ConditionType)
	}); err != nil {
		t.Fatal(err)
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
