// Package webhook is dnstune's admission adapter: it decodes an
// AdmissionReview, asks the policy package what to do with the Pod, and
// answers with a minimal JSON patch, or with warnings and audit annotations
// in audit mode. Server wiring (TLS, certificates, metrics, health) is in
// manager.go, run.go and tlsserver.go.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/dnstune/dnstune/policy"
)

// MaxRequestBytes bounds an AdmissionReview body: 3 MiB holds the largest
// Pod etcd accepts (1.5 MiB) with room for the review around it.
const MaxRequestBytes = 3 << 20

// Path is where the webhook is served.
const Path = "/mutate-v1-pod"

// AuditAnnotationKey is the key of the audit annotation dnstune adds in audit
// mode; the apiserver prefixes it with the webhook's name.
const AuditAnnotationKey = "would-mutate"

// Namespaces looks up a namespace's labels. The webhook's implementation
// reads a metadata-only informer cache.
type Namespaces interface {
	Labels(ctx context.Context, name string) (map[string]string, error)
}

// Handler serves POST /mutate-v1-pod.
type Handler struct {
	// Policy returns the policy in use; called once per request.
	Policy func() *policy.Policy
	// Namespaces looks up namespace labels.
	Namespaces Namespaces
	// ClusterDNS returns the discovered kube-dns Service IP (invalid if unknown).
	ClusterDNS func() netip.Addr
	// NetworkPolicies returns a namespace's NetworkPolicies, false when
	// they are not known yet (the cache has not synced); nil turns the
	// node-local egress check off.
	NetworkPolicies func(ctx context.Context, namespace string) ([]networkingv1.NetworkPolicy, bool)
	// Metrics may be nil.
	Metrics *Metrics
	// Log receives one debug line per skip and one line per error.
	Log logr.Logger
}

// reviewRequest is the part of an AdmissionReview dnstune reads, decoded in
// one pass: the object goes straight into podFields, which names only what
// the policy looks at, so the rest of a large pod (env vars, volumes) is
// skipped, not built.
type reviewRequest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID       types.UID               `json:"uid"`
		Kind      metav1.GroupVersionKind `json:"kind"`
		Operation admissionv1.Operation   `json:"operation"`
		Namespace string                  `json:"namespace"`
		Object    *podFields              `json:"object"`
	} `json:"request"`
}

type podFields struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		DNSPolicy      corev1.DNSPolicy     `json:"dnsPolicy"`
		HostNetwork    bool                 `json:"hostNetwork"`
		OS             *corev1.PodOS        `json:"os"`
		NodeSelector   map[string]string    `json:"nodeSelector"`
		Affinity       *nodeAffinityOnly    `json:"affinity"`
		DNSConfig      *corev1.PodDNSConfig `json:"dnsConfig"`
		Containers     []containerFields    `json:"containers"`
		InitContainers []containerFields    `json:"initContainers"`
	} `json:"spec"`
}

// nodeAffinityOnly is the part of spec.affinity the decision reads (whether
// the pod runs on Windows); pod (anti-)affinity is not decoded.
type nodeAffinityOnly struct {
	NodeAffinity *corev1.NodeAffinity `json:"nodeAffinity"`
}

type containerFields struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

func (f *podFields) pod() *corev1.Pod {
	p := &corev1.Pod{}
	p.Name, p.GenerateName, p.Namespace = f.Metadata.Name, f.Metadata.GenerateName, f.Metadata.Namespace
	p.Labels, p.Annotations = f.Metadata.Labels, f.Metadata.Annotations
	p.Spec.DNSPolicy, p.Spec.HostNetwork, p.Spec.DNSConfig = f.Spec.DNSPolicy, f.Spec.HostNetwork, f.Spec.DNSConfig
	p.Spec.OS, p.Spec.NodeSelector = f.Spec.OS, f.Spec.NodeSelector
	if f.Spec.Affinity != nil && f.Spec.Affinity.NodeAffinity != nil {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: f.Spec.Affinity.NodeAffinity}
	}
	p.Spec.Containers = containers(f.Spec.Containers)
	p.Spec.InitContainers = containers(f.Spec.InitContainers)
	return p
}

func containers(cs []containerFields) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i].Name, out[i].Image = c.Name, c.Image
	}
	return out
}

// badRequest is a request the webhook cannot read; it is answered with HTTP 400.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "dnstune: only POST is served", http.StatusMethodNotAllowed)
		return
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		http.Error(w, fmt.Sprintf("dnstune: Content-Type must be application/json, got %q", r.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("dnstune: request body over %d bytes", MaxRequestBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "dnstune: failed to read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	out, err := h.Review(r.Context(), body)
	if err != nil {
		var bad badRequest
		if errors.As(err, &bad) {
			h.count("", "", "error", "bad-request")
			h.Log.Info("rejected malformed admission review", "reason", bad.msg)
			http.Error(w, "dnstune: "+bad.msg, http.StatusBadRequest)
			return
		}
		http.Error(w, "dnstune: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Review answers one AdmissionReview (JSON) with an AdmissionReview (JSON).
// A review it cannot read yields a badRequest error.
func (h *Handler) Review(ctx context.Context, body []byte) ([]byte, error) {
	var in reviewRequest
	if err := json.Unmarshal(body, &in); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && strings.HasPrefix(typeErr.Field, "request.object") {
			return nil, badRequest{"failed to decode Pod: " + err.Error()}
		}
		return nil, badRequest{"failed to decode AdmissionReview: " + err.Error()}
	}
	if in.APIVersion != admissionv1.SchemeGroupVersion.String() || in.Kind != "AdmissionReview" {
		return nil, badRequest{fmt.Sprintf("expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got %q, %q", in.APIVersion, in.Kind)}
	}
	req := in.Request
	if req == nil {
		return nil, badRequest{"AdmissionReview has no request"}
	}
	if req.UID == "" {
		return nil, badRequest{"AdmissionReview request has no uid"}
	}
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		h.count("", "", "skipped", "not-pod-create")
		return encode(resp)
	}
	if req.Object == nil {
		return nil, badRequest{"AdmissionReview request has no object"}
	}
	pod := req.Object.pod()
	nsName := req.Namespace
	if nsName == "" {
		nsName = pod.Namespace
	}
	labels, err := h.Namespaces.Labels(ctx, nsName)
	if err != nil {
		// Never block a deploy over DNS tuning: allow, unchanged, and say why.
		h.count("", "", "error", "namespace-lookup")
		h.Log.Error(err, "failed to look up namespace; pod admitted unchanged", "namespace", nsName, "uid", req.UID)
		resp.Warnings = []string{"dnstune: could not read namespace " + nsName + "; DNS settings left unchanged"}
		return encode(resp)
	}
	pol := h.Policy()
	d, err := h.decide(ctx, resp, pod, policy.Namespace{Name: nsName, Labels: labels}, pol)
	if err != nil {
		// A bug, not the request: admitted unchanged, said loudly; the
		// webhook keeps serving.
		h.count("", "", "error", "internal")
		h.Log.Error(err, "pod admitted unchanged", "namespace", nsName, "pod", podName(pod), "uid", req.UID)
		resp.Warnings = []string{"dnstune: internal error; DNS settings left unchanged (see the webhook's log)"}
		return encode(resp)
	}
	switch d.Action {
	case policy.Skip:
		h.count(d.Profile, string(d.Mode), "skipped", string(d.Reason))
		if d.Reason == policy.ReasonInvalidResult {
			// Never a patch that blocks a create: admitted unchanged, said loudly.
			h.Log.Info("change would be rejected by kube-apiserver; pod admitted unchanged", "namespace", nsName, "pod", podName(pod), "reason", d.Reason, "detail", strings.Join(d.Warnings, "; "))
		} else {
			h.Log.V(1).Info("pod skipped", "namespace", nsName, "pod", podName(pod), "reason", d.Reason)
		}
	case policy.AuditOnly:
		h.count(d.Profile, string(d.Mode), "audited", "")
		if h.Metrics != nil {
			h.Metrics.AuditFindings.WithLabelValues(d.Profile, string(d.Mode)).Inc()
		}
		resp.AuditAnnotations = map[string]string{AuditAnnotationKey: d.Summary()}
	case policy.Mutate:
		patch, err := encodePatch(patch(pod, &d))
		if err != nil {
			return nil, fmt.Errorf("failed to encode patch: %w", err)
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
		h.count(d.Profile, string(d.Mode), "mutated", "")
	}
	return encode(resp)
}

// decide is policy.Decide and the egress check, with a panic turned into an
// error.
func (h *Handler) decide(ctx context.Context, resp *admissionv1.AdmissionResponse, pod *corev1.Pod, ns policy.Namespace, pol *policy.Policy) (d policy.Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error deciding the pod (please report it with the policy): %v\n%s", r, debug.Stack())
		}
	}()
	d = policy.Decide(pod, ns, pol, h.clusterDNS())
	resp.Warnings = d.Warnings
	h.checkEgress(ctx, resp, pod, ns.Name, pol, &d)
	return d, nil
}

// checkEgress warns when a pod pointed at the node-local cache may not send
// DNS to it under its namespace's NetworkPolicies (policy.CacheEgress).
func (h *Handler) checkEgress(ctx context.Context, resp *admissionv1.AdmissionResponse, pod *corev1.Pod, ns string, pol *policy.Policy, d *policy.Decision) {
	if h.NetworkPolicies == nil || !d.PointsAtNodeLocal() {
		return
	}
	nps, ok := h.NetworkPolicies(ctx, ns)
	if !ok {
		return
	}
	w := policy.EgressWarning(policy.CacheEgress(pod, nps, pol.NodeLocalDNS), ns, pol.NodeLocalDNS)
	if w == "" {
		return
	}
	resp.Warnings = append(resp.Warnings, w)
	if h.Metrics != nil {
		result := "mutated"
		if d.Action == policy.AuditOnly {
			result = "audited"
		}
		h.Metrics.NodeLocalEgressBlocked.WithLabelValues(d.Profile, result).Inc()
	}
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName
}

func (h *Handler) clusterDNS() netip.Addr {
	if h.ClusterDNS == nil {
		return netip.Addr{}
	}
	return h.ClusterDNS()
}

func (h *Handler) count(profile, mode, result, reason string) {
	if h.Metrics != nil {
		h.Metrics.Mutations.WithLabelValues(profile, mode, result, reason).Inc()
	}
}

var reviewTypeMeta = metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"}

func encode(resp *admissionv1.AdmissionResponse) ([]byte, error) {
	out, err := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: reviewTypeMeta, Response: resp})
	if err != nil {
		return nil, fmt.Errorf("failed to encode AdmissionReview: %w", err)
	}
	return out, nil
}
