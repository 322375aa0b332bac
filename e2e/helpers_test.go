package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

// namespace creates a namespace with a unique name and the given labels,
// deleted when the test ends.
func namespace(t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ns) })
	return ns.Name
}

func enabled() map[string]string { return map[string]string{"dnstune.io/inject": "enabled"} }

func newPod(ns string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: ns, Labels: map[string]string{"app": "e2e"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

// create creates pod and returns it as stored, with the warnings the
// apiserver sent back.
func create(t *testing.T, pod *corev1.Pod, opts ...client.CreateOption) (*corev1.Pod, []string) {
	t.Helper()
	c, warnings := warningClient(t)
	if err := c.Create(context.Background(), pod, opts...); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	return pod, warnings()
}

type warningCollector struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningCollector) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func warningClient(t *testing.T) (client.Client, func() []string) {
	t.Helper()
	w := &warningCollector{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, func() []string {
		w.mu.Lock()
		defer w.mu.Unlock()
		return append([]string(nil), w.msgs...)
	}
}

func options(p *corev1.Pod) string {
	if p.Spec.DNSConfig == nil {
		return ""
	}
	var words []string
	for _, o := range p.Spec.DNSConfig.Options {
		w := o.Name
		if o.Value != nil {
			w += ":" + *o.Value
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

const resilientOptions = "ndots:2 timeout:1 attempts:3 single-request-reopen"

func assertMutated(t *testing.T, p *corev1.Pod, profile, opts string) {
	t.Helper()
	if got := options(p); got != opts {
		t.Errorf("dnsConfig.options = %q, want %q", got, opts)
	}
	if got := p.Annotations["dnstune.io/profile"]; got != profile {
		t.Errorf("dnstune.io/profile annotation = %q, want %q", got, profile)
	}
}

func assertUntouched(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if _, ok := p.Annotations["dnstune.io/profile"]; ok {
		t.Errorf("pod carries the dnstune.io/profile annotation: %v", p.Annotations)
	}
	if p.Spec.DNSConfig != nil && options(p) != "" && !strings.Contains(p.Name, "own") {
		t.Errorf("pod got dnsConfig options %q", options(p))
	}
}

// eventually retries f for up to timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	if err := framework.Eventually(timeout, 200*time.Millisecond, f); err != nil {
		t.Fatal(err)
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

func metric(t *testing.T, name string) string {
	t.Helper()
	text, err := env.Webhook.Metrics()
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, name) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// applyYAML server-side applies every object of a YAML stream; kinds for
// which dryRun says so are applied as a server-side dry run.
func applyYAML(ctx context.Context, t *testing.T, data []byte, dryRun func(kind string) bool) {
	t.Helper()
	objs, err := framework.Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := env.Apply(ctx, o, dryRun(o.GetKind())); err != nil {
			t.Fatal(err)
		}
	}
}
