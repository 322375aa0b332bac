// Command demo is `make demo`. As root, on a machine that can run a real
// node (e2e/kubenode), it installs dnstune from manifests/install.yaml with its
// own image onto a real kubelet + containerd node and shows each pod's
// /etc/resolv.conf read from its running container. Otherwise it starts a
// real local control plane and the dnstune webhook as a process, and shows
// the resolv.conf kubelet would write, rendered by dnstune's renderer,
// saying why. DEMO_KEEP=1 keeps it running.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/kubenode"
	"github.com/dnstune/dnstune/e2e/resolvconf"
)

func main() {
	framework.QuietControllerRuntime()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	reason := kubenode.SkipReason()
	if reason == "" {
		return runOnNode(ctx, start)
	}
	fmt.Printf("· no real node here (%s):\n  the webhook runs as a process and resolv.conf is rendered as kubelet would write it\n", reason)
	policy, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "examples", "policy.yaml"))
	if err != nil {
		return err
	}
	env, err := framework.Start(ctx, framework.Options{Policy: string(policy), Logf: func(f string, a ...any) { fmt.Printf("· "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer func() {
		if os.Getenv("DEMO_KEEP") == "" {
			env.Stop()
			_ = os.RemoveAll(env.Dir)
		}
	}()
	fmt.Printf("· control plane (etcd, kube-apiserver, kube-controller-manager v1.37) and webhook up in %s\n\n", time.Since(start).Round(100*time.Millisecond))

	for _, ns := range []struct{ name, mode string }{{"shop", "enabled"}, {"trial", "audit"}} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: map[string]string{"dnstune.io/inject": ns.mode}}}); err != nil {
			return err
		}
		if err := env.Client.Create(ctx, deployment(ns.name)); err != nil {
			return err
		}
		fmt.Printf("$ kubectl label namespace %s dnstune.io/inject=%s && kubectl -n %s create deployment checkout ...\n", ns.name, ns.mode, ns.name)
	}
	cluster := resolvconf.Cluster{DNS: []string{framework.KubeDNSIP}, Domain: "cluster.local", Host: resolvconf.Parse("nameserver 192.0.2.53\n")}
	for _, ns := range []string{"shop", "trial"} {
		pod, err := firstPod(ctx, env.Client, ns)
		if err != nil {
			return err
		}
		before := pod.DeepCopy()
		before.Spec.DNSConfig = deployment(ns).Spec.Template.Spec.DNSConfig
		before.Spec.DNSPolicy = deployment(ns).Spec.Template.Spec.DNSPolicy
		fmt.Printf("\n== namespace %s (dnstune.io/inject=%s): pod %s, created by the ReplicaSet controller ==\n", ns, map[string]string{"shop": "enabled", "trial": "audit"}[ns], pod.Name)
		sideBySide("/etc/resolv.conf kubelet would write WITHOUT dnstune", resolvconf.ForPod(before, ns, cluster).String(),
			"WITH dnstune (profile "+orNone(pod.Annotations["dnstune.io/profile"])+")", resolvconf.ForPod(pod, ns, cluster).String())
		stored, _ := json.Marshal(struct {
			DNSPolicy corev1.DNSPolicy     `json:"dnsPolicy"`
			DNSConfig *corev1.PodDNSConfig `json:"dnsConfig"`
		}{pod.Spec.DNSPolicy, pod.Spec.DNSConfig})
		fmt.Printf("pod spec as created: %s\n", stored)
	}

	// In audit mode the user who creates a pod sees a warning. Show it the
	// way kubectl would, with a server-side dry run of the same pod.
	w := &framework.Warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
	if err != nil {
		return err
	}
	tmpl := deployment("trial").Spec.Template
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "checkout-manual", Namespace: "trial", Labels: tmpl.Labels}, Spec: tmpl.Spec}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		return err
	}
	fmt.Println("\n$ kubectl -n trial run checkout-manual ... --dry-run=server")
	for _, m := range w.Messages() {
		fmt.Println("Warning: " + m)
	}
	var audited int
	for _, line := range strings.Split(framework.TailFile(env.AuditLog, 5000), "\n") {
		if strings.Contains(line, `"namespace":"trial"`) && strings.Contains(line, "pods.dnstune.io/would-mutate") {
			audited++
		}
	}
	fmt.Printf("\napiserver audit log: %d pod creation(s) in namespace trial carry the annotation pods.dnstune.io/would-mutate\n", audited)
	metrics, _ := env.Webhook.Metrics()
	fmt.Println("\nwebhook metrics:")
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "dnstune_mutations_total") || strings.HasPrefix(l, "dnstune_audit_findings_total") {
			fmt.Println("  " + l)
		}
	}
	fmt.Printf("\ndemo finished in %s\n", time.Since(start).Round(100*time.Millisecond))
	if os.Getenv("DEMO_KEEP") != "" {
		fmt.Printf("\nDEMO_KEEP=1: still running. Try:\n  export KUBECONFIG=%s\n  kubectl get pods -A -o wide\nPress Ctrl-C to stop everything.\n", env.Kubeconfig)
		<-ctx.Done()
		env.Stop()
		_ = os.RemoveAll(env.Dir)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none: audit only"
	}
	return s
}

func deployment(ns string) *appsv1.Deployment {
	labels := map[string]string{"app": "checkout"}
	replicas := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "ghcr.io/example/checkout:1.4.2"}}},
			},
		},
	}
}

func firstPod(ctx context.Context, c client.Client, ns string) (*corev1.Pod, error) {
	var pods corev1.PodList
	err := framework.Eventually(60*time.Second, 200*time.Millisecond, func() error {
		if err := c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return fmt.Errorf("no pod in %s yet", ns)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pods.Items[0], nil
}

func sideBySide(leftTitle, left, rightTitle, right string) {
	l, r := strings.Split(strings.TrimRight(left, "\n"), "\n"), strings.Split(strings.TrimRight(right, "\n"), "\n")
	width := len(leftTitle)
	for _, s := range l {
		width = max(width, len(s))
	}
	fmt.Printf("%-*s │ %s\n", width, leftTitle, rightTitle)
	fmt.Printf("%s─┼─%s\n", strings.Repeat("─", width), strings.Repeat("─", max(len(rightTitle), 40)))
	for i := range max(len(l), len(r)) {
		var a, b string
		if i < len(l) {
			a = l[i]
		}
		if i < len(r) {
			b = r[i]
		}
		fmt.Printf("%-*s │ %s\n", width, a, b)
	}
}
