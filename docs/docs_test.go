// Package docs holds the tests that keep the documentation true to the
// product: what the docs say of ports, metric names and benchmark sections
// is read from the docs and checked against the code and the chart.
package docs

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/node"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path)) // #nosec G304 -- the repository's own files
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goFiles calls f with the text of every non-test Go file under dir.
func goFiles(t *testing.T, dir string, f func(path, text string)) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join("..", dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p) // #nosec G304 -- the repository's own files
		f(p, string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every bench that writes a marked section of BENCHMARKS.md has it there,
// whole: a docs edit that drops one (as 7c54bd1 dropped the scale
// section) fails here.
func TestBenchmarkSectionsPresent(t *testing.T) {
	doc := read(t, "BENCHMARKS.md")
	marker := regexp.MustCompile(`(beginMarker|endMarker)\s*=\s*"(<!-- [^"]+ -->)"`)
	var benches int
	goFiles(t, "e2e/bench", func(path, text string) {
		m := marker.FindAllStringSubmatch(text, -1)
		if len(m) == 0 {
			return
		}
		if len(m) != 2 || m[0][1] != "beginMarker" || m[1][1] != "endMarker" {
			t.Errorf("%s: want one beginMarker and one endMarker, found %v", path, m)
			return
		}
		benches++
		begin, end := strings.Index(doc, m[0][2]), strings.Index(doc, m[1][2])
		switch {
		case begin < 0 || end < 0:
			t.Errorf("BENCHMARKS.md lacks %s's section (%s … %s): run make bench, or restore it from git", path, m[0][2], m[1][2])
		case end < begin || strings.Count(doc[begin:end], "\n") < 5:
			t.Errorf("BENCHMARKS.md's section of %s is out of order or nearly empty", path)
		}
	})
	if benches < 3 {
		t.Errorf("found %d benches with a marked section, want the webhooks', the backends' and the scale bench's", benches)
	}
}

// docs/metrics.md names each port the binary listens on by default and the
// chart opens, and every metric the binary exports, and no other.
func TestMetricsDocMatchesBinaryAndChart(t *testing.T) {
	doc := read(t, "docs/metrics.md")
	for _, c := range []struct{ who, def, chartFile string }{
		{"Webhook", daemon.DefaultMetricsBindAddress, "manifests/dnstune/templates/webhook-deployment.yaml"},
		{"Node agent", node.DefaultMetricsBindAddress, "manifests/dnstune/templates/node.yaml"},
	} {
		if want := c.who + " (`" + c.def + "/metrics`"; !strings.Contains(doc, want) {
			t.Errorf("docs/metrics.md does not say %q (the binary's default)", want)
		}
		port := strings.TrimPrefix(c.def, ":")
		chart := read(t, c.chartFile)
		if !strings.Contains(chart, "--metrics-bind-address=:"+port) || !regexp.MustCompile(`name: metrics, containerPort: `+port+`\b`).MatchString(chart) {
			t.Errorf("%s does not serve metrics on %s, the binary's default", c.chartFile, port)
		}
	}

	name := regexp.MustCompile(`dnstune_[a-z_]+[a-z]`)
	var code []string
	for _, dir := range []string{"webhook", "admissionpolicy", "node", "internal", "cmd"} {
		goFiles(t, dir, func(_, text string) {
			for _, lit := range regexp.MustCompile(`"dnstune_[a-z_]+"`).FindAllString(text, -1) {
				code = append(code, strings.Trim(lit, `"`))
			}
		})
	}
	code = slices.Compact(slices.Sorted(slices.Values(code)))
	documented := slices.Compact(slices.Sorted(slices.Values(name.FindAllString(doc, -1))))
	if len(code) < 20 {
		t.Fatalf("found %d metric names in the code: the search is broken", len(code))
	}
	for _, n := range code {
		if !slices.Contains(documented, n) {
			t.Errorf("%s is exported but docs/metrics.md does not list it", n)
		}
	}
	for _, n := range documented {
		if !slices.Contains(code, n) {
			t.Errorf("docs/metrics.md lists %s, which no binary exports", n)
		}
	}
}

// The versions dnstune claims are the versions make test runs: the
// Makefile's matrix (MATRIX_MINORS, COMPILED_MINORS), each minor's
// kube-apiserver patch (hack/tools/apiserver-<minor>/go.mod) and the suite's
// own (hack/build-tools.sh), written as one table in the README and
// docs/install.md; the chart's kubeVersion starts at the oldest minor, and
// the admission-policy floor (the chart's refusal, the binary's) at the
// oldest compiled one.
func TestCompatibilityClaimsAgree(t *testing.T) {
	mk := read(t, "Makefile")
	list := func(name string) []string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(.+)$`).FindStringSubmatch(mk)
		if m == nil {
			t.Fatalf("the Makefile has no %s", name)
		}
		return strings.Fields(m[1])
	}
	minors, compiled := list("MATRIX_MINORS"), list("COMPILED_MINORS")
	suite := regexp.MustCompile(`(?m)^KUBE_VERSION=(v[0-9.]+)$`).FindStringSubmatch(read(t, "hack/build-tools.sh"))
	if suite == nil {
		t.Fatal("hack/build-tools.sh has no KUBE_VERSION")
	}
	patch := map[string][]string{} // minor -> tested patches
	for _, m := range minors {
		v := regexp.MustCompile(`k8s.io/kubernetes (v[0-9.]+)`).FindStringSubmatch(read(t, "hack/tools/apiserver-"+m+"/go.mod"))
		if v == nil || !strings.HasPrefix(v[1], "v"+m+".") {
			t.Fatalf("hack/tools/apiserver-%s/go.mod builds %v, not a %s patch", m, v, m)
		}
		patch[m] = append(patch[m], v[1])
	}
	sm := suite[1][1:strings.LastIndex(suite[1], ".")]
	patch[sm] = append(patch[sm], suite[1])
	tested := func(from []string) string {
		var vs []string
		for _, m := range from {
			vs = append(vs, patch[m]...)
		}
		slices.SortFunc(vs, func(a, b string) int { return semver(a) - semver(b) })
		return strings.Join(slices.Compact(vs), ", ")
	}
	webhookRow := "| webhook (default) | ≥ " + minors[0] + " "
	policyRow := "| admission-policy | ≥ " + compiled[0] + " "
	for _, doc := range []string{"README.md", "docs/install.md"} {
		text := read(t, doc)
		i, j := strings.Index(text, "<!-- compatibility:"), strings.Index(text, "<!-- /compatibility -->")
		if i < 0 || j < i {
			t.Errorf("%s has no compatibility table", doc)
			continue
		}
		table := text[i:j]
		for _, row := range []struct{ start, versions string }{{webhookRow, tested(minors)}, {policyRow, tested(compiled)}} {
			line := ""
			for _, l := range strings.Split(table, "\n") {
				if strings.HasPrefix(l, row.start) {
					line = l
				}
			}
			if !strings.HasSuffix(line, "| "+row.versions+" |") {
				t.Errorf("%s: the row starting %q is %q; want it to end with the tested versions %q", doc, row.start, line, row.versions)
			}
		}
	}
	if want := `kubeVersion: ">=` + minors[0] + `.0-0"`; !strings.Contains(read(t, "manifests/dnstune/Chart.yaml"), want) {
		t.Errorf("manifests/dnstune/Chart.yaml does not say %s", want)
	}
	if want := `semverCompare ">=` + compiled[0] + `.0-0"`; !strings.Contains(read(t, "manifests/dnstune/templates/webhook-deployment.yaml"), want) {
		t.Errorf("the chart's admission-policy refusal does not test %s", want)
	}
	for _, f := range []string{"manifests/dnstune/templates/webhook-deployment.yaml", "admissionpolicy/served.go"} {
		if !strings.Contains(read(t, f), "which Kubernetes serves from "+compiled[0]) {
			t.Errorf("%s's refusal does not name %s as the floor", f, compiled[0])
		}
	}
}

// semver orders v1.MINOR.PATCH.
func semver(v string) int {
	var major, minor, patch int
	_, _ = fmt.Sscanf(v, "v%d.%d.%d", &major, &minor, &patch)
	return major*1_000_000 + minor*1000 + patch
}

// make demo builds only what it starts: the control plane and kube-proxy
// (the real node's Services), none of the version matrix's kube-apiservers
// (make -n: nothing is run).
func TestDemoBuildsOnlyWhatItRuns(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	cmd := exec.Command("make", "-n", "demo")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n demo: %v\n%s", err, out)
	}
	for _, unwanted := range []string{"apiserver-1.", "matrix-tools"} {
		if strings.Contains(string(out), unwanted) {
			t.Errorf("make demo would build %s, which it never starts:\n%s", unwanted, out)
		}
	}
	for _, wanted := range []string{"hack/build-tools.sh\n", "hack/build-tools.sh kube-proxy\n"} {
		if !strings.Contains(string(out), wanted) {
			t.Errorf("make demo does not run %q, and it starts what that builds:\n%s", strings.TrimSpace(wanted), out)
		}
	}
}

// EFFECT.md's real-node tables hold each kube-proxy mode make e2e runs
// the node under, row for row: the resolver table, the node-local queries,
// its faults and the NetworkPolicy cases.
func TestEffectRealNodeTablesCoverEveryProxyMode(t *testing.T) {
	effect := read(t, "EFFECT.md")
	start := strings.Index(effect, "<!-- on a real node:")
	end := strings.Index(effect, "<!-- race:")
	if start < 0 || end < start {
		t.Fatal("EFFECT.md has lost its real-node section (<!-- on a real node: ... --> before <!-- race: ... -->)")
	}
	section := effect[start:end]
	m := regexp.MustCompile(`(?m)^PROXY_MODES := (.+)$`).FindStringSubmatch(read(t, "Makefile"))
	if m == nil {
		t.Fatal("the Makefile has no PROXY_MODES")
	}
	modes := strings.Fields(m[1])
	if len(modes) != 2 {
		t.Fatalf("PROXY_MODES = %v; the suite runs under iptables and nftables", modes)
	}
	rows := map[string]int{}
	for _, line := range strings.Split(section, "\n") {
		for _, mode := range modes {
			if strings.HasPrefix(line, "| "+mode+" |") {
				rows[mode]++
			}
		}
	}
	for _, mode := range modes {
		// 20 lookups, 12 through the cache, 5 fault states, 2 pods created
		// during the outage, 2 libcs through a rolling restart, 8
		// NetworkPolicy cases.
		if rows[mode] != 49 {
			t.Errorf("EFFECT.md's real-node section has %d rows measured under kube-proxy %s mode, want 49 (resolvers 20, node-local 12, faults 5, created during the outage 2, rolling restart 2, NetworkPolicy 8): paste bin/node-{resolvers,nodelocal,netpol}-%s.md", rows[mode], mode, mode)
		}
	}
}
