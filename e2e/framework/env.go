package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/certs"
)

// KubeDNSIP is the ClusterIP of the kube-system/kube-dns Service the
// harness creates (inside envtest's service range 10.0.0.0/24).
const KubeDNSIP = "10.0.0.10"

// Env is a running control plane with dnstune's webhook registered.
type Env struct {
	// Dir holds every file of this run: logs, certs, kubeconfigs, the policy.
	Dir        string
	Env        *envtest.Environment
	Config     *rest.Config
	Client     client.Client
	Clientset  *kubernetes.Clientset
	Kubeconfig string
	AuditLog   string
	APILog     string
	CA         *certs.KeyPair
	KCM        *Process
	Webhook    *Webhook
	Dnstune    string // path of the built binary
	Logf       func(format string, args ...any)
}

// APIServerEnv names the variable that points Start at another
// kube-apiserver binary than the one in the assets (make e2e's version
// matrix); etcd and kube-controller-manager stay the assets'.
const APIServerEnv = "DNSTUNE_KUBE_APISERVER"

// Options for Start.
type Options struct {
	// Dir for this run's files; a new temporary directory if empty.
	Dir string
	// Policy is the webhook's policy file content.
	Policy string
	// Logf receives progress lines; may be nil.
	Logf func(format string, args ...any)
	// WebhookArgs are extra flags for the dnstune webhook.
	WebhookArgs []string
}

// Scheme knows the built-in types, cert-manager's and CRDs.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = cmapi.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	return s
}()

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources: [{group: "", resources: [pods]}]
    verbs: [create]
  - level: None
`

// Start brings up etcd, kube-apiserver (with an audit log), a
// kube-controller-manager and the dnstune webhook, registers the webhook
// from the chart (pointed at the local process), and returns once the
// apiserver calls it.
// On error, everything started so far is stopped.
func Start(ctx context.Context, o Options) (env *Env, err error) {
	e := &Env{Dir: o.Dir, Logf: o.Logf}
	if e.Logf == nil {
		e.Logf = func(string, ...any) {}
	}
	if e.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "dnstune-e2e-"); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, e.Tails(40))
			e.Stop()
		}
	}()
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	e.AuditLog = filepath.Join(e.Dir, "audit.log")
	e.APILog = filepath.Join(e.Dir, "kube-apiserver.log")
	policyFile := filepath.Join(e.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policyFile, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	apiLog, err := os.Create(e.APILog)
	if err != nil {
		return nil, err
	}
	e.Env = &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: 2 * time.Minute, ControlPlaneStopTimeout: time.Minute}
	api := e.Env.ControlPlane.GetAPIServer()
	api.Out, api.Err = apiLog, apiLog
	if p := os.Getenv(APIServerEnv); p != "" {
		// The version matrix: another kube-apiserver, the rest as built.
		api.Path = p
		e.Logf("kube-apiserver from $%s: %s", APIServerEnv, p)
	}
	api.Configure().
		Set("audit-policy-file", policyFile).
		Set("audit-log-path", e.AuditLog).
		Set("audit-log-mode", "blocking").
		Set("endpoint-reconciler-type", "none")
	e.Logf("starting etcd and kube-apiserver")
	if e.Config, err = e.Env.Start(); err != nil {
		return nil, fmt.Errorf("failed to start the control plane: %w", err)
	}
	e.Kubeconfig = filepath.Join(e.Dir, "admin.kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, e.Env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	if e.Client, err = client.New(e.Config, client.Options{Scheme: Scheme}); err != nil {
		return nil, err
	}
	if e.Clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return nil, err
	}
	e.Logf("starting kube-controller-manager")
	e.KCM, err = StartProcess("kube-controller-manager", filepath.Join(e.Dir, "kube-controller-manager.log"), nil,
		filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+e.Kubeconfig,
		"--service-account-private-key-file="+filepath.Join(api.CertDir, "sa-signer.key"),
		"--controllers=*",
		"--leader-elect=false",
		"--secure-port=0",
	)
	if err != nil {
		return nil, err
	}
	// The install's namespace, where the webhook's replicas elect a leader.
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dnstune-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create dnstune-system: %w", err)
	}
	if err := e.createKubeDNS(ctx); err != nil {
		return nil, err
	}
	if e.CA, err = certs.NewCA("dnstune-e2e-ca", 24*time.Hour); err != nil {
		return nil, err
	}
	e.Logf("building dnstune")
	if e.Dnstune, err = BuildDnstune(e.Dir); err != nil {
		return nil, err
	}
	e.Webhook, err = e.NewWebhook("webhook", o.Policy, e.Kubeconfig)
	if err != nil {
		return nil, err
	}
	e.Webhook.ExtraArgs = o.WebhookArgs
	e.Logf("starting the dnstune webhook on 127.0.0.1:%d", e.Webhook.Port)
	if err := e.Webhook.Start(); err != nil {
		return nil, err
	}
	if err := e.ApplyWebhookConfig(ctx, e.Webhook, admissionregistrationv1.Ignore); err != nil {
		return nil, err
	}
	e.Logf("waiting for the apiserver to call the webhook")
	if err := e.WaitMutating(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Stop stops everything Start started and removes nothing but processes.
func (e *Env) Stop() {
	if e.Webhook != nil {
		e.Webhook.Stop()
	}
	e.KCM.Stop()
	if e.Env != nil {
		_ = e.Env.Stop()
	}
}

// Tails returns the last n lines of every log, for failure reports.
func (e *Env) Tails(n int) string {
	var b strings.Builder
	if e.Webhook != nil && e.Webhook.Proc != nil {
		fmt.Fprintf(&b, "--- dnstune webhook log (last %d lines) ---\n%s\n", n, e.Webhook.Proc.Tail(n))
	}
	if e.APILog != "" {
		fmt.Fprintf(&b, "--- kube-apiserver log (last %d lines) ---\n%s\n", n, TailFile(e.APILog, n))
	}
	if e.KCM != nil {
		fmt.Fprintf(&b, "--- kube-controller-manager log (last %d lines) ---\n%s\n", n, e.KCM.Tail(n))
	}
	return b.String()
}

func (e *Env) createKubeDNS(ctx context.Context) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: KubeDNSIP,
			Selector:  map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if err := e.Client.Create(ctx, svc); err != nil {
		return fmt.Errorf("failed to create kube-system/kube-dns: %w", err)
	}
	return nil
}

// Webhook is one dnstune webhook process.
type Webhook struct {
	Name        string
	Binary      string
	PolicyFile  string
	CertDir     string
	Kubeconfig  string
	Port        int
	MetricsPort int
	HealthPort  int
	ExtraArgs   []string
	Proc        *Process
	dir         string
}

// NewWebhook prepares a webhook with its own free ports, policy file and a
// serving certificate from the harness CA; Start runs it.
func (e *Env) NewWebhook(name, policy, kubeconfig string) (*Webhook, error) {
	w := &Webhook{Name: name, Binary: e.Dnstune, Kubeconfig: kubeconfig, dir: filepath.Join(e.Dir, name)}
	w.CertDir = filepath.Join(w.dir, "certs")
	if err := os.MkdirAll(w.CertDir, 0o700); err != nil {
		return nil, err
	}
	w.PolicyFile = filepath.Join(w.dir, "policy.yaml")
	if err := os.WriteFile(w.PolicyFile, []byte(policy), 0o600); err != nil {
		return nil, err
	}
	if err := e.IssueServingCert(w); err != nil {
		return nil, err
	}
	for _, p := range []*int{&w.Port, &w.MetricsPort, &w.HealthPort} {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		*p = port
	}
	return w, nil
}

// IssueServingCert writes a fresh serving certificate (new key) from the
// harness CA into the webhook's cert dir.
func (e *Env) IssueServingCert(w *Webhook) error {
	kp, err := e.CA.Issue([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, 24*time.Hour)
	if err != nil {
		return err
	}
	return kp.WriteDir(w.CertDir)
}

// URL is the webhook's admission URL.
func (w *Webhook) URL() string { return fmt.Sprintf("https://127.0.0.1:%d/mutate-v1-pod", w.Port) }

// Start runs the webhook and waits until /readyz answers 200.
func (w *Webhook) Start() error {
	args := append([]string{"webhook",
		"--policy=" + w.PolicyFile,
		"--cert-dir=" + w.CertDir,
		"--kubeconfig=" + w.Kubeconfig,
		"--port=" + strconv.Itoa(w.Port),
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(w.MetricsPort),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(w.HealthPort),
		"--cluster-dns-refresh=1s",
		"--report-interval=2s",
	}, w.ExtraArgs...)
	p, err := StartProcess(w.Name, filepath.Join(w.dir, w.Name+".log"), nil, w.Binary, args...)
	if err != nil {
		return err
	}
	w.Proc = p
	return Eventually(60*time.Second, 100*time.Millisecond, func() error {
		if exited, err := p.Exited(); exited {
			return Permanent(fmt.Errorf("webhook exited: %w\n%s", err, p.Tail(30)))
		}
		return w.Ready()
	})
}

// Ready returns nil when /readyz answers 200.
func (w *Webhook) Ready() error {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", w.HealthPort))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz %d: %s", resp.StatusCode, body)
	}
	return nil
}

// Stop ends the webhook process.
func (w *Webhook) Stop() {
	if w != nil {
		w.Proc.Stop()
	}
}

// Metrics returns the webhook's Prometheus exposition text.
func (w *Webhook) Metrics() (string, error) {
	return Scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", w.MetricsPort))
}

// ServingCert returns the certificate the webhook presents right now.
func (w *Webhook) ServingCert(roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", w.Port), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// RenderWebhookConfig renders the chart's MutatingWebhookConfiguration (as
// manifests/install.yaml has it) and points it at w, out of cluster on loopback,
// with the harness CA.
func (e *Env) RenderWebhookConfig(w *Webhook, failure admissionregistrationv1.FailurePolicyType) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	out, err := Render("--show-only", "templates/mutatingwebhook.yaml")
	if err != nil {
		return nil, err
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(out, &mwc); err != nil {
		return nil, fmt.Errorf("failed to decode the rendered webhook configuration: %w", err)
	}
	if len(mwc.Webhooks) != 1 || mwc.Webhooks[0].ClientConfig.Service == nil {
		return nil, fmt.Errorf("the chart must render one webhook called through its Service")
	}
	url := w.URL()
	mwc.Webhooks[0].ClientConfig.Service = nil
	mwc.Webhooks[0].ClientConfig.URL = &url
	mwc.Webhooks[0].ClientConfig.CABundle = e.CA.CertPEM
	mwc.Webhooks[0].FailurePolicy = &failure
	return &mwc, nil
}

// ApplyWebhookConfig creates or replaces the dnstune MutatingWebhookConfiguration.
func (e *Env) ApplyWebhookConfig(ctx context.Context, w *Webhook, failure admissionregistrationv1.FailurePolicyType) error {
	mwc, err := e.RenderWebhookConfig(w, failure)
	if err != nil {
		return err
	}
	var cur admissionregistrationv1.MutatingWebhookConfiguration
	if err := e.Client.Get(ctx, client.ObjectKey{Name: mwc.Name}, &cur); err == nil {
		mwc.ResourceVersion = cur.ResourceVersion
		return e.Client.Update(ctx, mwc)
	}
	return e.Client.Create(ctx, mwc)
}

// ProbeNamespace is an opted-in namespace the harness uses to see whether
// the apiserver calls the webhook.
const ProbeNamespace = "dnstune-probe"

// ProbePod creates a Pod in the probe namespace with a server-side dry run
// and returns what the apiserver would store.
func (e *Env) ProbePod(ctx context.Context) (*corev1.Pod, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ProbeNamespace, Labels: map[string]string{"dnstune.io/inject": "enabled"}}}
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(ns), ns); err != nil {
		if err := e.Client.Create(ctx, ns); err != nil {
			return nil, err
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: ProbeNamespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if err := e.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		return nil, err
	}
	return pod, nil
}

// WaitMutating waits until a probe pod comes back mutated.
func (e *Env) WaitMutating(ctx context.Context) error {
	return Eventually(60*time.Second, 200*time.Millisecond, func() error {
		pod, err := e.ProbePod(ctx)
		if err != nil {
			return err
		}
		if pod.Annotations["dnstune.io/profile"] == "" {
			return fmt.Errorf("probe pod not mutated yet: %s", mustJSON(pod.Spec.DNSConfig))
		}
		return nil
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
