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
