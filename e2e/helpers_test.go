//go:build e2e

package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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

// sent keeps each created pod as it was sent, by the UID the apiserver
// gave it, for assertUntouched.
var sent sync.Map // types.UID -> *corev1.Pod

// create creates pod and returns it as stored, with the warnings the
// apiserver sent back.
func create(t *testing.T, pod *corev1.Pod, opts ...client.CreateOption) (*corev1.Pod, []string) {
	t.Helper()
	c, warnings := warningClient(t)
	orig := pod.DeepCopy()
	if err := c.Create(context.Background(), pod, opts...); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	sent.Store(pod.UID, orig)
	return pod, warnings()
}

func warningClient(t *testing.T) (client.Client, func() []string) {
	t.Helper()
	w := &framework.Warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, w.Messages
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

// assertUntouched checks that the stored pod has exactly the DNS settings
// and annotations it was created with (dnsPolicy defaulted to ClusterFirst
// by the apiserver).
func assertUntouched(t *testing.T, p *corev1.Pod) {
	t.Helper()
	v, ok := sent.Load(p.UID)
	if !ok {
		t.Fatalf("pod %s was not created with create()", p.Name)
	}
	orig := v.(*corev1.Pod)
	want := orig.Spec.DNSPolicy
	if want == "" {
		want = corev1.DNSClusterFirst
	}
	if p.Spec.DNSPolicy != want {
		t.Errorf("dnsPolicy = %q, sent %q", p.Spec.DNSPolicy, orig.Spec.DNSPolicy)
	}
	if !equality.Semantic.DeepEqual(p.Spec.DNSConfig, orig.Spec.DNSConfig) {
		t.Errorf("dnsConfig = %+v, sent %+v", p.Spec.DNSConfig, orig.Spec.DNSConfig)
	}
	if !equality.Semantic.DeepEqual(p.Annotations, orig.Annotations) {
		t.Errorf("annotations = %v, sent %v", p.Annotations, orig.Annotations)
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

// metric scrapes the webhook and returns the named metric's value, summed
// over the samples whose labels include those given, and whether any did.
func metric(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	text, err := env.Webhook.Metrics()
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	m, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	return m.Value(name, labels)
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

// createWebDeployment creates Deployment web (two pause replicas, labels
// app=web) in ns.
func createWebDeployment(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
			},
		},
	}
	if err := env.Client.Create(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
	return dep
}
