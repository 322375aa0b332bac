//go:build e2e

package kubenode

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
)

// cluster is the real node every test of this package runs on.
var cluster *Cluster

func TestMain(m *testing.M) {
	framework.QuietControllerRuntime()
	if reason := SkipReason(); reason != "" {
		fmt.Printf("kubenode: SKIP every real-node test: %s\n", reason)
		os.Exit(m.Run()) // each test skips with the reason
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	start := time.Now()
	var err error
	// DNSTUNE_PROXY_MODE picks kube-proxy's mode (make e2e runs the suite
	// once per mode); iptables when unset.
	cluster, err = Start(ctx, Options{ServiceNamespaces: []string{"e2e-enabled", "e2e-plain", nodeLocalNS}, ProxyMode: os.Getenv("DNSTUNE_PROXY_MODE"), Logf: func(f string, a ...any) { fmt.Printf("kubenode: "+f+"\n", a...) }})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubenode: failed to start: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("kubenode: control plane and node ready, kube-proxy in %s mode, in %s (files in %s)\n", cluster.ProxyMode, time.Since(start).Round(time.Millisecond), cluster.Dir)
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "kubenode: failed; log tails follow\n%s", cluster.Tails(60))
	}
	if err := cluster.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kubenode: teardown: %v\n", err)
		code = 1
	} else {
		fmt.Println("kubenode: host left as found (sysctls, links, addresses, cgroup folders, mounts, nft and iptables rules, conntrack entries)")
	}
	if code == 0 {
		_ = os.RemoveAll(cluster.Dir)
	}
	os.Exit(code)
}

// need skips t when there is no real node here, saying why.
func need(t *testing.T) *Cluster {
	t.Helper()
	if cluster == nil {
		t.Skipf("no real node: %s", SkipReason())
	}
	return cluster
}

func TestNodeSmoke(t *testing.T) {
	c := need(t)
	t.Logf("node up: %s", c.Dir)
}
