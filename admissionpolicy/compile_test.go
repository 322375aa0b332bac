package admissionpolicy

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/policy"
)

// One mutating policy for both modes; validating policies bound only where
// they have something to say.
func TestCompileShapes(t *testing.T) {
	pol := policy.Default()
	objs, err := Compile(pol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, mb := objs.Mutating, objs.MutatingBinding
	if m == nil || m.Name != Name || mb.Spec.PolicyName != Name {
		t.Fatalf("mutating policy %+v, binding %+v", m, mb)
	}
	patch := m.Spec.Mutations[0].JSONPatch.Expression
	for _, want := range []string{`variables.profile in ["resilient"]`, `variables.profile in ["nodelocal"]`, `/spec/dnsPolicy`} {
		if !strings.Contains(patch, want) {
			t.Errorf("the one patch does not hold %q:\n%s", want, patch)
		}
	}
	if m.Spec.ParamKind == nil || mb.Spec.ParamRef == nil || mb.Spec.ParamRef.Name != "kube-dns" {
		t.Errorf("nodelocal without clusterDNS must read kube-dns: %+v", m.Spec.ParamKind)
	}
	// Selectors of label equality only (kube-apiserver parses them on every
	// request); the exclusions are in the one match condition.
	sel := mb.Spec.MatchResources.NamespaceSelector
	if sel.MatchLabels[policy.InjectLabel] != policy.InjectEnabled || len(sel.MatchExpressions) != 0 || mb.Spec.MatchResources.ObjectSelector != nil {
		t.Errorf("namespace selector = %+v, object selector %+v", sel, mb.Spec.MatchResources.ObjectSelector)
	}
	for _, want := range []string{`!(request.namespace in ["kube-system", "kube-public", "kube-node-lease"])`, "!" + policy.LeftAloneCEL("object"), "!" + policy.RunsOnWindowsCEL("object")} {
		if len(m.Spec.MatchConditions) != 1 || !strings.Contains(m.Spec.MatchConditions[0].Expression, want) {
			t.Errorf("the match condition does not hold %q: %+v", want, m.Spec.MatchConditions)
		}
	}
	// Without the cluster DNS and parameters, nodelocal is left out.
	noParams, err := Compile(pol, Options{NoParams: true})
	if err != nil {
		t.Fatal(err)
	}
	if p := noParams.Mutating.Spec.Mutations[0].JSONPatch.Expression; strings.Contains(p, "nodelocal") || noParams.Mutating.Spec.ParamKind != nil {
		t.Errorf("NoParams without clusterDNS still does nodelocal:\n%s", p)
	}

	bindings := map[string]string{}
	for _, b := range objs.ValidatingBindings {
		bindings[b.Name] = b.Spec.PolicyName + " " + metav1LabelSelector(b.Spec.MatchResources.NamespaceSelector)
	}
	want := map[string]string{
		AuditName:          AuditName + " dnstune.io/inject=audit",
		UnknownProfileName: AuditName + " dnstune.io/inject=enabled,dnstune.io/profile,dnstune.io/profile notin (nodelocal,resilient)",
		WarningsName:       WarningsName + " dnstune.io/inject=enabled",
	}
	if len(bindings) != len(want) {
		t.Errorf("validating bindings %v, want %v", bindings, want)
	}
	for n, w := range want {
		if bindings[n] != w {
			t.Errorf("binding %s: %q, want %q", n, bindings[n], w)
		}
	}
	for _, v := range objs.Validating {
		if v.Name != WarningsName {
			continue
		}
		conds := v.Spec.MatchConditions
		if last := conds[len(conds)-1]; last.Name != "could-warn" || !strings.Contains(last.Expression, "alpine") || !strings.Contains(last.Expression, "request.namespace in") {
			t.Errorf("the warnings policy must match only pods that could get a warning: %+v", last)
		}
	}

	// Without enforced-namespace warnings: the audit policy alone.
	quiet, err := Compile(pol, Options{NoEnforcedWarnings: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range quiet.Validating {
		if v.Name == WarningsName {
			t.Error("NoEnforcedWarnings still compiles " + WarningsName)
		}
	}
	if len(quiet.Validating) != 1 || len(quiet.ValidatingBindings) != 2 {
		t.Errorf("NoEnforcedWarnings: %d validating policies, %d bindings; want the audit policy and its two bindings", len(quiet.Validating), len(quiet.ValidatingBindings))
	}

	// Rules that audit: one validating policy, everywhere.
	rules := policy.Default()
	sel2, _ := labels.Parse("team=legacy")
	rules.Rules = []policy.Rule{{Selector: sel2, Profile: "resilient", Enforcement: v1alpha1.Audit}}
	objs, err = Compile(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Validating) != 1 || len(objs.ValidatingBindings) != 1 || objs.ValidatingBindings[0].Spec.MatchResources.NamespaceSelector.MatchExpressions[0].Operator != "In" {
		t.Errorf("audit rules: %d validating policies, bindings %+v", len(objs.Validating), objs.ValidatingBindings)
	}
	if !strings.Contains(objs.Mutating.Spec.Mutations[0].JSONPatch.Expression, "variables.audited") {
		t.Error("the mutating policy must leave the namespaces a rule audits alone")
	}

	audit := policy.Default()
	audit.Enforcement = v1alpha1.Audit
	if objs, _ := Compile(audit, Options{}); objs.Mutating != nil || len(objs.Validating) != 1 {
		t.Error("a cluster-wide audit policy must compile to nothing that mutates, and one audit policy")
	}
}

func metav1LabelSelector(s *metav1.LabelSelector) string {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return err.Error()
	}
	return sel.String()
}

// A bug that panics while compiling is an error, not a crash: the
// in-cluster backend keeps what it applied last.
func TestCompileRecoversFromPanic(t *testing.T) {
	broken := policy.Default()
	broken.Profiles["resilient"] = nil // no loaded policy has this
	objs, err := Compile(broken, Options{})
	if err == nil || objs != nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("Compile = %v, %v; want an internal error", objs, err)
	}
}
