//go:build e2e

package kubenode

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

// webhookPods are the webhook's pods now, by name.
func webhookPods(ctx context.Context, t *testing.T, c *Cluster) map[string]corev1.Pod {
	t.Helper()
	pods, err := c.Clientset.CoreV1().Pods("dnstune-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=webhook"})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		m[p.Name] = p
	}
	return m
}

// servedSerials are the serial numbers of the certificates the webhook's
// pods present on their webhook port, by pod name.
func servedSerials(pods map[string]corev1.Pod) (map[string]string, error) {
	serials := map[string]string{}
	for name, p := range pods {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort(p.Status.PodIP, "9443"),
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) // #nosec G402 -- reads the presented certificate only
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", name, err)
		}
		serials[name] = conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
		_ = conn.Close()
	}
	return serials, nil
}

// servedLeaf is the certificate one of the webhook's pods presents.
func servedLeaf(pods map[string]corev1.Pod) (*x509.Certificate, error) {
	for _, p := range pods {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort(p.Status.PodIP, "9443"),
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) // #nosec G402 -- reads the presented certificate only
		if err != nil {
			return nil, err
		}
		defer func() { _ = conn.Close() }()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	return nil, errors.New("no webhook pod")
}

// forceRenewal renews a Certificate now, as cmctl renew does: its Issuing
// condition set True (reason ManuallyTriggered) through the status
// subresource.
func forceRenewal(ctx context.Context, c *Cluster, ns, name string) error {
	crt := &unstructured.Unstructured{}
	crt.SetAPIVersion("cert-manager.io/v1")
	crt.SetKind("Certificate")
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, crt); err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(crt.Object, "status", "conditions")
	var kept []any
	for _, cond := range conds {
		if m, ok := cond.(map[string]any); ok && m["type"] != "Issuing" {
			kept = append(kept, cond)
		}
	}
	kept = append(kept, map[string]any{
		"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
		"message": "Certificate re-issuance manually triggered", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	})
	if err := unstructured.SetNestedSlice(crt.Object, kept, "status", "conditions"); err != nil {
		return err
	}
	return c.Client.Status().Update(ctx, crt)
}

// revision is a Certificate's status.revision (0 before its first issuance).
func revision(ctx context.Context, c *Cluster, ns, name string) (int64, error) {
	crt := &unstructured.Unstructured{}
	crt.SetAPIVersion("cert-manager.io/v1")
	crt.SetKind("Certificate")
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, crt); err != nil {
		return 0, err
	}
	r, _, _ := unstructured.NestedInt64(crt.Object, "status", "revision")
	return r, nil
}

// createLoad creates pods in e2e-faults from 6 clients, steadily (one per
// client every 100 ms), until done says so and at least n were sent (or 4
// minutes pass), and counts the failed and the unmutated ones.
type createLoad struct {
	sent, failed, unmutated atomic.Int64
	errs                    sync.Map
}

func runCreates(ctx context.Context, c *Cluster, tag string, n int64, done func() bool) *createLoad {
	l := &createLoad{}
	deadline := time.Now().Add(4 * time.Minute)
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && (l.sent.Load() < n || !done()) {
				i := l.sent.Add(1)
				pod := stormPod(fmt.Sprintf("%s-%04d", tag, i))
				got, err := c.Clientset.CoreV1().Pods("e2e-faults").Create(ctx, pod, metav1.CreateOptions{})
				switch {
				case err != nil:
					l.failed.Add(1)
					l.errs.Store(pod.Name, err.Error())
				case got.Annotations["dnstune.io/profile"] == "":
					l.unmutated.Add(1)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	_ = c.Clientset.CoreV1().Pods("e2e-faults").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
	return l
}

// allChanged reports whether every pod serves a serial other than before.
func allChanged(pods map[string]corev1.Pod, before map[string]string) bool {
	now, err := servedSerials(pods)
	if err != nil {
		return false
	}
	for name, s := range now {
		if s == before[name] {
			return false
		}
	}
	return true
}

func caBundle(ctx context.Context, t *testing.T, c *Cluster) []byte {
	t.Helper()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		t.Fatal(err)
	}
	return mwc.Webhooks[0].ClientConfig.CABundle
}

// certManagerRenewal renews the webhook's serving Certificate during pod
// creates: none may fail or go unmutated, and each webhook pod serves the
// new certificate without a restart.
func certManagerRenewal(ctx context.Context, t *testing.T, c *Cluster) {
	pods := webhookPods(ctx, t, c)
	before, err := servedSerials(pods)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := revision(ctx, c, "dnstune-system", "dnstune-webhook")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := forceRenewal(ctx, c, "dnstune-system", "dnstune-webhook"); err != nil {
		t.Fatal(err)
	}
	var servedAfter atomic.Int64
	load := runCreates(ctx, c, "renew", 300, func() bool {
		if servedAfter.Load() != 0 {
			return true
		}
		if r, err := revision(ctx, c, "dnstune-system", "dnstune-webhook"); err == nil && r > rev && allChanged(pods, before) {
			servedAfter.Store(int64(time.Since(start)))
			return true
		}
		return false
	})
	if servedAfter.Load() == 0 {
		t.Fatalf("the webhook's pods did not serve the renewed certificate within 4 minutes (revision %d)", rev)
	}
	if load.failed.Load() > 0 || load.unmutated.Load() > 0 {
		t.Errorf("%d creates during the renewal: %d failed, %d admitted unmutated", load.sent.Load(), load.failed.Load(), load.unmutated.Load())
	}
	for name, p := range webhookPods(ctx, t, c) {
		old, ok := pods[name]
		if !ok || p.Status.ContainerStatuses[0].RestartCount != old.Status.ContainerStatuses[0].RestartCount {
			t.Errorf("webhook pod %s was replaced or restarted during the renewal", name)
		}
	}
	t.Logf("renewal (Issuing condition, as cmctl renew): every webhook pod served the new certificate %s after the trigger, no restart; %d creates meanwhile: %d failed, %d unmutated",
		time.Duration(servedAfter.Load()).Round(100*time.Millisecond), load.sent.Load(), load.failed.Load(), load.unmutated.Load())
}

// certManagerCARotation renews the CA Certificate, then the serving one
// (cert-manager re-signs a leaf only when it is renewed), during pod
// creates, and measures what the apiserver trusted meanwhile: the injector
// replaces the caBundle as soon as the serving Secret changes, while the
// pods serve the old certificate until kubelet updates their Secret
// volume; the bundle must trust both.
func certManagerCARotation(ctx context.Context, t *testing.T, c *Cluster) {
	oldBundle := caBundle(ctx, t, c)
	caRev, err := revision(ctx, c, "dnstune-system", "dnstune-ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := forceRenewal(ctx, c, "dnstune-system", "dnstune-ca"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if r, err := revision(ctx, c, "dnstune-system", "dnstune-ca"); err == nil && r > caRev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the CA Certificate was not renewed within a minute")
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !bytes.Equal(oldBundle, caBundle(ctx, t, c)) {
		t.Error("renewing the CA alone changed the caBundle: the serving certificate is still the old CA's")
	}
	pods := webhookPods(ctx, t, c)
	before, err := servedSerials(pods)
	if err != nil {
		t.Fatal(err)
	}
	oldLeaf, err := servedLeaf(pods)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := forceRenewal(ctx, c, "dnstune-system", "dnstune-webhook"); err != nil {
		t.Fatal(err)
	}
	var injected, served atomic.Int64
	load := runCreates(ctx, c, "rotate", 300, func() bool {
		if injected.Load() == 0 && !bytes.Equal(oldBundle, caBundle(ctx, t, c)) {
			injected.Store(int64(time.Since(start)))
		}
		if served.Load() == 0 && allChanged(pods, before) {
			served.Store(int64(time.Since(start)))
		}
		return injected.Load() != 0 && served.Load() != 0
	})
	if injected.Load() == 0 {
		t.Fatal("the new CA was never injected into the caBundle")
	}
	if served.Load() == 0 {
		t.Fatal("the webhook's pods never served the certificate of the new CA")
	}
	window := time.Duration(served.Load() - injected.Load())
	newBundle := caBundle(ctx, t, c)
	roots := x509.NewCertPool()
	n := 0
	for rest := newBundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if ca, err := x509.ParseCertificate(b.Bytes); err == nil {
			roots.AddCert(ca)
			n++
		}
	}
	// No failed call needs the bundle to trust the certificate the pods
	// still present until kubelet updates their Secret volume.
	if _, err := oldLeaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "dnstune-webhook.dnstune-system.svc"}); err != nil {
		t.Errorf("the caBundle injected after the CA rotation (%d CA certificates) does not trust the certificate the pods still present: %v", n, err)
	}
	if load.failed.Load() > 0 || load.unmutated.Load() > 0 {
		t.Errorf("%d creates during the CA rotation: %d failed, %d admitted unmutated", load.sent.Load(), load.failed.Load(), load.unmutated.Load())
	}
	var errs []error
	load.errs.Range(func(k, v any) bool { errs = append(errs, fmt.Errorf("%v: %v", k, v)); return true })
	if len(errs) > 0 {
		t.Log(errors.Join(errs...))
	}
	t.Logf("CA rotation: the CA renewed alone left the caBundle as it was (the apiserver trusts only the old CA until the serving certificate is renewed); "+
		"its renewal put a caBundle of %d CA certificates in place %s later, which still trusts the old serving certificate; the pods presented the new one after %s (%s of overlap); %d creates meanwhile: %d failed, %d admitted unmutated",
		n, time.Duration(injected.Load()).Round(100*time.Millisecond), time.Duration(served.Load()).Round(100*time.Millisecond), window.Round(100*time.Millisecond),
		load.sent.Load(), load.failed.Load(), load.unmutated.Load())
}

// certManagerGone deletes cert-manager: the webhook keeps serving its
// certificate, and pods are still mutated.
func certManagerGone(ctx context.Context, t *testing.T, c *Cluster) {
	pods := webhookPods(ctx, t, c)
	before, err := servedSerials(pods)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveCertManager(ctx); err != nil {
		t.Fatal(err)
	}
	load := runCreates(ctx, c, "nocm", 60, func() bool { return true })
	after, err := servedSerials(pods)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range after {
		if s != before[name] {
			t.Errorf("pod %s changed its certificate after cert-manager was deleted", name)
		}
	}
	if load.failed.Load() > 0 || load.unmutated.Load() > 0 {
		t.Errorf("with cert-manager deleted, %d creates: %d failed, %d unmutated", load.sent.Load(), load.failed.Load(), load.unmutated.Load())
	}
	t.Logf("cert-manager deleted: the webhook kept serving its certificate; %d creates: %d failed, %d unmutated", load.sent.Load(), load.failed.Load(), load.unmutated.Load())
}

// stepCertManagerManifests installs manifests/install-cert-manager.yaml
// in the wrong order, before cert-manager runs: the webhook's pods wait for
// their Secret, and a pod created meanwhile is admitted unchanged
// (failurePolicy Ignore). Once cert-manager runs, the chain issues, the
// webhook becomes Ready, and dnstune report lists that pod as out of date.
func stepCertManagerManifests(t *testing.T, ctx context.Context, c *Cluster) {
	const apply = `sed 's|ghcr.io/dnstune/dnstune:0.1.0|ghcr.io/dnstune/dnstune:dev|' manifests/install-cert-manager.yaml | kubectl apply -f -`
	const remove = `sed 's|ghcr.io/dnstune/dnstune:0.1.0|ghcr.io/dnstune/dnstune:dev|' manifests/install-cert-manager.yaml | kubectl delete -f -`
	t.Logf("%s\n%s", apply, sh(t, c, apply))
	early := ClientDeployment("e2e-enabled", "before-cert", GlibcClientImage)
	if err := c.Client.Create(ctx, early); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Client.Delete(context.Background(), early) }()
	if err := c.WaitDeploymentReady(ctx, "e2e-enabled", "before-cert", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	pod, err := c.RunningPod(ctx, "e2e-enabled", "before-cert")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Annotations["dnstune.io/profile"] != "" || pod.Spec.DNSConfig != nil {
		t.Fatalf("a pod created before cert-manager issued the webhook's certificate was mutated: %v %+v", pod.Annotations, pod.Spec.DNSConfig)
	}
	d, err := c.Clientset.AppsV1().Deployments("dnstune-system").Get(ctx, "dnstune-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.ReadyReplicas != 0 {
		t.Fatalf("the webhook has %d ready replicas before its certificate exists", d.Status.ReadyReplicas)
	}
	if err := c.InstallCertManager(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.RemoveCertManager(context.Background()); err != nil {
			t.Errorf("remove cert-manager: %v", err)
		}
	}()
	start := time.Now()
	if err := c.WaitDeploymentReady(ctx, "dnstune-system", "dnstune-webhook", 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, sh(t, c, "kubectl -n dnstune-system get certificates,certificaterequests,issuers; kubectl -n cert-manager logs deploy/cert-manager --tail=30"))
	}
	t.Logf("install-cert-manager.yaml applied before cert-manager: webhook Ready %s after cert-manager ran", time.Since(start).Round(100*time.Millisecond))
	var ws []struct {
		Kind      string `json:"kind"`
		Name      string `json:"name"`
		OutOfDate int    `json:"outOfDate"`
	}
	if err := framework.Eventually(time.Minute, time.Second, func() error {
		cmd := exec.Command(c.Dnstune, "report", "-n", "e2e-enabled", "-o", "json", "--kubeconfig", c.Kubeconfig) // #nosec G204 -- the binary under test
		out, err := cmd.Output()
		var exit *exec.ExitError
		if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 2) {
			return fmt.Errorf("dnstune report: %w: %s", err, out)
		}
		if err := json.Unmarshal(out, &ws); err != nil {
			return fmt.Errorf("dnstune report -o json: %w: %s", err, out)
		}
		for _, w := range ws {
			if w.Kind == "Deployment" && w.Name == "before-cert" && w.OutOfDate == 1 {
				if err == nil {
					return errors.New("dnstune report exited 0 with a pod out of date; want 2")
				}
				return nil
			}
		}
		return fmt.Errorf("dnstune report does not list Deployment before-cert as out of date: %s", out)
	}); err != nil {
		t.Fatal(err)
	}
	p, err := c.Clientset.CoreV1().Pods("e2e-enabled").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "after-cert-"}, Spec: early.Spec.Template.Spec}, metav1.CreateOptions{DryRun: []string{"All"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.DNSConfig == nil {
		t.Error("a pod created once the certificate was issued was not mutated")
	}
	t.Logf("%s\n%s", remove, sh(t, c, remove))
	waitNothingLeft(t, c, "kubectl delete -f manifests/install-cert-manager.yaml")
}
