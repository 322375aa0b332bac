//go:build e2e

package kubenode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/resolvconf"
)

// Namespaces of the resolv.conf checks, one per way a namespace can be.
var workloadNamespaces = []struct {
	name   string
	labels map[string]string
}{
	{"e2e-enabled", map[string]string{"dnstune.io/inject": "enabled"}},
	{"e2e-audit", map[string]string{"dnstune.io/inject": "audit"}},
	{"e2e-nodelocal", map[string]string{"dnstune.io/inject": "enabled", "dnstune.io/profile": "nodelocal"}},
	{"e2e-plain", nil},
}

func TestReadmeCommands(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{InstallCommand, UninstallCommand, HelmInstallCommand, HelmUninstallCommand} {
		if !strings.Contains(string(b), "\n"+cmd+"\n") {
			t.Errorf("README.md does not give the command the real-node test runs:\n  %s", cmd)
		}
	}
}

// TestInstallOnRealNode is the install as a user does it, on the real node,
// step by step; a step that fails stops the ones that build on it.
func TestInstallOnRealNode(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	steps := []struct {
		name string
		f    func(*testing.T, context.Context, *Cluster)
	}{
		{"install", stepInstall},
		{"webhook", stepWebhook},
		{"node-agent", stepNodeAgent},
		{"resolv.conf", stepResolvConf},
		{"resolvers", stepResolvers},
		{"nodelocal", stepNodeLocal},
		{"networkpolicy", stepNetworkPolicy},
		{"faults", stepFaults},
		{"metric-names", stepMetricNames},
		{"uninstall", stepUninstall},
		{"helm-install", stepHelmInstall},
		{"helm-upgrade", stepHelmUpgrade},
		{"helm-uninstall", stepHelmUninstall},
		{"helm-cert-manager", stepHelmCertManager},
		{"cert-manager-manifests", stepCertManagerManifests},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.f(t, ctx, c) }) {
			t.Fatalf("step %s failed; the later steps build on it", s.name)
		}
	}
}

func stepInstall(t *testing.T, ctx context.Context, c *Cluster) {
	out := sh(t, c, InstallCommand)
	t.Logf("%s\n%s", InstallCommand, out)
}

func stepWebhook(t *testing.T, ctx context.Context, c *Cluster) {
	if err := c.WaitDeploymentReady(ctx, "dnstune-system", "dnstune-webhook", 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n dnstune-system get pods -o wide; kubectl -n dnstune-system describe pods | tail -40; kubectl -n dnstune-system logs deploy/dnstune-webhook --tail=30"))
	}
	// The replicas issued their own CA and serving certificate, and filled
	// the caBundle.
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		t.Fatal(err)
	}
	bundle := mwc.Webhooks[0].ClientConfig.CABundle
	roots := x509.NewCertPool()
	if len(bundle) == 0 || !roots.AppendCertsFromPEM(bundle) {
		t.Fatalf("MutatingWebhookConfiguration caBundle not filled: %q", bundle)
	}
	svc := mwc.Webhooks[0].ClientConfig.Service
	if svc == nil || mwc.Webhooks[0].ClientConfig.URL != nil {
		t.Fatalf("the installed webhook must be called through its Service, got %+v", mwc.Webhooks[0].ClientConfig)
	}
	pods, err := c.Clientset.CoreV1().Pods("dnstune-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=webhook"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("%d webhook pods, want 2", len(pods.Items))
	}
	host := svc.Name + "." + svc.Namespace + ".svc"
	for _, p := range pods.Items {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(p.Status.PodIP, "9443"),
			&tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("webhook pod %s (%s) does not present a certificate for %s from the caBundle: %v", p.Name, p.Status.PodIP, host, err)
		}
		_ = conn.Close()
	}
	t.Logf("2 webhook pods Ready, serving certificates for %s verified against the caBundle", host)
	// The apiserver calls the webhook through its Service: a real pod in an
	// opted-in namespace comes back mutated.
	for _, ns := range workloadNamespaces {
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	if err := framework.Eventually(60*time.Second, 500*time.Millisecond, func() error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: "e2e-enabled"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: GlibcClientImage}}},
		}
		if err := c.Client.Create(ctx, pod, client.DryRunAll); err != nil {
			return err
		}
		if pod.Annotations["dnstune.io/profile"] != "resilient" {
			return fmt.Errorf("probe pod not mutated: %v", pod.Annotations)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var admitted float64
	for _, p := range pods.Items {
		text, err := framework.Scrape("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/metrics")
		if err != nil {
			t.Fatalf("scrape webhook pod %s: %v", p.Name, err)
		}
		v, _ := metric(t, text, "dnstune_mutations_total", nil)
		admitted += v
	}
	if admitted < 1 {
		t.Errorf("the webhook pods counted %v mutations; the probe pod was mutated, so at least 1", admitted)
	}
}

// gcTargets is what the install's node agent raises to (manifests/install.yaml
// --gc-thresh); it never lowers, so the expected value is the larger.
var gcTargets = []int{8192, 32768, 65536}

func readSysctl(t *testing.T, k string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + k)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func checkThresholds(t *testing.T, c *Cluster) {
	t.Helper()
	for _, fam := range []string{"ipv4", "ipv6"} {
		for i, target := range gcTargets {
			k := fmt.Sprintf("net/%s/neigh/default/gc_thresh%d", fam, i+1)
			before, _ := strconv.Atoi(c.before.Sysctls[k])
			if got, want := readSysctl(t, k), max(before, target); got != want {
				t.Errorf("host %s = %d, want %d (was %d before the install)", k, got, want, before)
			}
		}
	}
}

func stepNodeAgent(t *testing.T, ctx context.Context, c *Cluster) {
	if err := c.WaitDaemonSetReady(ctx, "dnstune-system", "dnstune-node", 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n dnstune-system describe pods -l app.kubernetes.io/component=node | tail -30"))
	}
	// The init container raised the real host's thresholds.
	checkThresholds(t, c)
	// The monitor's metrics, scraped from its pod (hostNetwork: the node IP).
	text, err := framework.Scrape("http://" + net.JoinHostPort(NodeIP, "9741") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		got, _ := metric(t, text, "dnstune_node_neighbor_gc_thresh", map[string]string{"family": fam, "threshold": "3"})
		if want := float64(max(readSysctl(t, "net/"+fam+"/neigh/default/gc_thresh3"), gcTargets[2])); got != want {
			t.Errorf("dnstune_node_neighbor_gc_thresh{family=%q,threshold=\"3\"} = %v, want %v", fam, got, want)
		}
		if _, ok := metric(t, text, "dnstune_node_neighbor_entries", map[string]string{"family": fam}); !ok {
			t.Errorf("the monitor does not export dnstune_node_neighbor_entries{family=%q}", fam)
		}
	}
}

// expectations per namespace: what the policy's profile gives (the shipped
// chart's values), checked literally, and what our renderer
// (e2e/resolvconf, kubelet's rendering written again) says kubelet writes.
func expectedResolvConf(ns string) resolvconf.Config {
	search := []string{ns + ".svc.cluster.local", "svc.cluster.local", "cluster.local"}
	switch ns {
	case "e2e-enabled":
		return resolvconf.Config{Nameservers: []string{KubeDNSIP}, Searches: search, Options: []string{"ndots:2", "timeout:1", "attempts:3", "single-request-reopen"}}
	case "e2e-nodelocal":
		return resolvconf.Config{Nameservers: []string{"169.254.20.10", KubeDNSIP}, Searches: search, Options: []string{"ndots:2", "timeout:1", "attempts:2"}}
	default: // audit and plain: what kubelet writes without dnstune
		return resolvconf.Config{Nameservers: []string{KubeDNSIP}, Searches: search, Options: []string{"ndots:5"}}
	}
}

func stepResolvConf(t *testing.T, ctx context.Context, c *Cluster) {
	for _, ns := range workloadNamespaces {
		if err := c.Client.Create(ctx, ClientDeployment(ns.name, "client", GlibcClientImage)); err != nil {
			t.Fatal(err)
		}
	}
	// A bare pod in the audit namespace, to see the admission warning.
	w := &framework.Warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dep := ClientDeployment("e2e-audit", "bare", GlibcClientImage)
	if _, err := cs.CoreV1().Pods("e2e-audit").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Spec: dep.Spec.Template.Spec}, metav1.CreateOptions{DryRun: []string{"All"}}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.Messages(), "\n"); !strings.Contains(got, "ndots:2") {
		t.Errorf("audit namespace: admission warnings %q do not say what would change", got)
	}
	cluster := resolvconf.Cluster{DNS: []string{KubeDNSIP}, Domain: "cluster.local", Host: NodeResolvConf}
	for _, ns := range workloadNamespaces {
		if err := c.WaitDeploymentReady(ctx, ns.name, "client", 2*time.Minute); err != nil {
			t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n "+ns.name+" describe pods | tail -30"))
		}
		pod, err := c.RunningPod(ctx, ns.name, "client")
		if err != nil {
			t.Fatal(err)
		}
		got, text, err := c.ReadResolvConf(pod)
		if err != nil {
			t.Fatal(err)
		}
		if want := expectedResolvConf(ns.name); !sameResolvConf(got, want) {
			t.Errorf("%s: the running container's /etc/resolv.conf is\n%s\nwant %+v", ns.name, text, want)
		}
		if rendered := resolvconf.ForPod(pod, ns.name, cluster); !sameResolvConf(got, rendered) {
			t.Errorf("%s: kubelet wrote %+v, e2e/resolvconf renders %+v", ns.name, got, rendered)
		}
		t.Logf("%s (profile %q): %s", ns.name, pod.Annotations["dnstune.io/profile"], strings.ReplaceAll(strings.TrimSpace(text), "\n", " | "))
	}
}

func stepUninstall(t *testing.T, ctx context.Context, c *Cluster) {
	out := sh(t, c, UninstallCommand)
	t.Logf("%s\n%s", UninstallCommand, out)
	// Nothing of the install is left: no namespace, cluster-scoped objects
	// or webhook configuration.
	if err := framework.Eventually(2*time.Minute, time.Second, func() error {
		left := sh(t, c, "kubectl get mutatingwebhookconfigurations,clusterroles,clusterrolebindings -o name | grep dnstune || true; kubectl get ns dnstune-system -o name 2>/dev/null || true")
		if strings.TrimSpace(left) != "" {
			return fmt.Errorf("left after uninstall:\n%s", left)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Pods create normally afterwards, unmutated, in a namespace still
	// labelled for dnstune.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "after-uninstall", Namespace: "e2e-enabled"},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{Name: "c", Image: GlibcClientImage, Command: []string{"/bin/sleep", "infinity"}}}}}
	if err := c.Client.Create(ctx, pod); err != nil {
		t.Fatalf("pod create after uninstall: %v", err)
	}
	if pod.Spec.DNSConfig != nil || pod.Annotations["dnstune.io/profile"] != "" {
		t.Errorf("pod created after uninstall was mutated: %+v %v", pod.Spec.DNSConfig, pod.Annotations)
	}
	if err := framework.Eventually(time.Minute, 500*time.Millisecond, func() error {
		p, err := c.Clientset.CoreV1().Pods("e2e-enabled").Get(ctx, "after-uninstall", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("after-uninstall: %s", p.Status.Phase)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The thresholds stay raised (README: lowering them on a busy node would
	// cause the overflow); Stop restores them and checks the rest of the host.
	checkThresholds(t, c)
}
