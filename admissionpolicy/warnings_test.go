package admissionpolicy_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/policy"
	"github.com/dnstune/dnstune/policy/policytest"
)

// TestCompiledWarningsAgreeWithDecide runs each warning rule's two forms on
// the same pods without a kube-apiserver: policy.Decide (the webhook's) and
// the compiled ValidatingAdmissionPolicies, evaluated here with cel-go and
// the CEL libraries kube-apiserver enables (optional types, strings,
// lists). Where Decide mutates, the validating policies see the pod as
// mutated, as kube-apiserver shows it to them after the mutating policy.
// The e2e differential (TestCompiledWarningsMatchWebhook) stays the final
// word on a real kube-apiserver; this one runs in go test ./... and covers
// the example policy and a few hundred generated ones.
func TestCompiledWarningsAgreeWithDecide(t *testing.T) {
	dns := netip.MustParseAddr("10.96.0.10")
	example, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files := [][]byte{example}
	for i := range 400 {
		files = append(files, policytest.Generate([]byte(fmt.Sprintf("%08x%08x", i*2654435761, i))))
	}
	ev := newEvaluator(t)
	compared, warned := 0, 0
	for fi, file := range files {
		pol, err := policy.Load(fmt.Sprintf("policy-%d.yaml", fi), file)
		if err != nil {
			continue
		}
		if !pol.ClusterDNS.IsValid() {
			pol = pol.WithClusterDNS(dns) // nodelocal warnings need it compiled in
		}
		objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{})
		if err != nil {
			t.Fatalf("policy %d: %v\n%s", fi, err, file)
		}
		for ns, nsLabels := range namespaces {
			for i, pod := range append(pods(), overLimits()) {
				pod.Namespace = ns
				d := policy.Decide(pod.DeepCopy(), policy.Namespace{Name: ns, Labels: nsLabels}, pol, dns)
				switch {
				case d.Reason == policy.ReasonInvalidResult:
					continue // the webhook's defence in depth; the compiled policy never gets there
				case d.Action != policy.AuditOnly && pod.Annotations[policy.ProfileLabel] != "" && policy.LooksMusl(pod.Spec.Containers[0].Image):
					// docs/backends.md: after mutation, a musl pod that
					// arrives with dnstune's annotation can't be told from
					// one dnstune just changed.
					continue
				}
				seen := pod.DeepCopy()
				d.Apply(&seen.Annotations, &seen.Spec)
				got := ev.warnings(t, objs, seen, ns, nsLabels)
				want := slices.Clone(d.Warnings)
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("policy %d, namespace %s, pod %d (%s):\nDecide:   %q\ncompiled: %q\npolicy:\n%s", fi, ns, i, d.Reason, want, got, file)
				}
				compared++
				if len(want) > 0 {
					warned++
				}
			}
		}
	}
	if compared < 1000 || warned < 100 {
		t.Fatalf("compared %d pods, %d with warnings: the table lost its cases", compared, warned)
	}
	t.Logf("%d pods compared, %d with warnings", compared, warned)
}

// overLimits is a pod whose own nameservers put a nodelocal result over
// kube-apiserver's limit of three.
func overLimits() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "nginx"}},
			DNSConfig:  &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}},
		},
	}
}

// evaluator evaluates compiled ValidatingAdmissionPolicies as
// kube-apiserver does, for what the tests need: bindings' namespace
// selectors, match conditions, variables in order, validations' messages.
type evaluator struct {
	env  *cel.Env
	prgs map[string]cel.Program
}

func newEvaluator(t *testing.T) *evaluator {
	env, err := cel.NewEnv(
		cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType),
		cel.Variable("namespaceObject", cel.DynType),
		cel.Variable("request", cel.DynType),
		cel.Variable("params", cel.DynType),
		cel.Variable("variables", cel.MapType(cel.StringType, cel.DynType)),
		cel.OptionalTypes(),
		ext.Strings(ext.StringsVersion(2)),
		ext.Lists(ext.ListsVersion(3)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return &evaluator{env: env, prgs: map[string]cel.Program{}}
}

func (e *evaluator) eval(t *testing.T, expr string, act map[string]any) ref.Val {
	t.Helper()
	prg, ok := e.prgs[expr]
	if !ok {
		ast, iss := e.env.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("compile %s: %v", expr, iss.Err())
		}
		var err error
		if prg, err = e.env.Program(ast); err != nil {
			t.Fatal(err)
		}
		e.prgs[expr] = prg
	}
	out, _, err := prg.Eval(act)
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return out
}

// warnings are the messages of the validations that fail for pod, over
// every validating policy bound to the namespace.
func (e *evaluator) warnings(t *testing.T, objs *admissionpolicy.Objects, pod *corev1.Pod, ns string, nsLabels map[string]string) []string {
	t.Helper()
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	var object map[string]any
	if err := json.Unmarshal(b, &object); err != nil {
		t.Fatal(err)
	}
	variables := map[string]ref.Val{}
	act := map[string]any{
		"object":          object,
		"namespaceObject": map[string]any{"metadata": map[string]any{"name": ns, "labels": nsLabels}},
		"request":         map[string]any{"namespace": ns},
		"variables":       variables,
	}
	var out []string
	for _, bnd := range objs.ValidatingBindings {
		sel, err := metav1.LabelSelectorAsSelector(bnd.Spec.MatchResources.NamespaceSelector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(nsLabels)) {
			continue
		}
		vap := objs.Validating[slices.IndexFunc(objs.Validating, func(v *admissionregistrationv1.ValidatingAdmissionPolicy) bool { return v.Name == bnd.Spec.PolicyName })]
		clear(variables)
		if !e.matches(t, vap.Spec.MatchConditions, act) {
			continue
		}
		for _, v := range vap.Spec.Variables {
			variables[v.Name] = e.eval(t, v.Expression, act)
		}
		for _, v := range vap.Spec.Validations {
			if e.eval(t, v.Expression, act).Value() == false {
				out = append(out, fmt.Sprint(e.eval(t, v.MessageExpression, act).Value()))
			}
		}
	}
	return out
}

func (e *evaluator) matches(t *testing.T, mcs []admissionregistrationv1.MatchCondition, act map[string]any) bool {
	t.Helper()
	for _, mc := range mcs {
		if e.eval(t, mc.Expression, act).Value() != true {
			return false
		}
	}
	return true
}

// Every warning's slots are filled on both sides: no "{slot}" reaches a
// user.
func TestWarningTextsFillEverySlot(t *testing.T) {
	for _, w := range []policy.Warning{policy.WarnUnknownProfile, policy.WarnMuslSingleRequestReopen, policy.WarnMuslNdotsKept,
		policy.WarnMuslOwnNdots, policy.WarnTooManyNameservers, policy.WarnTooManySearches, policy.WarnSearchListTooLong, policy.WarnAudit} {
		parts := w.Parts()
		var kv []string
		for i := 1; i < len(parts); i += 2 {
			kv = append(kv, parts[i], "x")
		}
		if len(kv) == 0 {
			t.Errorf("%q has no slots", w)
		}
		if got := w.Text(kv...); strings.ContainsAny(got, "{}") {
			t.Errorf("%q filled is %q", w, got)
		}
	}
}
