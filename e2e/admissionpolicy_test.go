//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/policy"
)

// dnsCase is one pod of the differential table, created in a namespace
// with the given profile label ("" = the default profile).
type dnsCase struct {
	name    string
	profile string
	mod     func(*corev1.Pod)
}

func dnsCases() []dnsCase {
	cfg := func(c corev1.PodDNSConfig) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Spec.DNSConfig = &c }
	}
	return []dnsCase{
		{"plain", "", nil},
		{"own ndots wins", "", cfg(corev1.PodDNSConfig{Options: opts("ndots:5")})},
		{"own options with and without values, duplicates", "", cfg(corev1.PodDNSConfig{Options: opts("edns0", "timeout:3", "edns0")})},
		{"own single-request-reopen", "", cfg(corev1.PodDNSConfig{Options: opts("single-request-reopen")})},
		{"every option already", "", cfg(corev1.PodDNSConfig{Options: opts("ndots:1", "timeout:2", "attempts:1", "single-request-reopen")})},
		{"empty dnsConfig", "", cfg(corev1.PodDNSConfig{})},
		{"own searches kept", "", cfg(corev1.PodDNSConfig{Searches: []string{"corp.example"}})},
		{"own annotations kept", "", func(p *corev1.Pod) { p.Annotations = map[string]string{"team": "a/b"} }},
		{"hostNetwork ClusterFirst", "", func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
		{"hostNetwork ClusterFirstWithHostNet", "", func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet }},
		{"dnsPolicy Default", "", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }},
		{"dnsPolicy None", "", func(p *corev1.Pod) {
			p.Spec.DNSPolicy, p.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
		}},
		{"pod opt-out", "", func(p *corev1.Pod) { p.Labels["dnstune.io/inject"] = "disabled" }},
		{"kube-dns pod", "", func(p *corev1.Pod) { p.Labels["k8s-app"] = "kube-dns" }},
		{"windows by spec.os", "", func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }},
		{"windows by nodeSelector", "", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "windows"} }},
		{"unknown profile label", "fast", nil},
		{"nodelocal over the nameserver limit", "nodelocal", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}}
		}},
		{"nodelocal over the search limit", "nodelocal", func(p *corev1.Pod) {
			var s []string
			for i := range 30 {
				s = append(s, fmt.Sprintf("s%d.example", i))
			}
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: s}
		}},
		{"nodelocal", "nodelocal", nil},
		{"nodelocal with own nameserver", "nodelocal", cfg(corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}})},
		{"nodelocal over the nameserver limit", "nodelocal", cfg(corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}})},
		{"nodelocal with own searches and options", "nodelocal", cfg(corev1.PodDNSConfig{Searches: []string{"corp.example"}, Options: opts("ndots:3", "edns0")})},
		{"nodelocal, own cluster search already there", "nodelocal", cfg(corev1.PodDNSConfig{Searches: []string{"svc.cluster.local"}})},
		{"nodelocal hostNetwork WithHostNet", "nodelocal", func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet }},
	}
}

// storedDNS is what a backend left on a stored pod, with the namespace's
// name replaced by NS (the searches name it).
func storedDNS(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dnsPolicy=%s annotation=%q", p.Spec.DNSPolicy, p.Annotations[policy.ProfileLabel])
	if c := p.Spec.DNSConfig; c != nil {
		searches := slices.Clone(c.Searches)
		for i, s := range searches {
			if ns, rest, ok := strings.Cut(s, ".svc."); ok && ns == p.Namespace {
				searches[i] = "NS.svc." + rest
			}
		}
		fmt.Fprintf(&b, " nameservers=%v searches=%v options=%s", c.Nameservers, searches, options(p))
	}
	return b.String()
}

// The compiled MutatingAdmissionPolicy stores the same pods as the webhook
// for every case of the table, and keeps mutating while dnstune is down:
// the webhook's namespaces are created and judged with it running; the
// compiled policy's namespaces (selected by an extra label the webhook's
// namespaces lack) with the webhook stopped. The offline decision
// (Decide + Apply, as dnstune mutate does) agrees with both. Run for the
// shipped policy and for examples/policy.yaml (rules: a glob, a label
// selector with audit).
func TestCompiledAdmissionPolicyMatchesWebhook(t *testing.T) {
	t.Run("shipped policy", func(t *testing.T) { differential(t, testPolicy, dnsCases(), "") })
	examples := mustRead("../examples/policy.yaml")
	ruleCases := []dnsCase{
		{"glob rule picks nodelocal", "", nil},
		{"glob rule, own options", "", func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts("ndots:4")} }},
	}
	t.Run("rules: glob", func(t *testing.T) { differential(t, examples, ruleCases, "payments-") })
	t.Run("rules: audit selector", func(t *testing.T) {
		differential(t, examples, []dnsCase{{"audit rule leaves pods alone", "", nil}}, "legacy-", "team", "legacy")
	})
}

// differential runs the cases under policyYAML through the webhook and the
// compiled policy. Namespaces are named prefix + wh-/ma-; extra labels are
// key, value pairs.
func differential(t *testing.T, policyYAML string, cases []dnsCase, prefix string, extra ...string) {
	ctx := context.Background()
	pol, err := policy.Load("policy", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	if policyYAML != testPolicy {
		useWebhookPolicy(t, policyYAML)
	}
	objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{NamespaceSelector: map[string]string{"dnstune-e2e/backend": "map"}})
	if err != nil {
		t.Fatal(err)
	}
	createCompiled(t, objs)
	labels := func(profile string, mapBackend bool) map[string]string {
		l := enabled()
		if profile != "" {
			l[policy.ProfileLabel] = profile
		}
		if mapBackend {
			l["dnstune-e2e/backend"] = "map"
		}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	nsFor := map[string]map[bool]string{}
	for _, c := range cases {
		if nsFor[c.profile] == nil {
			nsFor[c.profile] = map[bool]string{
				false: namespace(t, prefix+"wh", labels(c.profile, false)),
				true:  namespace(t, prefix+"ma", labels(c.profile, true)),
			}
		}
	}
	createIn := func(c dnsCase, ns string) (*corev1.Pod, error) {
		p := newPod(ns, func(p *corev1.Pod) {
			if c.mod != nil {
				c.mod(p)
			}
		})
		err := env.Client.Create(ctx, p, client.DryRunAll)
		return p, err
	}
	webhookResult := map[string]string{}
	for _, c := range cases {
		p, err := createIn(c, nsFor[c.profile][false])
		if err != nil {
			t.Fatalf("%s (webhook): %v", c.name, err)
		}
		webhookResult[c.name] = storedDNS(p)
	}

	stopWebhookForTest(t)
	// The compiled policy takes effect within moments of being created:
	// wait until the first case comes out as the webhook made it.
	eventually(t, 30*time.Second, func() error {
		p, err := createIn(cases[0], nsFor[cases[0].profile][true])
		if err != nil {
			return err
		}
		if got := storedDNS(p); got != webhookResult[cases[0].name] {
			return fmt.Errorf("compiled policy not in effect yet: %s; the webhook stored %s", got, webhookResult[cases[0].name])
		}
		return nil
	})
	kubeDNS := netip.MustParseAddr(kubeDNSIP(t))
	for _, c := range cases {
		p, err := createIn(c, nsFor[c.profile][true])
		if err != nil {
			t.Errorf("%s (compiled policy, dnstune down): %v", c.name, err)
			continue
		}
		got, want := storedDNS(p), webhookResult[c.name]
		if got != want {
			t.Errorf("%s:\n compiled policy: %s\n webhook:         %s", c.name, got, want)
		}
		o := newPod(nsFor[c.profile][false], func(p *corev1.Pod) {
			if c.mod != nil {
				c.mod(p)
			}
		})
		var ns corev1.Namespace
		if err := env.Client.Get(ctx, client.ObjectKey{Name: o.Namespace}, &ns); err != nil {
			t.Fatal(err)
		}
		d := policy.Decide(o, policy.Namespace{Name: ns.Name, Labels: ns.Labels}, pol, kubeDNS)
		d.Apply(&o.Annotations, &o.Spec)
		if o.Spec.DNSPolicy == "" {
			o.Spec.DNSPolicy = corev1.DNSClusterFirst
		}
		if off := storedDNS(o); off != want {
			t.Errorf("%s:\n offline: %s\n webhook: %s", c.name, off, want)
		}
	}
}

// createCompiled creates every compiled object, and deletes them when the
// test ends.
func createCompiled(t *testing.T, objs *admissionpolicy.Objects) {
	t.Helper()
	ctx := context.Background()
	for _, o := range objs.All() {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, o) })
	}
}

// policyMessage is a compiled policy's warning without the prefix
// kube-apiserver puts before it ("Validation failed for
// ValidatingAdmissionPolicy 'P' with binding 'B': ").
func policyMessage(w string) string {
	if rest, ok := strings.CutPrefix(w, "Validation failed for ValidatingAdmissionPolicy '"); ok {
		if _, after, ok := strings.Cut(rest, "' with binding '"); ok {
			if _, msg, ok := strings.Cut(after, "': "); ok {
				return msg
			}
		}
	}
	return w
}

// stopWebhookForTest stops the shared webhook and starts it again (and
// waits until the apiserver calls it) when the test ends.
func stopWebhookForTest(t *testing.T) {
	t.Helper()
	env.Webhook.Stop()
	t.Cleanup(func() {
		if err := env.Webhook.Start(); err != nil {
			t.Errorf("restart the webhook: %v", err)
		}
		if err := env.WaitMutating(context.Background()); err != nil {
			t.Error(err)
		}
	})
}

// useWebhookPolicy restarts the shared webhook with another policy for the
// rest of the test, and restores the shipped one after.
func useWebhookPolicy(t *testing.T, content string) {
	t.Helper()
	ctx := context.Background()
	original, err := os.ReadFile(env.Webhook.PolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	swap := func(s string) {
		env.Webhook.Stop()
		if err := os.WriteFile(env.Webhook.PolicyFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := env.Webhook.Start(); err != nil {
			t.Fatal(err)
		}
		if err := env.WaitMutating(ctx); err != nil {
			t.Fatal(err)
		}
	}
	swap(content)
	t.Cleanup(func() { swap(string(original)) })
}

func kubeDNSIP(t *testing.T) string {
	t.Helper()
	var svc corev1.Service
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			t.Fatal("no kube-system/kube-dns Service in the e2e cluster")
		}
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

// The admission-policy backend, as users run it with no webhook
// configuration and the RBAC of manifests/install-admission-policy.yaml (its
// ServiceAccount's token): dnstune admission-policy applies the compiled policies,
// pods are mutated by kube-apiserver alone, a policy edit re-renders them,
// objects the policy no longer yields are deleted, and with the backend's
// process stopped pods are still mutated.
func TestAdmissionPolicyBackend(t *testing.T) {
	ctx := context.Background()
	// No webhook in this mode: stop it and remove its configuration.
	env.Webhook.Stop()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "dnstune"}}
	if err := env.Client.Delete(ctx, mwc); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.ApplyWebhookConfig(ctx, env.Webhook, admissionregistrationv1.Ignore); err != nil {
			t.Errorf("restore the webhook configuration: %v", err)
		}
		if err := env.Webhook.Start(); err != nil {
			t.Errorf("restart the webhook: %v", err)
		}
		if err := env.WaitMutating(ctx); err != nil {
			t.Error(err)
		}
	})
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	writeFile := func(s string) {
		t.Helper()
		if err := os.WriteFile(file+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(testPolicy)
	// As installed: the install file's ServiceAccount and RBAC, and its token.
	install, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "manifests/install-admission-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	applyInstall(ctx, t, install)
	kubeconfig, err := env.ServiceAccountKubeconfig(ctx, "dnstune-system", "dnstune-webhook")
	if err != nil {
		t.Fatal(err)
	}
	health, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// What an earlier dnstune compiled (one mutating policy per mode): the
	// backend deletes it, as an upgrade must.
	legacy := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: admissionpolicy.LegacyNames[0], Labels: map[string]string{"app.kubernetes.io/managed-by": "dnstune"}},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}}}},
			Mutations: []admissionregistrationv1.Mutation{{PatchType: admissionregistrationv1.PatchTypeJSONPatch, JSONPatch: &admissionregistrationv1.JSONPatch{
				Expression: `false ? [JSONPatch{op: "add", path: "/metadata/labels", value: {}}] : []`}}},
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	if err := env.Client.Create(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	proc, err := framework.StartProcess("admission-policy", filepath.Join(dir, "backend.log"), nil, env.Dnstune, "admission-policy",
		"--policy="+file, "--kubeconfig="+kubeconfig, "--metrics-bind-address=0",
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", health), "--resync=5s")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			proc.Stop()
		}
		for _, name := range append([]string{admissionpolicy.Name}, admissionpolicy.LegacyNames...) {
			_ = env.Client.Delete(ctx, &admissionregistrationv1.MutatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name}})
			_ = env.Client.Delete(ctx, &admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
		for _, name := range []string{admissionpolicy.UnknownProfileName, admissionpolicy.AuditName, admissionpolicy.WarningsName} {
			_ = env.Client.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name}})
			_ = env.Client.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
		// kube-apiserver keeps using a deleted policy for a moment: wait
		// until it stops, so later tests see only what they set up.
		probeNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "map-gone-", Labels: enabled()}}
		if err := env.Client.Create(ctx, probeNS); err == nil {
			defer func() { _ = env.Client.Delete(ctx, probeNS) }()
			if err := framework.Eventually(30*time.Second, 200*time.Millisecond, func() error {
				p := newPod(probeNS.Name)
				if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
					return err
				}
				if options(p) != "" {
					return errors.New("the deleted compiled policy still mutates")
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			t.Logf("backend log:\n%s", proc.Tail(40))
		}
	})
	eventually(t, 60*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	var m admissionregistrationv1.MutatingAdmissionPolicy
	if err := env.Client.Get(ctx, client.ObjectKey{Name: admissionpolicy.Name}, &m); err != nil {
		t.Fatalf("compiled policy %s not applied: %v", admissionpolicy.Name, err)
	}
	for _, name := range []string{admissionpolicy.AuditName, admissionpolicy.WarningsName} {
		var vap admissionregistrationv1.ValidatingAdmissionPolicy
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &vap); err != nil {
			t.Fatalf("validating policy %s not applied: %v", name, err)
		}
	}
	gone := func(o client.Object) func() error {
		return func() error {
			err := env.Client.Get(ctx, client.ObjectKey{Name: o.GetName()}, o)
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return err
			}
			return fmt.Errorf("stale %s still there", o.GetName())
		}
	}
	eventually(t, 30*time.Second, gone(legacy))
	ns := namespace(t, "map-backend", enabled())
	mutatedWith := func(opts string) func() error {
		return func() error {
			p := newPod(ns)
			if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
				return err
			}
			if got := options(p); got != opts || p.Annotations[policy.ProfileLabel] != "resilient" {
				return fmt.Errorf("pod options %q annotation %q, want %q", got, p.Annotations[policy.ProfileLabel], opts)
			}
			return nil
		}
	}
	eventually(t, 30*time.Second, mutatedWith(resilientOptions))

	// A policy edit re-renders; what the policy no longer yields goes (no
	// profile adds single-request-reopen or keeps ndots for musl: no
	// enforced namespace's pod can get a warning).
	writeFile("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 3, timeout: 1, attempts: 3}\n    musl: apply\n")
	eventually(t, 30*time.Second, mutatedWith("ndots:3 timeout:1 attempts:3"))
	eventually(t, 30*time.Second, gone(&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: admissionpolicy.WarningsName}}))
	eventually(t, 30*time.Second, gone(&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: admissionpolicy.WarningsName}}))

	// Outage: every dnstune process gone, pods are still mutated.
	proc.Stop()
	stopped = true
	for range 5 {
		if err := mutatedWith("ndots:3 timeout:1 attempts:3")(); err != nil {
			t.Fatalf("with dnstune stopped: %v", err)
		}
	}
}

// randomCases are n pods drawn from the fields the decision reads: dnsPolicy
// and hostNetwork, the pod's own options (with and without values,
// duplicates), nameservers and searches, opt-out and DNS-server labels,
// Windows, and the namespace's profile label.
func randomCases(seed int64, n int) []dnsCase {
	r := rand.New(rand.NewSource(seed)) // #nosec G404 -- test data, reproducible by seed.
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	var out []dnsCase
	for i := range n {
		profile := pick("", "", "nodelocal", "resilient", "fast")
		policyName := pick("", "ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
		hostNet := r.Intn(4) == 0
		var optWords []string
		for range r.Intn(4) {
			optWords = append(optWords, pick("ndots:1", "ndots:5", "timeout:3", "attempts:1", "edns0", "single-request-reopen", "rotate", "edns0"))
		}
		var servers, searches []string
		for range r.Intn(3) {
			servers = append(servers, pick("1.1.1.1", "8.8.8.8", "10.0.0.10", "169.254.20.10"))
		}
		for range r.Intn(3) {
			searches = append(searches, pick("corp.example", "svc.cluster.local", "a.b.c"))
		}
		optOut, dnsServer, windows := r.Intn(12) == 0, r.Intn(12) == 0, r.Intn(12) == 0
		image := pick("nginx:1.27", "nginx:1.27", "alpine:3.20", "python:3.12-alpine")
		muslInit := r.Intn(8) == 0
		name := fmt.Sprintf("random %d: profile=%q dnsPolicy=%q hostNetwork=%v options=%v nameservers=%v searches=%v optOut=%v dnsServer=%v windows=%v image=%s muslInit=%v",
			i, profile, policyName, hostNet, optWords, servers, searches, optOut, dnsServer, windows, image, muslInit)
		out = append(out, dnsCase{name: name, profile: profile, mod: func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = image
			if muslInit {
				p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "alpine"}}
			}
			p.Spec.DNSPolicy, p.Spec.HostNetwork = corev1.DNSPolicy(policyName), hostNet
			if len(optWords) > 0 || len(servers) > 0 || len(searches) > 0 {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts(optWords...), Nameservers: slices.Compact(slices.Clone(servers)), Searches: searches}
			}
			if policyName == "None" && (p.Spec.DNSConfig == nil || len(p.Spec.DNSConfig.Nameservers) == 0) {
				if p.Spec.DNSConfig == nil {
					p.Spec.DNSConfig = &corev1.PodDNSConfig{}
				}
				p.Spec.DNSConfig.Nameservers = []string{"1.1.1.1"}
			}
			if optOut {
				p.Labels["dnstune.io/inject"] = "disabled"
			}
			if dnsServer {
				p.Labels["k8s-app"] = "kube-dns"
			}
			if windows {
				p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
			}
		}})
	}
	return out
}

// A few hundred generated pods: the webhook and the compiled policy store
// the same. The seed is fixed (change it to explore; a failure names the case).
func TestCompiledAdmissionPolicyRandomCases(t *testing.T) {
	// The first case must be one the compiled policy visibly acts on, for
	// the readiness wait: put a plain pod first.
	plain := []dnsCase{{"plain first", "", nil}}
	t.Run("shipped policy", func(t *testing.T) {
		differential(t, testPolicy, append(plain, randomCases(20261201, 300)...), "")
	})
	// Another policy: its own profile values and musl settings, rules by
	// glob (these namespaces match payments-*) and selector, a shorter
	// exclude list.
	other := `apiVersion: dnstune.io/v1alpha1
kind: Policy
clusterDomain: corp.local
defaultProfile: fast
profiles:
  fast: {options: {ndots: 1, attempts: 2}, musl: apply}
  nodelocal: {mode: nodelocal, options: {ndots: 3, timeout: 2}, musl: skip}
  resilient: {options: {timeout: 1, singleRequestReopen: true}}
rules:
  - namespaces: ["payments-*"]
    profile: resilient
  - namespaceSelector: {matchLabels: {team: legacy}}
    profile: nodelocal
excludeNamespaces: [kube-system]
`
	t.Run("another policy", func(t *testing.T) {
		differential(t, other, append(plain, randomCases(42, 150)...), "payments-")
	})
}

// warningCase is a pod of the warnings table; differs, when set, says why
// the compiled policy's warning differs from the webhook's in enforced
// namespaces (the pod is seen after mutation): such a case is compared in
// audit namespaces only.
type warningCase struct {
	dnsCase
	differs string
}

// The compiled ValidatingAdmissionPolicies give the webhook's warnings word
// for word (the apiserver's own prefix before a policy's message aside),
// for the same pods: in audit namespaces what would change, and the musl,
// unknown-profile and limit warnings; in enforced namespaces the same
// warnings beside the mutation.
func TestCompiledWarningsMatchWebhook(t *testing.T) {
	pol, err := policy.Load("shipped", []byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	pol.ClusterDNS = netip.MustParseAddr(kubeDNSIP(t))
	objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{NamespaceSelector: map[string]string{"dnstune-e2e/backend": "map"}})
	if err != nil {
		t.Fatal(err)
	}
	createCompiled(t, objs)
	alpine := func(opt ...string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = "alpine:3.20"
			if len(opt) > 0 {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts(opt...)}
			}
		}
	}
	c := func(name, profile string, mod func(*corev1.Pod)) warningCase {
		return warningCase{dnsCase: dnsCase{name, profile, mod}}
	}
	cases := []warningCase{
		c("plain", "", nil),
		c("own ndots", "", func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts("ndots:5", "edns0")} }),
		c("every option already", "", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts("ndots:1", "timeout:2", "attempts:1", "single-request-reopen")}
		}),
		c("hostNetwork", "", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		c("musl image", "", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "python:3.12-alpine" }),
		c("musl image by name, with a digest", "", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "docker.io/library/alpine@sha256:0123" }),
		{dnsCase: dnsCase{"musl image that sets single-request-reopen", "", alpine("single-request-reopen")},
			differs: "after mutation the pod's own single-request-reopen can't be told from the profile's"},
		// The pod's own ndots wins: the warning names it (and its exposure below 5).
		c("musl image with its own ndots:2", "", alpine("ndots:2")),
		c("musl image with its own ndots:7", "", alpine("ndots:7")),
		c("musl image, nodelocal", "nodelocal", alpine()),
		c("musl image with its own ndots:2, nodelocal", "nodelocal", alpine("ndots:2")),
		{dnsCase: dnsCase{"musl image with its own ndots:5, nodelocal", "nodelocal", alpine("ndots:5")},
			differs: "after mutation the pod's own ndots:5 can't be told from the ndots:5 nodelocal gives musl pods"},
		c("musl init container and container", "", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox:1.36"}}
			p.Spec.Containers[0].Image = "nginx:1.27-alpine"
		}),
		c("alpine-looking registry is not musl", "", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "alpine.example.com:5000/app:1" }),
		c("unknown profile label", "fast", nil),
		c("nodelocal", "nodelocal", nil),
		c("nodelocal with own servers and searches", "nodelocal", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"corp.example"}}
		}),
		c("nodelocal over the nameserver limit", "nodelocal", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}}
		}),
	}
	for _, inject := range []string{policy.InjectAudit, policy.InjectEnabled} {
		t.Run(inject, func(t *testing.T) {
			labels := func(profile string, mapBackend bool) map[string]string {
				l := map[string]string{policy.InjectLabel: inject}
				if profile != "" {
					l[policy.ProfileLabel] = profile
				}
				if mapBackend {
					l["dnstune-e2e/backend"] = "map"
				}
				return l
			}
			nsFor := map[string]map[bool]string{}
			for _, c := range cases {
				if nsFor[c.profile] == nil {
					nsFor[c.profile] = map[bool]string{false: namespace(t, "ww", labels(c.profile, false)), true: namespace(t, "wm", labels(c.profile, true))}
				}
			}
			// run creates the case's pod in ns and returns what was stored
			// and the warnings (searches name the namespace: NS stands for it).
			run := func(c warningCase, ns string) (string, []string) {
				p := newPod(ns, func(p *corev1.Pod) {
					if c.mod != nil {
						c.mod(p)
					}
				})
				sent := options(p)
				stored, w := create(t, p, client.DryRunAll)
				if inject == policy.InjectAudit && options(stored) != sent {
					t.Errorf("%s: an audit namespace's pod was changed: %s", c.name, options(stored))
				}
				for i := range w {
					w[i] = strings.ReplaceAll(policyMessage(w[i]), ns, "NS")
				}
				return storedDNS(stored), w
			}
			type result struct {
				stored   string
				warnings []string
			}
			fromWebhook := map[string]result{}
			for _, c := range cases {
				stored, w := run(c, nsFor[c.profile][false])
				fromWebhook[c.name] = result{stored, w}
			}
			stopWebhookForTest(t)
			// The compiled policies take effect within moments of being
			// created: wait until a mutated pod and a warned one come out as
			// the webhook made them.
			eventually(t, 30*time.Second, func() error {
				for _, c := range []warningCase{cases[0], cases[slices.IndexFunc(cases, func(c warningCase) bool { return c.name == "musl image" })]} {
					stored, w := run(c, nsFor[c.profile][true])
					if want := fromWebhook[c.name]; stored != want.stored || fmt.Sprint(w) != fmt.Sprint(want.warnings) {
						return fmt.Errorf("compiled policies not in effect yet: %s: %s %q", c.name, stored, w)
					}
				}
				return nil
			})
			for _, c := range cases {
				stored, w := run(c, nsFor[c.profile][true])
				want := fromWebhook[c.name]
				if stored != want.stored {
					t.Errorf("%s: stored\n compiled: %s\n webhook:  %s", c.name, stored, want.stored)
				}
				if inject == policy.InjectEnabled && c.differs != "" {
					if fmt.Sprint(w) == fmt.Sprint(want.warnings) {
						t.Errorf("%s: documented to differ (%s), but the warnings agree now: %q; drop the note", c.name, c.differs, w)
					}
					continue
				}
				if fmt.Sprint(w) != fmt.Sprint(want.warnings) {
					t.Errorf("%s:\n compiled: %q\n webhook:  %q", c.name, w, want.warnings)
				}
			}
			// The table must exercise the warnings, not agree on silence.
			if w := fromWebhook["musl image"].warnings; len(w) == 0 {
				t.Errorf("the webhook gave the musl image no warning")
			}
			if inject == policy.InjectAudit {
				if w := fromWebhook["plain"].warnings; len(w) != 1 || !strings.HasPrefix(w[0], "dnstune audit: would apply profile resilient") {
					t.Errorf("the webhook's audit warning changed: %q", w)
				}
			}
		})
	}
}

// The compiled policy leaves excludeNamespaces, opted-out pods and the DNS
// servers' own pods alone, with their exclusions in its match conditions
// (not its bindings' selectors): an excluded namespace that is opted in,
// enforced or audited, gets neither a mutation nor a warning, while its
// sibling that is not excluded gets both.
func TestCompiledPolicyExclusions(t *testing.T) {
	mk := func(prefix string, inject string) string {
		return namespace(t, prefix, map[string]string{policy.InjectLabel: inject, "dnstune-e2e/backend": "excl"})
	}
	enforcedOn, enforcedOff := mk("excl-on", policy.InjectEnabled), mk("excl-off", policy.InjectEnabled)
	auditOn, auditOff := mk("excl-audit-on", policy.InjectAudit), mk("excl-audit-off", policy.InjectAudit)
	pol, err := policy.Load("policy", []byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	pol.ExcludeNamespaces = append(pol.ExcludeNamespaces, enforcedOff, auditOff)
	pol.ClusterDNS = netip.MustParseAddr(kubeDNSIP(t))
	objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{NamespaceSelector: map[string]string{"dnstune-e2e/backend": "excl"}})
	if err != nil {
		t.Fatal(err)
	}
	stopWebhookForTest(t)
	createCompiled(t, objs)
	musl := func(p *corev1.Pod) { p.Spec.Containers[0].Image = "alpine:3.20" }
	create := func(ns string, mods ...func(*corev1.Pod)) (*corev1.Pod, []string) {
		t.Helper()
		return create(t, newPod(ns, mods...), client.DryRunAll)
	}
	// In effect once the enforced sibling's pod is mutated and both
	// validating policies speak (each takes effect on its own).
	eventually(t, 30*time.Second, func() error {
		if p, _ := create(enforcedOn); p.Annotations[policy.ProfileLabel] == "" {
			return fmt.Errorf("compiled policy not in effect yet: %s", storedDNS(p))
		}
		if _, w := create(enforcedOn, musl); len(w) == 0 {
			return fmt.Errorf("%s not in effect yet", admissionpolicy.WarningsName)
		}
		if _, w := create(auditOn); len(w) == 0 {
			return fmt.Errorf("%s not in effect yet", admissionpolicy.AuditName)
		}
		return nil
	})
	for _, c := range []struct {
		name       string
		ns         string
		mods       []func(*corev1.Pod)
		mutated    bool
		warnedWith string
	}{
		{"enforced", enforcedOn, nil, true, ""},
		{"enforced, musl", enforcedOn, []func(*corev1.Pod){musl}, true, "musl"},
		{"enforced, excluded namespace", enforcedOff, nil, false, ""},
		{"enforced, excluded namespace, musl", enforcedOff, []func(*corev1.Pod){musl}, false, ""},
		{"enforced, opted-out pod", enforcedOn, []func(*corev1.Pod){func(p *corev1.Pod) { p.Labels[policy.InjectLabel] = policy.InjectDisabled }, musl}, false, ""},
		{"enforced, node-local-dns pod", enforcedOn, []func(*corev1.Pod){func(p *corev1.Pod) { p.Labels["k8s-app"] = "node-local-dns" }, musl}, false, ""},
		{"audit", auditOn, nil, false, "would apply"},
		{"audit, excluded namespace", auditOff, nil, false, ""},
		{"audit, kube-dns pod", auditOn, []func(*corev1.Pod){func(p *corev1.Pod) { p.Labels["k8s-app"] = "kube-dns" }}, false, ""},
	} {
		p, warnings := create(c.ns, c.mods...)
		if got := p.Annotations[policy.ProfileLabel] != ""; got != c.mutated {
			t.Errorf("%s: mutated %v, want %v: %s", c.name, got, c.mutated, storedDNS(p))
		}
		joined := strings.Join(warnings, "\n")
		if c.warnedWith == "" && len(warnings) > 0 {
			t.Errorf("%s: warnings %q, want none", c.name, warnings)
		}
		if c.warnedWith != "" && !strings.Contains(joined, c.warnedWith) {
			t.Errorf("%s: warnings %q, want one with %q", c.name, warnings, c.warnedWith)
		}
	}
}
