package admissionpolicy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/cel-go/cel"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/policy"
	"github.com/dnstune/dnstune/policy/policytest"
	"github.com/dnstune/dnstune/webhook"
)

// The reproduction of issue 28: a nodelocal profile without options
// passed policy check and crashed the compiler.
const nodeLocalWithoutOptions = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nclusterDNS: 10.96.0.10\ndefaultProfile: fast\nprofiles:\n  fast: {mode: nodelocal}\n"

// FuzzCheckImpliesCompile: every policy `policy check` accepts compiles
// (with and without a cluster DNS address, with and without parameters and
// enforced-namespace warnings), every CEL expression it compiles to parses,
// and the webhook answers every pod of a set under it without an error.
// `go test` runs the seeds (a fixed pseudo-random 300 and the issue's
// reproduction); `go test -fuzz FuzzCheckImpliesCompile` explores further.
func FuzzCheckImpliesCompile(f *testing.F) {
	for _, s := range policytest.Seeds(300) {
		f.Add(s)
	}
	f.Add([]byte(nil))
	accepted := 0
	f.Cleanup(func() {
		f.Logf("%d of the seed policies pass check", accepted)
		// The generator must keep producing policies check accepts, or the
		// property holds vacuously.
		if !testing.Short() && accepted < 150 {
			f.Errorf("only %d of the seed policies pass check: the generator no longer exercises the compiler", accepted)
		}
	})
	checkPolicy(f, []byte(nodeLocalWithoutOptions))
	f.Fuzz(func(t *testing.T, data []byte) {
		if checkPolicy(t, policytest.Generate(data)) {
			accepted++
		}
	})
}

// celEnv parses the compiled expressions (kube-apiserver type-checks them
// too: the e2e dry run of generated policies).
// parsed remembers the expressions already parsed: most recur from one
// generated policy to the next.
var (
	celEnv, celEnvErr = cel.NewEnv(cel.OptionalTypes())
	parsed            = map[string]bool{}
)

// checkPolicy holds the property for one policy file; it reports whether
// check accepted the policy.
func checkPolicy(t testing.TB, file []byte) bool {
	t.Helper()
	pol, err := policy.Load("generated.yaml", file)
	if err != nil {
		return false // check refuses it: nothing more is promised
	}
	dns := netip.MustParseAddr("10.96.0.10")
	for _, withDNS := range []bool{false, true} {
		p := pol
		if withDNS && !p.ClusterDNS.IsValid() {
			p = p.WithClusterDNS(dns)
		}
		for _, o := range []admissionpolicy.Options{{}, {NoParams: true}, {NoEnforcedWarnings: true}} {
			objs, err := admissionpolicy.Compile(p, o)
			if err != nil {
				t.Fatalf("policy check accepts this policy, but compile (cluster DNS %v, %+v) fails: %v\n%s", withDNS, o, err, file)
			}
			if celEnvErr != nil {
				t.Fatal(celEnvErr)
			}
			for where, expr := range expressions(objs) {
				if parsed[expr] {
					continue
				}
				parsed[expr] = true
				if _, iss := celEnv.Parse(expr); iss.Err() != nil {
					t.Fatalf("compiled %s does not parse: %v\n%s\npolicy:\n%s", where, iss.Err(), expr, file)
				}
			}
		}
	}
	h := &webhook.Handler{
		Policy:     func() *policy.Policy { return pol },
		Namespaces: namespaces,
		ClusterDNS: func() netip.Addr { return dns },
		Log:        logr.Discard(),
	}
	for ns := range namespaces {
		for i, pod := range pods() {
			pod.Namespace = ns
			out, err := h.Review(context.Background(), review(t, pod))
			if err != nil {
				t.Fatalf("the webhook failed on pod %d in %s: %v\npolicy:\n%s", i, ns, err, file)
			}
			var r admissionv1.AdmissionReview
			if err := json.Unmarshal(out, &r); err != nil || r.Response == nil || !r.Response.Allowed {
				t.Fatalf("the webhook's answer for pod %d in %s is not an allowed review (%v): %s", i, ns, err, out)
			}
		}
	}
	return true
}

type fakeNamespaces map[string]map[string]string

func (f fakeNamespaces) Labels(_ context.Context, name string) (map[string]string, error) {
	return f[name], nil
}

var namespaces = fakeNamespaces{
	"shop":        {policy.InjectLabel: policy.InjectEnabled},
	"audited":     {policy.InjectLabel: policy.InjectAudit},
	"local":       {policy.InjectLabel: policy.InjectEnabled, policy.ProfileLabel: "nodelocal"},
	"fast":        {policy.InjectLabel: policy.InjectEnabled, policy.ProfileLabel: "fast"},
	"unknown":     {policy.InjectLabel: policy.InjectEnabled, policy.ProfileLabel: "nope"},
	"payments-eu": {policy.InjectLabel: policy.InjectEnabled, "team": "legacy", "tier": "web"},
	"team-a":      {policy.InjectLabel: policy.InjectEnabled, "legacy": "yes", "tier": "batch"},
	"kube-system": {policy.InjectLabel: policy.InjectEnabled},
}

// pods are the shapes the rules tell apart: glibc and musl, the pod's own
// ndots and nameservers, already annotated, Windows, hostNetwork.
func pods() []*corev1.Pod {
	two := "2"
	base := func(image string) *corev1.Pod {
		return &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
		}
	}
	musl := base("alpine:3.20")
	ownNdots := base("alpine:3.20")
	ownNdots.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &two}}}
	ownServers := base("nginx")
	ownServers.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}, Searches: []string{"corp.example"}}
	annotated := base("alpine")
	annotated.Annotations = map[string]string{policy.ProfileLabel: "nodelocal"}
	windows := base("mcr.microsoft.com/windows/nanoserver")
	windows.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
	host := base("nginx")
	host.Spec.HostNetwork, host.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet
	return []*corev1.Pod{base("nginx"), musl, ownNdots, ownServers, annotated, windows, host}
}

func review(t testing.TB, pod *corev1.Pod) []byte {
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		UID: "8d2a5c4e-0000-4000-8000-000000000028", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Operation: admissionv1.Create, Namespace: pod.Namespace,
	}
	req.Object.Raw = raw
	b, err := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expressions are every CEL expression of the compiled objects, by where
// they are.
func expressions(o *admissionpolicy.Objects) map[string]string {
	out := map[string]string{}
	conds := func(kind string, mcs []admissionregistrationv1.MatchCondition) {
		for _, c := range mcs {
			out[fmt.Sprintf("%s matchCondition %s", kind, c.Name)] = c.Expression
		}
	}
	vars := func(kind string, vs []admissionregistrationv1.Variable) {
		for _, v := range vs {
			out[fmt.Sprintf("%s variable %s", kind, v.Name)] = v.Expression
		}
	}
	if m := o.Mutating; m != nil {
		conds(m.Name, m.Spec.MatchConditions)
		vars(m.Name, m.Spec.Variables)
		for i, mu := range m.Spec.Mutations {
			out[fmt.Sprintf("%s mutation %d", m.Name, i)] = mu.JSONPatch.Expression
		}
	}
	for _, v := range o.Validating {
		conds(v.Name, v.Spec.MatchConditions)
		vars(v.Name, v.Spec.Variables)
		for i, val := range v.Spec.Validations {
			out[fmt.Sprintf("%s validation %d", v.Name, i)] = val.Expression
			if val.MessageExpression != "" {
				out[fmt.Sprintf("%s validation %d message", v.Name, i)] = val.MessageExpression
			}
		}
		for _, a := range v.Spec.AuditAnnotations {
			out[fmt.Sprintf("%s auditAnnotation %s", v.Name, a.Key)] = a.ValueExpression
		}
	}
	return out
}
