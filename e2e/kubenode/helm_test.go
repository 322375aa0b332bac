//go:build e2e

package kubenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/chart"
	"github.com/dnstune/dnstune/e2e/framework"
)

// stepMetricNames: every metric name the chart's alerts and dashboard
// query is exposed by the running webhook pods or node agent (after the
// earlier steps made them count admissions), or comes from Prometheus or
// kube-state-metrics.
func stepMetricNames(t *testing.T, ctx context.Context, c *Cluster) {
	want, err := chart.QueryMetricNames()
	if err != nil {
		t.Fatal(err)
	}
	// Fresh pods (the rollout restart replaced them) export a labelled
	// counter only once it counts something: admit some pods first, in an
	// enabled and an audit namespace, enough to reach both replicas.
	for i := range 20 {
		ns := []string{"e2e-enabled", "e2e-audit"}[i%2]
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "metrics-", Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: GlibcClientImage}}}}
		if err := c.Client.Create(ctx, pod, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
	}
	exposed := map[string]bool{}
	targets := []string{net.JoinHostPort(NodeIP, "9741")}
	pods, err := c.Clientset.CoreV1().Pods("dnstune-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=webhook"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		targets = append(targets, net.JoinHostPort(p.Status.PodIP, "8080"))
	}
	for _, target := range targets {
		text, err := framework.Scrape("http://" + target + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, err := framework.ParseMetrics(text)
		if err != nil {
			t.Fatal(err)
		}
		for n := range framework.ExposedNames(m) {
			exposed[n] = true
		}
	}
	for _, n := range want {
		if !exposed[n] && !slices.Contains(chart.FromExporters, n) {
			t.Errorf("the chart's alerts or dashboard query %s, which neither the webhook nor the node agent exposes", n)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("%d metric names used by the chart's alerts and dashboard, all exposed by the running binaries (or Prometheus / kube-state-metrics): %v", len(want), want)
}

// objectsOfDnstune lists what is left of an install: cluster-wide objects
// labelled part-of=dnstune, the Roles in kube-system and default, and
// anything but Kubernetes' own in dnstune-system.
func objectsOfDnstune(t *testing.T, c *Cluster) string {
	t.Helper()
	out, err := c.Shell(`kubectl get mutatingwebhookconfigurations,clusterroles,clusterrolebindings,crd -l app.kubernetes.io/part-of=dnstune -o name;
kubectl -n kube-system get roles,rolebindings -l app.kubernetes.io/part-of=dnstune -o name;
kubectl -n default get roles,rolebindings -l app.kubernetes.io/part-of=dnstune -o name;
kubectl get mutatingwebhookconfigurations dnstune -o name 2>/dev/null;
kubectl get ns dnstune-system -o name 2>/dev/null; true`)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return strings.TrimSpace(out)
}

// waitNothingLeft waits until objectsOfDnstune finds nothing, after what.
func waitNothingLeft(t *testing.T, c *Cluster, what string) {
	t.Helper()
	if err := framework.Eventually(2*time.Minute, time.Second, func() error {
		if left := objectsOfDnstune(t, c); left != "" {
			return fmt.Errorf("left after %s:\n%s", what, left)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func stepHelmInstall(t *testing.T, ctx context.Context, c *Cluster) {
	_ = c.Clientset.CoreV1().Pods("e2e-enabled").Delete(ctx, "after-uninstall", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	out := sh(t, c, HelmInstallCommand)
	t.Logf("%s\n%s", HelmInstallCommand, out)
	// --wait returned: the Deployment and DaemonSet are ready. The
	// certificates are issued and the caBundle filled; a real pod comes out
	// mutated and its running container has the profile's resolv.conf.
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		t.Fatal(err)
	}
	if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		if err := framework.Eventually(time.Minute, time.Second, func() error {
			if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
				return err
			}
			if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
				return fmt.Errorf("caBundle not filled yet")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Client.Create(ctx, ClientDeployment("e2e-enabled", "helm-client", GlibcClientImage)); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitDeploymentReady(ctx, "e2e-enabled", "helm-client", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	pod, err := c.RunningPod(ctx, "e2e-enabled", "helm-client")
	if err != nil {
		t.Fatal(err)
	}
	got, text, err := c.ReadResolvConf(pod)
	if err != nil {
		t.Fatal(err)
	}
	if want := expectedResolvConf("e2e-enabled"); !sameResolvConf(got, want) {
		t.Errorf("after helm install, the running container's resolv.conf is\n%s\nwant %+v", text, want)
	}
	if err := c.WaitDaemonSetReady(ctx, "dnstune-system", "dnstune-node", time.Minute); err != nil {
		t.Fatal(err)
	}
	checkThresholds(t, c)
}

func secretCert(ctx context.Context, t *testing.T, c *Cluster) []byte {
	t.Helper()
	s, err := c.Clientset.CoreV1().Secrets("dnstune-system").Get(ctx, "dnstune-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Data["tls.crt"]) == 0 {
		t.Fatal("Secret dnstune-webhook-tls holds no certificate")
	}
	return s.Data["tls.crt"]
}

// stepHelmUpgrade upgrades the release to a changed chart render (new
// webhook arguments: every webhook pod is replaced) while 300 pods are
// created: none fails, and the certificates and caBundle are kept.
func stepHelmUpgrade(t *testing.T, ctx context.Context, c *Cluster) {
	cert := secretCert(ctx, t, c)
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		t.Fatal(err)
	}
	bundle := mwc.Webhooks[0].ClientConfig.CABundle
	before, err := c.Clientset.AppsV1().Deployments("dnstune-system").Get(ctx, "dnstune-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upgrade := `helm upgrade dnstune manifests/dnstune --namespace dnstune-system --reuse-values --set 'webhook.extraArgs={--report-interval=30s}' --wait --timeout 3m`
	failed, unmutated := createStorm(t, ctx, c, "helm", 300, 6, func() {
		time.Sleep(time.Second)
		t.Logf("%s\n%s", upgrade, sh(t, c, upgrade))
	})
	if len(failed) > 0 {
		t.Errorf("%d of 300 creates failed during helm upgrade:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	after, err := c.Clientset.AppsV1().Deployments("dnstune-system").Get(ctx, "dnstune-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation == before.Generation || !slices.Contains(after.Spec.Template.Spec.Containers[0].Args, "--report-interval=30s") {
		t.Errorf("helm upgrade did not roll the webhook (generation %d -> %d, args %v)", before.Generation, after.Generation, after.Spec.Template.Spec.Containers[0].Args)
	}
	if !bytes.Equal(cert, secretCert(ctx, t, c)) {
		t.Error("helm upgrade replaced the webhook's serving certificate")
	}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundle, mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Error("helm upgrade changed the caBundle")
	}
	t.Logf("300 creates by 6 clients during helm upgrade (webhook pods replaced): %d failed, %d admitted unmutated; certificate and caBundle kept", len(failed), unmutated)
	_ = c.Clientset.CoreV1().Pods("e2e-faults").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
}

func stepHelmUninstall(t *testing.T, ctx context.Context, c *Cluster) {
	t.Logf("%s\n%s", HelmUninstallCommand, sh(t, c, HelmUninstallCommand))
	waitNothingLeft(t, c, "helm uninstall")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "after-helm-", Namespace: "e2e-enabled"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: GlibcClientImage}}}}
	if err := c.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Fatalf("pod create after helm uninstall: %v", err)
	}
	if pod.Spec.DNSConfig != nil {
		t.Errorf("pod created after helm uninstall was mutated: %+v", pod.Spec.DNSConfig)
	}
}

// stepHelmCertManager installs the chart in cert-manager mode into the real
// apiserver (cert-manager's CRDs, from the cert-manager module, validate
// the Issuers and Certificates; no cert-manager runs here, so the webhook
// pods wait for their Secret), checks what it made, and uninstalls it.
func stepHelmCertManager(t *testing.T, ctx context.Context, c *Cluster) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locate the cert-manager module: %v", err)
	}
	crds, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds", "cert-manager.io_*.yaml"))
	if len(crds) < 4 {
		t.Fatalf("cert-manager CRDs not found: %v", crds)
	}
	sh(t, c, "kubectl apply -f "+strings.Join(crds, " -f ")+" && kubectl wait --for condition=established --timeout=60s crd/certificates.cert-manager.io crd/issuers.cert-manager.io")
	// cert-manager first and running, as docs/install.md says; its
	// controllers issue the chart's chain and its CA injector fills the
	// caBundle.
	if err := c.InstallCertManager(ctx); err != nil {
		t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n cert-manager describe pods | tail -30; kubectl -n cert-manager logs deploy/cert-manager --tail=30"))
	}
	defer func() {
		if err := c.RemoveCertManager(context.Background()); err != nil {
			t.Errorf("remove cert-manager: %v", err)
		}
	}()
	install := `helm install dnstune manifests/dnstune --namespace dnstune-system --create-namespace --set image.tag=dev --set certificates.mode=cert-manager`
	t.Logf("%s\n%s", install, sh(t, c, install))
	start := time.Now()
	if err := c.WaitDeploymentReady(ctx, "dnstune-system", "dnstune-webhook", 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n dnstune-system get certificates,certificaterequests,issuers,secrets; kubectl -n cert-manager logs deploy/cert-manager --tail=40"))
	}
	t.Logf("webhook Ready %s after helm install: cert-manager issued its certificate", time.Since(start).Round(100*time.Millisecond))
	var secret corev1.Secret
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "dnstune-system", Name: "dnstune-webhook-tls"}, &secret); err != nil {
		t.Fatal(err)
	}
	if secret.Annotations["cert-manager.io/certificate-name"] != "dnstune-webhook" || len(secret.Data["ca.crt"]) == 0 {
		t.Fatalf("the webhook's Secret was not issued by cert-manager: annotations %v, keys %d", secret.Annotations, len(secret.Data))
	}
	if err := framework.Eventually(time.Minute, 500*time.Millisecond, func() error {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
			return err
		}
		if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]) {
			return errors.New("caBundle is not the issued CA yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The apiserver calls the webhook through its Service, with the
	// certificate cert-manager issued and the CA it injected: pods are
	// mutated (failurePolicy Ignore would let them through unmutated).
	if err := framework.Eventually(30*time.Second, 500*time.Millisecond, func() error {
		dep := ClientDeployment("e2e-enabled", "cm-probe", GlibcClientImage)
		p, err := c.Clientset.CoreV1().Pods("e2e-enabled").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "cm-probe-"}, Spec: dep.Spec.Template.Spec}, metav1.CreateOptions{DryRun: []string{"All"}})
		if err != nil {
			return err
		}
		if p.Spec.DNSConfig == nil || len(p.Spec.DNSConfig.Options) == 0 {
			return errors.New("pod admitted unmutated: the apiserver did not reach the webhook with cert-manager's certificate")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cert := &unstructured.Unstructured{}
	cert.SetAPIVersion("cert-manager.io/v1")
	cert.SetKind("Certificate")
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "dnstune-system", Name: "dnstune-webhook"}, cert); err != nil {
		t.Fatal(err)
	}
	names, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if !slices.Contains(names, "dnstune-webhook.dnstune-system.svc") {
		t.Errorf("Certificate dnsNames %v", names)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		t.Fatal(err)
	}
	if mwc.Annotations["cert-manager.io/inject-ca-from"] != "dnstune-system/dnstune-webhook" {
		t.Errorf("webhook configuration annotations %v", mwc.Annotations)
	}
	certManagerRenewal(ctx, t, c)
	certManagerCARotation(ctx, t, c)
	certManagerGone(ctx, t, c)
	t.Logf("%s\n%s", HelmUninstallCommand, sh(t, c, HelmUninstallCommand))
	waitNothingLeft(t, c, "helm uninstall (cert-manager mode)")
}
