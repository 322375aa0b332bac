package admissionpolicy

import (
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/policy"
)

// globRegexp matches exactly what path.Match matches, on namespace names.
func TestGlobRegexp(t *testing.T) {
	names := []string{"payments", "payments-eu", "pay", "team-a", "team-b", "team-ab", "x", "a.b", "prod1", "prodx"}
	for _, g := range []string{"payments-*", "*", "team-?", "team-[ab]", "team-[^a]", "a.b", "prod[0-9]", "x*y"} {
		re, err := globRegexp(g)
		if err != nil {
			t.Fatal(err)
		}
		rx := regexp.MustCompile(re)
		for _, n := range names {
			want, _ := path.Match(g, n)
			if got := rx.MatchString(n); got != want {
				t.Errorf("glob %q on %q: regexp %s says %v, path.Match %v", g, n, re, got, want)
			}
		}
	}
}

func TestCompileShapes(t *testing.T) {
	pol := policy.Default()
	objs, err := Compile(pol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Policies) != 2 || len(objs.Bindings) != 2 {
		t.Fatalf("%d policies, %d bindings", len(objs.Policies), len(objs.Bindings))
	}
	local := objs.Policies[1]
	if local.Name != NodeLocalName || local.Spec.ParamKind == nil || objs.Bindings[1].Spec.ParamRef == nil || objs.Bindings[1].Spec.ParamRef.Name != "kube-dns" {
		t.Errorf("nodelocal without clusterDNS must read kube-dns: %+v", local.Spec.ParamKind)
	}
	sel := objs.Bindings[0].Spec.MatchResources.NamespaceSelector
	if sel.MatchLabels[policy.InjectLabel] != policy.InjectEnabled || len(sel.MatchExpressions) != 1 || !strings.Contains(strings.Join(sel.MatchExpressions[0].Values, ","), "kube-system") {
		t.Errorf("namespace selector = %+v", sel)
	}
	audit := policy.Default()
	audit.Enforcement = v1alpha1.Audit
	if objs, _ := Compile(audit, Options{}); len(objs.Policies) != 0 {
		t.Error("a cluster-wide audit policy must compile to nothing that mutates")
	}
}
