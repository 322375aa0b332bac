//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/certs"
	"github.com/dnstune/dnstune/e2e/framework"
)

const systemNS = "dnstune-system"

// TestInstall proves the install on the real apiserver, in order: every
// rendered manifest is accepted; the RBAC it grants is what the webhook
// needs and no more; the self-managed mode works end to end with only that
// RBAC; the cert-manager mode's caBundle is injected by cert-manager's own
// CA injector.
func TestInstall(t *testing.T) {
	ctx := context.Background()
	// Each step builds on the ones before: run them together, in order.
	steps := []struct {
		name string
		run  func(context.Context, *testing.T)
	}{
		{"rendered manifests are accepted", testManifestsAccepted},
		{"RBAC is least privilege", testRBAC},
		{"node agent writes its own Node's condition only", testNodeCondition},
		{"self-managed certificates", testSelfManaged},
		{"cert-manager CA injection", testCertManager},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(ctx, t) }) {
			t.Fatalf("%q failed; the later install steps depend on it", s.name)
		}
	}
}

// realKinds are applied for real; the rest (workloads without a kubelet,
// and the webhook configuration the shared harness is using) as a
// server-side dry run.
var realKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true, "Role": true, "RoleBinding": true,
	"ClusterRole": true, "ClusterRoleBinding": true, "Secret": true, "ConfigMap": true,
}

func applyInstall(ctx context.Context, t *testing.T, data []byte) {
	t.Helper()
	objs, err := framework.Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 15 {
		t.Fatalf("rendered only %d objects", len(objs))
	}
	// Real objects first (the namespace must exist for namespaced dry runs).
	for _, pass := range []bool{true, false} {
		for _, o := range objs {
			if realKinds[o.GetKind()] != pass {
				continue
			}
			if o.GetKind() == "MutatingWebhookConfiguration" {
				// The harness's own "dnstune" is in use: validate a copy.
				o = o.DeepCopy()
				o.SetName("dnstune-dry-run")
			}
			if err := env.Apply(ctx, o, !pass); err != nil {
				t.Errorf("rejected by the apiserver: %v", err)
			}
		}
	}
}

func testManifestsAccepted(ctx context.Context, t *testing.T) {
	for _, f := range []string{"manifests/install.yaml", "manifests/install-admission-policy.yaml"} {
		data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), f))
		if err != nil {
			t.Fatal(err)
		}
		applyInstall(ctx, t, data)
	}
	installCertManagerCRDs(ctx, t)
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "manifests/install-cert-manager.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	applyInstall(ctx, t, data)
	// The cert-manager resources are validated by their real CRD schemas.
	var crt cmapi.Certificate
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "dnstune-webhook"}, &crt); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run Certificate was stored (get: %v)", err)
	}
}

var certManagerCRDsInstalled bool

// installCertManagerCRDs installs the CRDs shipped in the cert-manager Go
// module (deploy/crds), the version go.mod pins.
func installCertManagerCRDs(ctx context.Context, t *testing.T) {
	t.Helper()
	if certManagerCRDsInstalled {
		return
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locate the cert-manager module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	files, _ := filepath.Glob(filepath.Join(dir, "cert-manager.io_*.yaml"))
	if len(files) < 4 {
		t.Fatalf("cert-manager CRDs not found in %s", dir)
	}
	var kinds []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		applyYAML(ctx, t, data, func(string) bool { return false })
		objs, err := framework.Objects(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if k, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind"); k != "" {
				kinds = append(kinds, k)
			}
		}
	}
	// Each CRD is served on its own schedule: wait until every kind can be
	// listed (and so is known to the client's REST mapper), not just one.
	eventually(t, 30*time.Second, func() error {
		for _, k := range kinds {
			var l unstructured.UnstructuredList
			l.SetAPIVersion("cert-manager.io/v1")
			l.SetKind(k + "List")
			if err := env.Client.List(ctx, &l); err != nil {
				return err
			}
		}
		return nil
	})
	certManagerCRDsInstalled = true
}

func saClient(ctx context.Context, t *testing.T, name string) (client.Client, string) {
	t.Helper()
	path, err := env.ServiceAccountKubeconfig(ctx, systemNS, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, path
}

func testRBAC(ctx context.Context, t *testing.T) {
	webhook, _ := saClient(ctx, t, "dnstune-webhook")
	nodeAgent, _ := saClient(ctx, t, "dnstune-node")
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "not-dnstune", Namespace: systemNS}, StringData: map[string]string{"k": "v"}}
	if err := env.Client.Create(ctx, other); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	otherMWC := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "not-dnstune"}}
	if err := env.Client.Create(ctx, otherMWC); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, otherMWC) })

	allowed := map[string]func() error{
		"webhook lists namespaces": func() error {
			return webhook.List(ctx, &metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NamespaceList"}})
		},
		"webhook gets kube-system/kube-dns": func() error {
			return webhook.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}, &corev1.Service{})
		},
		"webhook gets its Secret": func() error {
			return webhook.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "dnstune-webhook-tls"}, &corev1.Secret{})
		},
		"webhook gets its webhook configuration": func() error {
			return webhook.Get(ctx, client.ObjectKey{Name: "dnstune"}, &admissionregistrationv1.MutatingWebhookConfiguration{})
		},
		"webhook creates its leader-election Lease": func() error {
			l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "dnstune-webhook", Namespace: systemNS}}
			if err := webhook.Create(ctx, l); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
			return webhook.Get(ctx, client.ObjectKeyFromObject(l), l)
		},
		"node agent gets kube-system/kube-dns (the cover's upstream)": func() error {
			return nodeAgent.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}, &corev1.Service{})
		},
		"node agent creates an Event on a Node": func() error {
			return nodeAgent.Create(ctx, &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{GenerateName: "node.", Namespace: "default"},
				InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n1"}, Reason: "Test", Message: "rbac test", Type: "Normal",
			})
		},
	}
	for name, f := range allowed {
		if err := f(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	forbidden := map[string]func() error{
		"webhook lists secrets": func() error { return webhook.List(ctx, &corev1.SecretList{}, client.InNamespace(systemNS)) },
		"webhook reads another Secret": func() error {
			return webhook.Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{})
		},
		"webhook creates a Secret": func() error {
			return webhook.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: systemNS}})
		},
		"webhook updates another webhook configuration": func() error {
			var m admissionregistrationv1.MutatingWebhookConfiguration
			_ = env.Client.Get(ctx, client.ObjectKeyFromObject(otherMWC), &m)
			return webhook.Update(ctx, &m)
		},
		"webhook reads another kube-system Service": func() error {
			return webhook.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-dns-other"}, &corev1.Service{})
		},
		"webhook creates pods": func() error { return webhook.Create(ctx, newPod("default")) },
		"webhook lists pods (reports need manifests/reports.yaml)": func() error { return webhook.List(ctx, &corev1.PodList{}) },
		"webhook reads another Lease": func() error {
			return webhook.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "other"}, &coordinationv1.Lease{})
		},
		"webhook updates a namespace": func() error {
			return webhook.Update(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
		},
		"node agent reads nodes": func() error { return nodeAgent.List(ctx, &corev1.NodeList{}) },
		"node agent creates elsewhere": func() error {
			return nodeAgent.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "x.", Namespace: "kube-system"}, InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n1"}})
		},
		"node agent reads another kube-system Service": func() error {
			return nodeAgent.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-dns-other"}, &corev1.Service{})
		},
		"node agent patches a Node": func() error {
			return nodeAgent.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"x":"y"}}}`)))
		},
		"node agent reads its secrets": func() error { return nodeAgent.List(ctx, &corev1.SecretList{}, client.InNamespace(systemNS)) },
	}
	for name, f := range forbidden {
		if err := f(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: want Forbidden, got %v", name, err)
		}
	}
}

// useWebhookConfig points the "dnstune" webhook configuration at w with the
// given caBundle and annotations, and restores the shared one at cleanup.
func useWebhookConfig(ctx context.Context, t *testing.T, w *framework.Webhook, caBundle []byte, annotations map[string]string) {
	t.Helper()
	mwc, err := env.RenderWebhookConfig(w, admissionregistrationv1.Ignore)
	if err != nil {
		t.Fatal(err)
	}
	mwc.Webhooks[0].ClientConfig.CABundle = caBundle
	mwc.Annotations = annotations
	var cur admissionregistrationv1.MutatingWebhookConfiguration
	if err := env.Client.Get(ctx, client.ObjectKey{Name: mwc.Name}, &cur); err != nil {
		t.Fatal(err)
	}
	mwc.ResourceVersion = cur.ResourceVersion
	if err := env.Client.Update(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var cur admissionregistrationv1.MutatingWebhookConfiguration
		_ = env.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &cur)
		_ = env.Client.Delete(ctx, &cur)
		if err := env.ApplyWebhookConfig(ctx, env.Webhook, admissionregistrationv1.Ignore); err != nil {
			t.Errorf("restore webhook configuration: %v", err)
		}
		if err := env.WaitMutating(ctx); err != nil {
			t.Errorf("shared webhook not back: %v", err)
		}
	})
}

func mutatedEventually(t *testing.T, ns string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		p := newPod(ns)
		if err := env.Client.Create(context.Background(), p, client.DryRunAll); err != nil {
			return err
		}
		if options(p) != resilientOptions {
			return fmt.Errorf("pod not mutated: %q", options(p))
		}
		return nil
	})
}

func testSelfManaged(ctx context.Context, t *testing.T) {
	_, kubeconfig := saClient(ctx, t, "dnstune-webhook")
	w, err := env.NewWebhook("self-managed", testPolicy, kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// Start from nothing: no certificate on disk, an empty Secret, no caBundle.
	for _, f := range []string{certs.CertFile, certs.KeyFile} {
		_ = os.Remove(filepath.Join(w.CertDir, f))
	}
	var secret corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "dnstune-webhook-tls"}, &secret); err != nil {
		t.Fatal(err)
	}
	if len(secret.Data) != 0 {
		t.Fatalf("the install's Secret is not empty: %v", secret.Data)
	}
	w.ExtraArgs = []string{
		"--self-managed-certs",
		"--self-managed-hosts=127.0.0.1,localhost",
		"--self-managed-cert-validity=30s",
		"--self-managed-ca-validity=1h",
	}
	useWebhookConfig(ctx, t, w, nil, nil)
	if err := w.Start(); err != nil {
		t.Fatalf("self-managed webhook (ServiceAccount token, RBAC-limited): %v", err)
	}
	t.Cleanup(w.Stop)

	var bundle []byte
	eventually(t, 30*time.Second, func() error {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
			return err
		}
		if bundle = mwc.Webhooks[0].ClientConfig.CABundle; len(bundle) == 0 {
			return fmt.Errorf("caBundle still empty")
		}
		return nil
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(&secret), &secret); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data[certs.SecretCABundle], bundle) || len(secret.Data[certs.CertFile]) == 0 {
		t.Fatal("the Secret and the caBundle disagree")
	}
	ns := namespace(t, "selfmanaged", enabled())
	mutatedEventually(t, ns)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	first, err := w.ServingCert(roots)
	if err != nil {
		t.Fatal(err)
	}
	// 30s validity: renewed at two thirds of its life, about 20s after issue.
	var renewed *x509.Certificate
	eventually(t, 60*time.Second, func() error {
		cur, err := w.ServingCert(roots)
		if err != nil {
			return err
		}
		if cur.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("serving certificate not renewed yet (expires %s)", cur.NotAfter.Format(time.TimeOnly))
		}
		renewed = cur
		return nil
	})
	if life, age := first.NotAfter.Sub(first.NotBefore), renewed.NotBefore.Sub(first.NotBefore); age < life/2 {
		t.Errorf("renewed after %s of a %s lifetime: too early", age, life)
	}
	t.Logf("serving certificate renewed after %s of its %s lifetime, no restart", renewed.NotBefore.Sub(first.NotBefore).Round(time.Second), first.NotAfter.Sub(first.NotBefore))
	if exited, _ := w.Proc.Exited(); exited {
		t.Fatal("the webhook restarted")
	}
	for range 3 {
		p, _ := create(t, newPod(ns), client.DryRunAll)
		assertMutated(t, p, "resilient", resilientOptions)
	}
}

func testCertManager(ctx context.Context, t *testing.T) {
	installCertManagerCRDs(ctx, t)
	data, err := framework.Render("--set", "certificates.mode=cert-manager")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := framework.Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	var annotations map[string]string
	for _, o := range objs {
		switch o.GetKind() {
		case "Issuer", "Certificate": // stored for real, validated by cert-manager's CRD schemas
			if err := env.Apply(ctx, o, false); err != nil {
				t.Fatal(err)
			}
		case "MutatingWebhookConfiguration":
			annotations = o.GetAnnotations()
		}
	}
	if annotations["cert-manager.io/inject-ca-from"] != systemNS+"/dnstune-webhook" {
		t.Fatalf("cert-manager overlay lacks the inject-ca-from annotation: %v", annotations)
	}
	// cert-manager itself issues the chart's chain: its controllers and CA
	// injector (hack/tools/cert-manager), as a process beside the apiserver.
	useWebhookConfig(ctx, t, env.Webhook, nil, annotations)
	stop := runCertManager(t)
	defer stop()
	var crt cmapi.Certificate
	eventually(t, 90*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "dnstune-webhook"}, &crt); err != nil {
			return err
		}
		for _, c := range crt.Status.Conditions {
			if c.Type == cmapi.CertificateConditionReady && c.Status == cmmeta.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("Certificate %s/%s not Ready: %+v\n%s", systemNS, crt.Name, crt.Status.Conditions, certManagerState(ctx))
	})
	var secret corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: crt.Spec.SecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data[cmmeta.TLSCAKey]) {
		t.Fatalf("Secret %s has no CA in %s", secret.Name, cmmeta.TLSCAKey)
	}
	block, _ := pem.Decode(secret.Data[corev1.TLSCertKey])
	if block == nil {
		t.Fatalf("Secret %s holds no PEM certificate", secret.Name)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "dnstune-webhook." + systemNS + ".svc"}); err != nil {
		t.Errorf("the issued serving certificate does not verify against its CA for the Service name: %v", err)
	}
	eventually(t, 60*time.Second, func() error {
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
			return err
		}
		if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, secret.Data[cmmeta.TLSCAKey]) {
			return fmt.Errorf("caBundle is not the issued CA yet (%d bytes)", len(mwc.Webhooks[0].ClientConfig.CABundle))
		}
		return nil
	})
	// The issued certificate names the webhook's Service, which this control
	// plane cannot route to; the apiserver calling the webhook with it is
	// checked on the real node (e2e/kubenode, helm-cert-manager).
	t.Logf("cert-manager issued a serving certificate for %v (issuer %s) and injected its CA", leaf.DNSNames, crt.Spec.IssuerRef.Name)
}

// certManagerState lists the cert-manager objects of the install's
// namespace with their conditions, for failure reports.
func certManagerState(ctx context.Context) string {
	var b strings.Builder
	for _, kind := range []string{"Issuer", "Certificate", "CertificateRequest"} {
		var l unstructured.UnstructuredList
		l.SetAPIVersion("cert-manager.io/v1")
		l.SetKind(kind + "List")
		if err := env.Client.List(ctx, &l, client.InNamespace(systemNS)); err != nil {
			fmt.Fprintf(&b, "%s: %v\n", kind, err)
			continue
		}
		for _, o := range l.Items {
			conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
			fmt.Fprintf(&b, "%s %s: %v\n", kind, o.GetName(), conds)
		}
	}
	return b.String()
}

// runCertManager runs the cert-manager stand-in (its controllers and CA
// injector, hack/tools/cert-manager) against the test apiserver.
func runCertManager(t *testing.T) func() {
	t.Helper()
	bin, err := framework.BuildTool("cert-manager")
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.StartProcess("cert-manager", filepath.Join(env.Dir, "cert-manager.log"), nil, bin, "--kubeconfig="+env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if t.Failed() {
			t.Logf("cert-manager log:\n%s", p.Tail(40))
		}
		p.Stop()
	}
}
