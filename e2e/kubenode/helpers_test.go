//go:build e2e

package kubenode

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/resolvconf"
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

// kubeDNSMetric sums a metric over every CoreDNS pod behind kube-dns (0
// where a pod has none yet).
func kubeDNSMetric(t *testing.T, c *Cluster, name string, labels map[string]string) float64 {
	t.Helper()
	texts, err := c.KubeDNSMetrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, text := range texts {
		v, _ := metric(t, text, name, labels)
		sum += v
	}
	return sum
}

// lookupOutcome is one line of the resolve client: getaddrinfo's result, its
// answer (an address, or the error text) and its wall time.
type lookupOutcome struct {
	ok     bool
	answer string
	ms     float64
}

// lookup runs the resolve client (resolve-glibc or resolve-musl) for one name
// in a running pod.
func lookup(t *testing.T, c *Cluster, ns, pod, binary, name string) lookupOutcome {
	t.Helper()
	out, err := c.Exec(ns, pod, "/usr/local/bin/"+binary, name)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) < 4 || f[0] != name || (f[1] != "ok" && f[1] != "fail") {
		t.Fatalf("%s: unexpected output %q", binary, out)
	}
	ms, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		t.Fatalf("%s: unexpected time in %q", binary, out)
	}
	return lookupOutcome{ok: f[1] == "ok", answer: strings.Join(f[3:], " "), ms: ms}
}

// killContainer SIGKILLs, through containerd (as the OOM killer or a crash
// would end it: kubelet sees it die), the running container named container
// of the one pod selector matches in ns, and returns that pod's name and the
// container's restart count before the kill.
func killContainer(t *testing.T, ctx context.Context, c *Cluster, ns, selector, container string) (string, int32) {
	t.Helper()
	pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %s in %s: %v %v", selector, ns, err, pods)
	}
	pod := pods.Items[0]
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name != container || s.State.Running == nil {
			continue
		}
		id := strings.TrimPrefix(s.ContainerID, "containerd://")
		if out, err := c.AnchorCommand("ctr", "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).CombinedOutput(); err != nil {
			t.Fatalf("kill container %s of %s/%s: %v: %s", container, ns, pod.Name, err, out)
		}
		return pod.Name, s.RestartCount
	}
	t.Fatalf("no running container %s in %s/%s", container, ns, pod.Name)
	return "", 0
}
