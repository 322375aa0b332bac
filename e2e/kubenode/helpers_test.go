package kubenode

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

func scrape(url string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// warnings collects the admission warnings a client receives.
type warnings struct {
	mu  sync.Mutex
	all []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all = append(w.all, text)
}

func (w *warnings) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.all, "\n")
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
