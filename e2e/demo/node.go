package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/kubenode"
)

// runOnNode is the demo on a real node (root): dnstune's own image installed
// from manifests/install.yaml as the README says, and each pod's /etc/resolv.conf
// read from its running container, as the real kubelet wrote it.
func runOnNode(ctx context.Context, start time.Time) (err error) {
	c, err := kubenode.Start(ctx, kubenode.Options{Logf: func(f string, a ...any) { fmt.Printf("· "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer func() {
		if os.Getenv("DEMO_KEEP") != "" && err == nil {
			fmt.Printf("\nDEMO_KEEP=1: still running. Try:\n  export KUBECONFIG=%s\n  kubectl get pods -A -o wide\nPress Ctrl-C to stop everything.\n", c.Kubeconfig)
			<-ctx.Done()
		}
		serr := c.Stop() //nolint:contextcheck // teardown runs on its own clock, also after Ctrl-C
		if serr == nil {
			fmt.Println("· torn down; the host is as it was (sysctls, links, addresses, cgroup folders, mounts, nft and iptables rules, conntrack entries)")
			_ = os.RemoveAll(c.Dir)
		}
		if err == nil {
			err = serr
		}
	}()
	fmt.Printf("· control plane and a real kubelet v1.37.1 + containerd node up in %s\n\n", time.Since(start).Round(100*time.Millisecond))

	fmt.Println("$ " + kubenode.InstallCommand)
	out, err := c.Shell(kubenode.InstallCommand)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	fmt.Printf("  (%d objects configured)\n", strings.Count(out, "\n"))
	if err := c.WaitDeploymentReady(ctx, "dnstune-system", "dnstune-webhook", 3*time.Minute); err != nil {
		return err
	}
	if err := c.WaitDaemonSetReady(ctx, "dnstune-system", "dnstune-node", 3*time.Minute); err != nil {
		return err
	}
	pods, _ := c.Shell("kubectl -n dnstune-system get pods -o wide")
	fmt.Printf("\n$ kubectl -n dnstune-system get pods -o wide\n%s", pods)

	namespaces := []struct{ name, inject string }{{"before", ""}, {"shop", "enabled"}, {"trial", "audit"}}
	for _, ns := range namespaces {
		labels := map[string]string{}
		if ns.inject != "" {
			labels["dnstune.io/inject"] = ns.inject
		}
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: labels}}); err != nil {
			return err
		}
		if err := c.Client.Create(ctx, kubenode.ClientDeployment(ns.name, "checkout", kubenode.GlibcClientImage)); err != nil {
			return err
		}
	}
	fmt.Println("\n$ kubectl label namespace shop dnstune.io/inject=enabled; kubectl label namespace trial dnstune.io/inject=audit")
	fmt.Println("$ kubectl -n {before,shop,trial} create deployment checkout ...   # namespace before: not opted in")
	text := map[string]string{}
	for _, ns := range namespaces {
		if err := c.WaitDeploymentReady(ctx, ns.name, "checkout", 2*time.Minute); err != nil {
			return err
		}
		pod, err := c.RunningPod(ctx, ns.name, "checkout")
		if err != nil {
			return err
		}
		_, t, err := c.ReadResolvConf(pod)
		if err != nil {
			return err
		}
		text[ns.name] = t
	}
	fmt.Println("\n== /etc/resolv.conf, read with kubectl exec from the running containers (written by the real kubelet) ==")
	sideBySide("namespace before (not opted in)", text["before"], "namespace shop (dnstune.io/inject=enabled)", text["shop"])
	fmt.Printf("\nnamespace trial (dnstune.io/inject=audit): unchanged\n%s", text["trial"])

	w := &framework.Warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	spec := kubenode.ClientDeployment("trial", "checkout", kubenode.GlibcClientImage).Spec.Template.Spec
	if _, err := cs.CoreV1().Pods("trial").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "checkout-manual"}, Spec: spec}, metav1.CreateOptions{DryRun: []string{"All"}}); err != nil {
		return err
	}
	fmt.Println("\n$ kubectl -n trial run checkout-manual ... --dry-run=server")
	for _, m := range w.Messages() {
		fmt.Println("Warning: " + m)
	}

	fmt.Println("\n== the node agent raised this host's neighbour-table thresholds (the init container, privileged, hostNetwork) ==")
	for _, fam := range []string{"ipv4", "ipv6"} {
		for i := 1; i <= 3; i++ {
			k := fmt.Sprintf("net/%s/neigh/default/gc_thresh%d", fam, i)
			now, _ := os.ReadFile("/proc/sys/" + k)
			fmt.Printf("  %-36s %8s -> %s", strings.ReplaceAll(k, "/", "."), c.HostBefore().Sysctls[k], now)
		}
	}
	metrics, err := framework.Scrape("http://" + net.JoinHostPort(kubenode.NodeIP, "9741") + "/metrics")
	if err == nil {
		fmt.Println("\nnode agent metrics (scraped from its pod):")
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "dnstune_node_neighbor_fill_ratio") || strings.HasPrefix(l, "dnstune_node_neighbor_entries") {
				fmt.Println("  " + l)
			}
		}
	}
	if err := nodeLocalDemo(ctx, c); err != nil {
		return err
	}
	fmt.Printf("\ndemo finished in %s (the host's thresholds are put back at teardown)\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// nodeLocalDemo is the nodelocal profile: a namespace pointed at the
// node-local DNS cache, a lookup counted at the cache, then the cache
// deleted and the same lookups, as fast, through the node agent's cover;
// and what dnstune reports.
func nodeLocalDemo(ctx context.Context, c *kubenode.Cluster) error {
	fmt.Println("\n== the nodelocal profile: pods pointed at the node-local DNS cache ==")
	fmt.Println("$ kubectl apply -f node-local-dns.yaml   # NodeLocal DNSCache's DaemonSet, 169.254.20.10")
	if err := c.InstallNodeCache(ctx); err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge", Labels: map[string]string{"dnstune.io/inject": "enabled", "dnstune.io/profile": "nodelocal"}}}
	if err := c.Client.Create(ctx, ns); err != nil {
		return err
	}
	if err := c.Client.Create(ctx, kubenode.ClientDeployment("edge", "checkout", kubenode.GlibcClientImage)); err != nil {
		return err
	}
	fmt.Println("$ kubectl label namespace edge dnstune.io/inject=enabled dnstune.io/profile=nodelocal")
	fmt.Println("$ kubectl -n edge create deployment checkout ...")
	if err := c.WaitDeploymentReady(ctx, "edge", "checkout", 2*time.Minute); err != nil {
		return err
	}
	pod, err := c.RunningPod(ctx, "edge", "checkout")
	if err != nil {
		return err
	}
	_, text, err := c.ReadResolvConf(pod)
	if err != nil {
		return err
	}
	fmt.Printf("\nnamespace edge, /etc/resolv.conf: the cache first, kube-dns after it\n%s", text)
	name := kubenode.ServiceName + "." + kubenode.ServiceNamespace
	lookups := func(what string) error {
		before, _ := cacheQueries()
		var ms []string
		for range 5 {
			out, err := c.Exec("edge", pod.Name, "/usr/local/bin/resolve-glibc", name)
			if err != nil {
				return err
			}
			f := strings.Fields(out)
			if len(f) < 4 || f[1] != "ok" {
				return fmt.Errorf("lookup of %s in edge: %q", name, out)
			}
			ms = append(ms, f[2])
		}
		time.Sleep(100 * time.Millisecond)
		after, up := cacheQueries()
		at := "the cache is gone"
		if up {
			at = fmt.Sprintf("%.0f queries counted at the cache", after-before)
		}
		fmt.Printf("$ kubectl -n edge exec %s -- resolve %s   # 5 times, %s\n  %s ms each; %s\n", pod.Name, name, what, strings.Join(ms, ", "), at)
		return nil
	}
	if err := lookups("the cache running"); err != nil {
		return err
	}
	fmt.Println("\n$ kubectl -n kube-system delete daemonset node-local-dns   # an outage: the cache is gone from the node")
	if err := c.DeleteNodeCache(ctx); err != nil {
		return err
	}
	if err := lookups("no cache: the node agent answers at 169.254.20.10, forwarding to kube-dns"); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // two probes: the verdict and the Node condition
	cond, _ := c.Shell("kubectl get node " + kubenode.NodeName + ` -o jsonpath='{range .status.conditions[?(@.type=="dnstune.io/NodeLocalDNS")]}{.status} {.reason}: {.message}{end}'`)
	fmt.Printf("\n$ kubectl get node %s -o jsonpath=... # the agent's condition\n  %s\n", kubenode.NodeName, cond)
	report, _ := c.Shell(c.Dnstune + " report -A")
	fmt.Printf("\n$ dnstune report -A\n%s", report)
	return nil
}

// cacheQueries is the node-local cache's coredns_dns_requests_total, and
// whether it answered the scrape.
func cacheQueries() (float64, bool) {
	text, err := framework.Scrape(kubenode.NodeLocalMetrics)
	if err != nil {
		return 0, false
	}
	m, err := framework.ParseMetrics(text)
	if err != nil {
		return 0, false
	}
	return m.Value("coredns_dns_requests_total", nil)
}
