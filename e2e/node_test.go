//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

const arpHeader = "entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n"

func arpCache(entries, fulls int) string {
	row := fmt.Sprintf("%08x 00000001 00000000 00000000 00000004 00000000 00000000 00000000 00000000 00000071 00000000 00000000 %08x\n", entries, fulls)
	return arpHeader + row + row
}

// TestNodeMonitorEvents runs the real `dnstune node monitor` with the node
// agent's RBAC from the chart (templates/node.yaml) (a ServiceAccount token, not admin) over a
// fake /proc, lowers a threshold and overflows the table, and finds the
// Events on the Node in the real apiserver.
func TestNodeMonitorEvents(t *testing.T) {
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	data, err := framework.Render("--show-only", "templates/node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(ctx, t, data, func(kind string) bool { return !realKinds[kind] })
	_, kubeconfig := saClient(ctx, t, "dnstune-node")

	proc := t.TempDir()
	thresh := filepath.Join(proc, "sys/net/ipv4/neigh/default")
	stat := filepath.Join(proc, "net/stat")
	for _, d := range []string{thresh, stat} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range []string{"8192", "32768", "65536"} {
		write(filepath.Join(thresh, fmt.Sprintf("gc_thresh%d", i+1)), v+"\n")
	}
	write(filepath.Join(stat, "arp_cache"), arpCache(900, 3))

	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	node := "e2e-node-" + fmt.Sprint(time.Now().UnixNano()%100000)
	p, err := framework.StartProcess("node-monitor", filepath.Join(env.Dir, "node-monitor.log"), nil, env.Dnstune,
		"node", "monitor", "--proc-root", proc, "--interval", "200ms", "--ipv6=false",
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port), "--kubeconfig", kubeconfig, "--node-name", node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path string) (string, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
		}
		return string(b), nil
	}
	eventually(t, 20*time.Second, func() error { _, err := get("/readyz"); return err })

	// Someone lowers gc_thresh3; the table overflows.
	write(filepath.Join(thresh, "gc_thresh3"), "1024\n")
	write(filepath.Join(stat, "arp_cache"), arpCache(1024, 40))

	eventually(t, 30*time.Second, func() error {
		var events corev1.EventList
		if err := env.Client.List(ctx, &events, client.InNamespace("default")); err != nil {
			return err
		}
		seen := map[string]string{}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node {
				seen[e.Reason] = e.Message
			}
		}
		if !strings.Contains(seen["NeighborTableOverflow"], "table_fulls 6 -> 80") || !strings.Contains(seen["NeighborThresholdDrift"], "8192,32768,1024") {
			return fmt.Errorf("events on node %s: %v", node, seen)
		}
		return nil
	})
	metrics, err := get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`dnstune_node_neighbor_overflows_detected_total{family="ipv4"} 1`,
		`dnstune_node_neighbor_threshold_drift{family="ipv4"} 1`,
		`dnstune_node_neighbor_fill_ratio{family="ipv4"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
