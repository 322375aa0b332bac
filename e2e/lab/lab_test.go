//go:build e2e

package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
)

// TestEffect runs a reduced lab and asserts the direction of dnstune's
// effect on a real resolver and a real DNS server.
func TestEffect(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("effect lab skipped: needs root for network namespaces and nft (make test as root runs it)")
	}
	for _, tool := range []string{"ip", "nft", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("effect lab skipped: %s is not installed (make e2e installs nftables when root)", tool)
		}
	}
	coredns := os.Getenv("DNSTUNE_COREDNS")
	if coredns == "" {
		matches, _ := filepath.Glob(filepath.Join(framework.RepoRoot(), "bin", "tools", "coredns-*", "coredns"))
		if len(matches) == 0 {
			t.Fatal("CoreDNS not built: run bash hack/build-tools.sh coredns (make e2e does)")
		}
		coredns = matches[len(matches)-1]
	}
	dir := t.TempDir()
	client, err := BuildClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Dir: dir, CoreDNS: coredns, Client: client, N: 40, Loss: []int{0, 10}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reduced lab (%s):\n%s", rep.Elapsed.Round(time.Second), rep.Table())

	const external = "external FQDN"
	plain, _ := rep.Find("plain", external, 0)
	resilient, _ := rep.Find("resilient", external, 0)
	if !(resilient.QueriesPerLookup < plain.QueriesPerLookup) {
		t.Errorf("external lookup: resilient sent %.1f queries, plain %.1f; want fewer", resilient.QueriesPerLookup, plain.QueriesPerLookup)
	}
	if plain.QueriesPerLookup < 6 {
		t.Errorf("plain ndots:5 external lookup sent %.1f queries; the search-list expansion should give ~8", plain.QueriesPerLookup)
	}
	resilientLoss, _ := rep.Find("resilient", external, 10)
	if resilientLoss.P90 >= 5000 {
		t.Errorf("with 10%% loss, resilient p90 = %.0f ms; want below the plain pod's 5 s timeout", resilientLoss.P90)
	}
	if rep.CachedTried == 0 || rep.CachedWhileDown != rep.CachedTried {
		t.Errorf("nodelocal with the cluster DNS unreachable answered %d of %d cached lookups; want all", rep.CachedWhileDown, rep.CachedTried)
	}
}

// TestConntrackRace runs a reduced race lab under real kube-proxy in both
// modes and asserts what must hold whatever the kernel does: kube-proxy's
// DNAT spread the queries over every CoreDNS endpoint, the node's
// conntrack statistics were read (this kernel has clashres), every query
// the clash client sent is accounted for, and a lookup through the
// node-local cache created no conntrack entry to race on. What the race
// itself did is printed (and written to EFFECT.md by make lab), not
// asserted: that is the kernel's to say.
func TestConntrackRace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("race lab skipped: needs root for network namespaces (make test as root runs it)")
	}
	for _, tool := range []string{"ip", "nft", "iptables", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("race lab skipped: %s is not installed (make lab-deps installs iptables and nftables when root)", tool)
		}
	}
	o := raceOptions(t)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			o := o
			o.Mode, o.Dir, o.Rounds, o.Lookups, o.Logf = mode, t.TempDir(), 300, 100, t.Logf
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			rep, err := RunRace(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("reduced race lab (%s):\n%s", rep.Elapsed.Round(time.Second), rep.Table())
			for i, n := range rep.Answered {
				if n == 0 {
					t.Errorf("CoreDNS endpoint %d answered nothing: kube-proxy's DNAT did not spread the load", i+1)
				}
			}
			for _, c := range rep.Clash {
				if c.Sent != c.Rounds*c.Threads || c.Received > c.Sent || c.Received == 0 {
					t.Errorf("clash, %d threads: %d rounds, %d sent, %d received: inconsistent", c.Threads, c.Rounds, c.Sent, c.Received)
				}
			}
			for _, r := range rep.Resolver {
				if r.Variant == "nodelocal" && (r.Failures > 0 || r.Counters.InsertFailed+r.Counters.ClashRes > 0) {
					t.Errorf("nodelocal: %d failures, counters %+v; the cache's NOTRACK rules should leave nothing to race on", r.Failures, r.Counters)
				}
			}
		})
	}
}

// raceOptions finds or builds every binary the race lab runs.
func raceOptions(t *testing.T) RaceOptions {
	t.Helper()
	root := framework.RepoRoot()
	glob := func(pattern, how string) string {
		m, _ := filepath.Glob(filepath.Join(root, "bin", "tools", pattern))
		if len(m) == 0 {
			t.Fatalf("%s not built: run %s (make e2e does)", pattern, how)
		}
		return m[len(m)-1]
	}
	assets, err := framework.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	client, err := BuildClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	clash, err := BuildClash(dir)
	if err != nil {
		t.Fatal(err)
	}
	return RaceOptions{
		CoreDNS: glob("coredns-*/coredns", "bash hack/build-tools.sh coredns"), Client: client, Clash: clash,
		Etcd: filepath.Join(assets, "etcd"), APIServer: filepath.Join(assets, "kube-apiserver"),
		KubeProxy: glob("kube-proxy-*/kube-proxy", "bash hack/build-tools.sh kube-proxy"),
	}
}
