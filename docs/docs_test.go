// Package docs holds the tests that keep the documentation true to the
// product: what the docs say of ports, metric names and benchmark sections
// is read from the docs and checked against the code and the chart.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/node"
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
	for _, dir := range []string{"webhook", "internal", "cmd"} {
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
