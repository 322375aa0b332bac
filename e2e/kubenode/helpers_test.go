package kubenode

import (
	"slices"
	"testing"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/internal/resolvconf"
)

// sh runs a shell command line as a user types it (Cluster.Shell) and
// fails t on error.
func sh(t *testing.T, c *Cluster, line string) string {
	t.Helper()
	out, err := c.Shell(line)
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

// sameResolvConf compares nameservers and searches in order and options as
// a set (kubelet merges options through a map: their order varies).
func sameResolvConf(got, want resolvconf.Config) bool {
	a, b := slices.Clone(got.Options), slices.Clone(want.Options)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(got.Nameservers, want.Nameservers) && slices.Equal(got.Searches, want.Searches) && slices.Equal(a, b)
}

// metric is the sum of a metric's samples with these labels in a scrape.
func metric(t *testing.T, text, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	m, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	return m.Value(name, labels)
}
