//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/policy"
	"github.com/dnstune/dnstune/policy/policytest"
)

// TestRendersAndCompiledOutputsPassDryRun: every values set the chart's
// tests render, and every compiled admission policy of the policies the
// project ships, is accepted by a real kube-apiserver (server-side dry
// run), so the next value kube-apiserver refuses (a glob in a
// namespaceSelector, say) fails here, not in a user's helm install.
func TestRendersAndCompiledOutputsPassDryRun(t *testing.T) {
	ctx := context.Background()
	installCertManagerCRDs(ctx, t)
	sets, err := filepath.Glob(filepath.Join(framework.RepoRoot(), "manifests", "dnstune", "tests", "values", "*.yaml"))
	if err != nil || len(sets) == 0 {
		t.Fatalf("no values sets: %v", err)
	}
	for _, set := range sets {
		t.Run("values/"+filepath.Base(set), func(t *testing.T) {
			data, err := framework.Render("-f", set)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := framework.Objects(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if o.GetKind() == "MutatingWebhookConfiguration" {
					o = o.DeepCopy()
					o.SetName("dnstune-dry-run") // the harness's own is in use
				}
				err := env.Apply(ctx, o, true)
				if meta.IsNoMatchError(err) || (err != nil && strings.Contains(err.Error(), "no matches for kind")) {
					t.Logf("%s %s: not checked: its CRD (Prometheus Operator) is not installed here", o.GetKind(), o.GetName())
					continue
				}
				if err != nil {
					t.Errorf("rejected by the apiserver: %v", err)
				}
			}
		})
	}
	policies := map[string]string{"shipped": testPolicy}
	files, _ := filepath.Glob(filepath.Join(framework.RepoRoot(), "examples", "nodelocal", "*.yaml"))
	for _, f := range append(files, filepath.Join(framework.RepoRoot(), "examples", "policy.yaml")) {
		b, err := os.ReadFile(f) // #nosec G304 -- the repository's examples
		if err != nil {
			t.Fatal(err)
		}
		policies[strings.TrimPrefix(f, framework.RepoRoot()+"/")] = string(b)
	}
	// A sample of the generated policies check accepts (the property test's
	// seeds, FuzzCheckImpliesCompile): kube-apiserver type-checks their CEL.
	sample := 0
	for i, seed := range policytest.Seeds(300) {
		file := policytest.Generate(seed)
		if _, err := policy.Load("generated.yaml", file); err != nil || sample == 16 {
			continue
		}
		sample++
		policies[fmt.Sprintf("generated-%03d", i)] = string(file)
	}
	// Below Kubernetes 1.36 there is nothing to compile for (the backend
	// refuses to start: TestAdmissionPolicyBackendFloor): the apiserver must
	// refuse what it can't serve.
	if served := admissionpolicy.CheckServed(env.Config); served != nil {
		objs, err := admissionpolicy.Compile(policy.Default().WithClusterDNS(netip.MustParseAddr("10.96.0.10")), admissionpolicy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(objs.Mutating)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Apply(ctx, &unstructured.Unstructured{Object: m}, true); err == nil || (!meta.IsNoMatchError(err) && !strings.Contains(err.Error(), "no matches for kind")) {
			t.Errorf("%v; yet a MutatingAdmissionPolicy dry run gave %v, want no such kind", served, err)
		}
		t.Logf("compiled outputs not dry-run: %v", served)
		return
	}
	for name, text := range policies {
		t.Run("compiled/"+name, func(t *testing.T) {
			pol, err := policy.Load(name, []byte(text))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range []admissionpolicy.Options{{}, {NoParams: true}} {
				p := *pol
				if o.NoParams {
					p.ClusterDNS = netip.MustParseAddr(kubeDNSIP(t))
				}
				objs, err := admissionpolicy.Compile(&p, o)
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range objs.All() {
					m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(x)
					if err != nil {
						t.Fatal(err)
					}
					u := &unstructured.Unstructured{Object: m}
					u.SetName(u.GetName() + "-dry-run")
					if err := env.Apply(ctx, u, true); err != nil {
						t.Errorf("compiled (NoParams %v) rejected by the apiserver: %v", o.NoParams, err)
					}
				}
			}
		})
	}
}
