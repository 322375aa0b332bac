package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/policy"
)

type fakeNamespaces map[string]map[string]string

func (f fakeNamespaces) Labels(_ context.Context, name string) (map[string]string, error) {
	l, ok := f[name]
	if !ok {
		return nil, errors.New("namespace " + name + " not found")
	}
	return l, nil
}

var testNamespaces = fakeNamespaces{
	"shop":        {policy.InjectLabel: policy.InjectEnabled},
	"audited":     {policy.InjectLabel: policy.InjectAudit},
	"local":       {policy.InjectLabel: policy.InjectEnabled, policy.ProfileLabel: "nodelocal"},
	"plain":       {},
	"kube-system": {policy.InjectLabel: policy.InjectEnabled},
}

func newTestHandler(reg prometheus.Registerer) *Handler {
	pol := policy.Default()
	return &Handler{
		Policy:     func() *policy.Policy { return pol },
		Namespaces: testNamespaces,
		ClusterDNS: func() netip.Addr { return netip.MustParseAddr("10.96.0.10") },
		Metrics:    newMetrics(reg),
		Log:        logr.Discard(),
	}
}

func testPod(mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			DNSPolicy:     corev1.DNSClusterFirst,
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers: []corev1.Container{{
				Name: "app", Image: "nginx:1.27",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
			}},
		},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func review(t testing.TB, pod *corev1.Pod, mods ...func(*admissionv1.AdmissionRequest)) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		UID:       "8d2a5c4e-0000-4000-8000-000000000001",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Operation: admissionv1.Create,
		Namespace: pod.Namespace,
	}
	req.Object.Raw = raw
	for _, m := range mods {
		m(req)
	}
	b, err := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: reviewTypeMeta, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serve(t testing.TB, h http.Handler, body []byte) (*httptest.ResponseRecorder, *admissionv1.AdmissionResponse) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		return w, nil
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, w.Body.String())
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("bad response envelope: %s", w.Body.String())
	}
	return w, out.Response
}

// applyPatch applies a response's JSON patch to the pod, as the apiserver does.
func applyPatch(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw, _ := json.Marshal(pod)
	if resp.Patch != nil {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type = %v", resp.PatchType)
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("bad patch %s: %v", resp.Patch, err)
		}
		if raw, err = p.Apply(raw); err != nil {
			t.Fatalf("patch %s does not apply: %v", resp.Patch, err)
		}
	}
	var out corev1.Pod
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestHandlerDecisions(t *testing.T) {
	opts := []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}, {Name: "timeout", Value: ptr("1")}, {Name: "attempts", Value: ptr("3")}, {Name: "single-request-reopen"}}
	nodelocalOpts := []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}, {Name: "timeout", Value: ptr("1")}, {Name: "attempts", Value: ptr("2")}}
	tests := []struct {
		name     string
		pod      *corev1.Pod
		ns       string
		want     func(*corev1.Pod) // nil: unchanged
		warn     string
		audit    string
		metric   []string // profile, mode, result, reason
		patchOps int
	}{
		{name: "opted-in namespace", pod: testPod(), ns: "shop", patchOps: 2,
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts}
				p.Annotations = map[string]string{"dnstune.io/profile": "resilient"}
			}, metric: []string{"resilient", "options", "mutated", ""}},
		{name: "existing dnsConfig and annotations are extended, not replaced", ns: "shop", patchOps: 2,
			pod: testPod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{"team": "a/b"}
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"corp.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("3")}}}
			}),
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig.Options = append(p.Spec.DNSConfig.Options, opts[1:]...)
				p.Annotations["dnstune.io/profile"] = "resilient"
			}, metric: []string{"resilient", "options", "mutated", ""}},
		{name: "nodelocal profile", pod: testPod(func(p *corev1.Pod) { p.Namespace = "local" }), ns: "local", patchOps: 3,
			want: func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"169.254.20.10", "10.96.0.10"},
					Searches:    []string{"local.svc.cluster.local", "svc.cluster.local", "cluster.local"},
					Options:     nodelocalOpts,
				}
				p.Annotations = map[string]string{"dnstune.io/profile": "nodelocal"}
			}, metric: []string{"nodelocal", "nodelocal", "mutated", ""}},
		{name: "audit namespace", pod: testPod(func(p *corev1.Pod) { p.Namespace = "audited" }), ns: "audited",
			warn:   "dnstune audit: would apply profile resilient (options): add options ndots:2 timeout:1 attempts:3 single-request-reopen",
			audit:  "profile resilient (options): add options ndots:2 timeout:1 attempts:3 single-request-reopen",
			metric: []string{"resilient", "options", "audited", ""}},
		{name: "namespace not opted in", pod: testPod(), ns: "plain", metric: []string{"", "", "skipped", "namespace-not-opted-in"}},
		{name: "kube-system excluded", pod: testPod(), ns: "kube-system", metric: []string{"", "", "skipped", "namespace-excluded"}},
		{name: "pod opt-out", pod: testPod(func(p *corev1.Pod) { p.Labels["dnstune.io/inject"] = "disabled" }), ns: "shop", metric: []string{"", "", "skipped", "pod-opt-out"}},
		{name: "kube-dns pod", pod: testPod(func(p *corev1.Pod) { p.Labels["k8s-app"] = "kube-dns" }), ns: "shop", metric: []string{"", "", "skipped", "dns-server"}},
		{name: "dnsPolicy Default", pod: testPod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }), ns: "shop", metric: []string{"", "", "skipped", "dns-policy-default"}},
		{name: "dnsPolicy None", pod: testPod(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
		}), ns: "shop", metric: []string{"", "", "skipped", "dns-policy-none"}},
		{name: "hostNetwork ClusterFirst", pod: testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), ns: "shop", metric: []string{"", "", "skipped", "host-network"}},
		{name: "hostNetwork ClusterFirstWithHostNet", ns: "shop", patchOps: 2,
			pod: testPod(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet }),
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts}
				p.Annotations = map[string]string{"dnstune.io/profile": "resilient"}
			}, metric: []string{"resilient", "options", "mutated", ""}},
		{name: "musl image warns", ns: "shop", patchOps: 2,
			pod: testPod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "python:3.12-alpine" }),
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts[1:]} // musl: keepNdots
				p.Annotations = map[string]string{"dnstune.io/profile": "resilient"}
			}, warn: "looks musl-based (Alpine)", metric: []string{"resilient", "options", "mutated", ""}},
		{name: "windows pod is left alone", pod: testPod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }), ns: "local",
			metric: []string{"", "", "skipped", "windows"}},
		{name: "a change kube-apiserver would reject is not made", ns: "shop",
			pod:    testPod(func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"-bad-.example"}} }),
			warn:   "would give DNS settings kube-apiserver rejects (spec.dnsConfig.searches[0]",
			metric: []string{"resilient", "options", "skipped", "invalid-result"}},
		{name: "unknown namespace is admitted unchanged", pod: testPod(func(p *corev1.Pod) { p.Namespace = "ghost" }), ns: "ghost",
			warn: "could not read namespace ghost", metric: []string{"", "", "error", "namespace-lookup"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			h := newTestHandler(reg)
			tt.pod.Namespace = tt.ns
			_, resp := serve(t, h, review(t, tt.pod))
			if resp == nil {
				t.Fatal("no AdmissionResponse")
			}
			if !resp.Allowed || resp.UID != "8d2a5c4e-0000-4000-8000-000000000001" {
				t.Fatalf("allowed=%v uid=%q", resp.Allowed, resp.UID)
			}
			got := applyPatch(t, tt.pod, resp)
			want := tt.pod.DeepCopy()
			if tt.want != nil {
				tt.want(want)
			} else if resp.Patch != nil {
				t.Fatalf("unexpected patch %s", resp.Patch)
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Fatalf("patched pod differs\n got %s\nwant %s", g, w)
			}
			if tt.patchOps > 0 {
				var ops []map[string]any
				_ = json.Unmarshal(resp.Patch, &ops)
				if len(ops) != tt.patchOps {
					t.Errorf("patch has %d ops, want %d: %s", len(ops), tt.patchOps, resp.Patch)
				}
				for _, op := range ops {
					p := op["path"].(string)
					if !strings.HasPrefix(p, "/spec/dnsPolicy") && !strings.HasPrefix(p, "/spec/dnsConfig") && !strings.HasPrefix(p, "/metadata/annotations") {
						t.Errorf("patch touches %s", p)
					}
				}
				// Idempotence: a second review of the patched pod yields no patch.
				_, again := serve(t, newTestHandler(nil), review(t, got))
				if again.Patch != nil {
					t.Errorf("second pass patched again: %s", again.Patch)
				}
			}
			if tt.warn != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), tt.warn) {
				t.Errorf("warnings %q lack %q", resp.Warnings, tt.warn)
			}
			if tt.warn == "" && len(resp.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", resp.Warnings)
			}
			if got := resp.AuditAnnotations[AuditAnnotationKey]; got != tt.audit {
				t.Errorf("audit annotation = %q, want %q", got, tt.audit)
			}
			if v := testutil.ToFloat64(h.Metrics.Mutations.WithLabelValues(tt.metric...)); v != 1 {
				t.Errorf("dnstune_mutations_total%v = %v, want 1", tt.metric, v)
			}
			if tt.audit != "" {
				if v := testutil.ToFloat64(h.Metrics.AuditFindings.WithLabelValues("resilient", "options")); v != 1 {
					t.Errorf("audit findings = %v", v)
				}
			}
		})
	}
}

func TestHandlerNonPodOrNonCreate(t *testing.T) {
	h := newTestHandler(nil)
	for name, mod := range map[string]func(*admissionv1.AdmissionRequest){
		"update": func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update },
		"deployment": func(r *admissionv1.AdmissionRequest) {
			r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, resp := serve(t, h, review(t, testPod(), mod))
			if resp == nil || !resp.Allowed || resp.Patch != nil {
				t.Fatalf("want allowed without patch, got %+v", resp)
			}
		})
	}
}

func TestHandlerMalformed(t *testing.T) {
	h := newTestHandler(prometheus.NewRegistry())
	valid := review(t, testPod())
	tests := []struct {
		name   string
		method string
		ctype  string
		body   []byte
		code   int
		reason string
	}{
		{"GET", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed, "only POST"},
		{"wrong content type", http.MethodPost, "text/plain", valid, http.StatusUnsupportedMediaType, "Content-Type must be application/json"},
		{"not JSON", http.MethodPost, "application/json", []byte("{not json"), http.StatusBadRequest, "failed to decode AdmissionReview"},
		{"empty body", http.MethodPost, "application/json", nil, http.StatusBadRequest, "failed to decode AdmissionReview"},
		{"wrong version", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a"}}`), http.StatusBadRequest, "expected apiVersion admission.k8s.io/v1"},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest, "has no request"},
		{"no uid", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"version":"v1","kind":"Pod"},"operation":"CREATE"}}`), http.StatusBadRequest, "has no uid"},
		{"no object", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop"}}`), http.StatusBadRequest, "has no object"},
		{"object not a pod", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop","object":{"spec":{"containers":"x"}}}}`), http.StatusBadRequest, "failed to decode Pod"},
		{"too large", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), MaxRequestBytes+1), http.StatusRequestEntityTooLarge, "request body over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, Path, bytes.NewReader(tt.body))
			r.Header.Set("Content-Type", tt.ctype)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.reason) {
				t.Fatalf("got %d %q, want %d containing %q", w.Code, w.Body.String(), tt.code, tt.reason)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// FuzzHandler feeds arbitrary bodies to the handler: it must never panic,
// and must answer 200 with a well-formed review or a 4xx with a reason.
func FuzzHandler(f *testing.F) {
	f.Add(review(f, testPod()))
	f.Add(review(f, testPod(func(p *corev1.Pod) { p.Namespace = "local" })))
	f.Add(review(f, testPod(func(p *corev1.Pod) { p.Namespace = "audited" })))
	f.Add(review(f, testPod(func(p *corev1.Pod) {
		p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots"}}}
	})))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop","object":{"metadata":{"annotations":null},"spec":{"dnsConfig":{}}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`))
	f.Add([]byte(`[]`))
	if raw, err := os.ReadFile("testdata/pod-create.json"); err == nil {
		f.Add(raw)
	} else {
		f.Fatal(err)
	}
	h := newTestHandler(nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch {
		case w.Code == http.StatusOK:
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil || !out.Response.Allowed {
				t.Fatalf("200 without an allowing review: %s", w.Body.String())
			}
			if out.Response.Patch != nil {
				if _, err := jsonpatch.DecodePatch(out.Response.Patch); err != nil {
					t.Fatalf("invalid patch: %v", err)
				}
			}
		case w.Code >= 400 && w.Code < 500:
			if !strings.HasPrefix(w.Body.String(), "dnstune: ") {
				t.Fatalf("4xx without a reason: %q", w.Body.String())
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
	})
}

// largePod has 10 containers with 20 env vars each: a ~60 KB review.
func largePod() *corev1.Pod {
	p := testPod()
	p.Spec.Containers = nil
	for i := range 10 {
		c := corev1.Container{Name: fmt.Sprintf("c%d", i), Image: "registry.example/team/app:1.0"}
		for j := range 20 {
			c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%02d_%02d", i, j), Value: strings.Repeat("v", 200)})
		}
		p.Spec.Containers = append(p.Spec.Containers, c)
	}
	return p
}

func benchmarkHandler(b *testing.B, pod *corev1.Pod) {
	h := newTestHandler(nil)
	body := review(b, pod)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		out, err := h.Review(ctx, body)
		if err != nil || len(out) == 0 {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandlerSmallPod(b *testing.B) { benchmarkHandler(b, testPod()) }
func BenchmarkHandlerLargePod(b *testing.B) { benchmarkHandler(b, largePod()) }

// TestRawReview feeds a review as kube-apiserver sends it (managed fields,
// service-account volume, options, a field this version does not know) and
// checks the exact patch: only dnstune's paths, nothing else touched.
func TestRawReview(t *testing.T) {
	body, err := os.ReadFile("testdata/pod-create.json")
	if err != nil {
		t.Fatal(err)
	}
	_, resp := serve(t, newTestHandler(nil), body)
	if resp == nil || !resp.Allowed || resp.UID != "0c8d8a3e-5b7e-4f0e-8f6a-2b1d4c6e9a01" {
		t.Fatalf("response %+v", resp)
	}
	want := `[{"op":"add","path":"/spec/dnsConfig","value":{"options":[{"name":"ndots","value":"2"},{"name":"timeout","value":"1"},{"name":"attempts","value":"3"},{"name":"single-request-reopen"}]}},` +
		`{"op":"add","path":"/metadata/annotations","value":{"dnstune.io/profile":"resilient"}}]`
	if string(resp.Patch) != want {
		t.Fatalf("patch\n got %s\nwant %s", resp.Patch, want)
	}
	// Applied to the raw object, the patch keeps every field, known or not.
	var review struct {
		Request struct {
			Object json.RawMessage `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply(review.Request.Object)
	if err != nil {
		t.Fatal(err)
	}
	for _, kept := range []string{`"someFutureField":{"kept":true}`, `"managedFields"`, `"kube-api-access-x7k2p"`, `"ownerReferences"`} {
		if !strings.Contains(string(patched), kept) {
			t.Errorf("patched object lost %s", kept)
		}
	}
}

// A bug that panics while deciding admits the pod unchanged, with a
// warning and the error counted: the webhook keeps serving.
func TestHandlerRecoversFromPanic(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newTestHandler(reg)
	h.NetworkPolicies = func(context.Context, string) ([]networkingv1.NetworkPolicy, bool) { panic("a bug") }
	rec, resp := serve(t, h, review(t, testPod(func(p *corev1.Pod) { p.Namespace = "local" })))
	if rec.Code != http.StatusOK || resp == nil || !resp.Allowed || resp.Patch != nil {
		t.Fatalf("status %d, response %+v: want the pod admitted unchanged", rec.Code, resp)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "internal error") {
		t.Errorf("warnings %q, want the internal error said", resp.Warnings)
	}
	if n := testutil.ToFloat64(h.Metrics.Mutations.WithLabelValues("", "", "error", "internal")); n != 1 {
		t.Errorf("error/internal counted %v times, want 1", n)
	}
	// The next request is served as usual.
	h.NetworkPolicies = nil
	if _, resp := serve(t, h, review(t, testPod())); resp == nil || resp.Patch == nil {
		t.Errorf("after the panic the webhook no longer mutates: %+v", resp)
	}
}
