package policy

import (
	"bytes"
	"os"
	"testing"

	"github.com/google/cel-go/cel"
	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
)

// The MutatingWebhookConfiguration's matchConditions (CEL, evaluated by
// kube-apiserver before it calls the webhook) and Decide agree on every
// dnsPolicy x hostNetwork combination: the apiserver calls the webhook for
// exactly the pods UsesClusterDNS admits, so skipping them in CEL loses
// nothing Decide would have changed.
func TestMatchConditionsAgreeWithDecide(t *testing.T) {
	data, err := os.ReadFile("../manifests/install.yaml") // rendered from the chart
	if err != nil {
		t.Fatal(err)
	}
	var doc []byte
	for _, d := range bytes.Split(data, []byte("\n---\n")) {
		if bytes.Contains(d, []byte("\nkind: MutatingWebhookConfiguration\n")) {
			doc = d
		}
	}
	if doc == nil {
		t.Fatal("manifests/install.yaml has no MutatingWebhookConfiguration")
	}
	data = doc
	var mwc struct {
		Webhooks []struct {
			Name            string `yaml:"name"`
			MatchConditions []struct {
				Name       string `yaml:"name"`
				Expression string `yaml:"expression"`
			} `yaml:"matchConditions"`
		} `yaml:"webhooks"`
	}
	if err := yaml.Unmarshal(data, &mwc); err != nil {
		t.Fatal(err)
	}
	env, err := cel.NewEnv(cel.Variable("object", cel.DynType))
	if err != nil {
		t.Fatal(err)
	}
	var programs []cel.Program
	for _, w := range mwc.Webhooks {
		for _, mc := range w.MatchConditions {
			ast, iss := env.Compile(mc.Expression)
			if iss.Err() != nil {
				t.Fatalf("%s/%s: %v", w.Name, mc.Name, iss.Err())
			}
			prg, err := env.Program(ast)
			if err != nil {
				t.Fatal(err)
			}
			programs = append(programs, prg)
		}
	}
	if len(programs) == 0 {
		t.Fatal("no matchConditions in the webhook configuration")
	}
	ns := Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled}}
	for _, dnsPolicy := range []corev1.DNSPolicy{"", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone} {
		for _, hostNet := range []*bool{nil, ptrTo(false), ptrTo(true)} {
			spec := map[string]any{}
			if dnsPolicy != "" {
				spec["dnsPolicy"] = string(dnsPolicy)
			}
			if hostNet != nil {
				spec["hostNetwork"] = *hostNet
			}
			called := true
			for _, prg := range programs {
				out, _, err := prg.Eval(map[string]any{"object": map[string]any{"spec": spec}})
				if err != nil {
					t.Fatalf("%v: %v", spec, err)
				}
				called = called && out.Value() == true
			}
			p := pod(func(p *corev1.Pod) {
				p.Spec.DNSPolicy = dnsPolicy
				p.Spec.HostNetwork = hostNet != nil && *hostNet
				if dnsPolicy == corev1.DNSNone {
					p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.1"}}
				}
			})
			d := Decide(p, ns, Default(), kubeDNSAddr)
			if decided := d.Action != Skip; decided != called || UsesClusterDNS(dnsPolicy, p.Spec.HostNetwork) != called {
				t.Errorf("dnsPolicy %q hostNetwork %v: apiserver calls the webhook: %v; Decide: %s/%s; UsesClusterDNS: %v",
					dnsPolicy, spec["hostNetwork"], called, d.Action, d.Reason, UsesClusterDNS(dnsPolicy, p.Spec.HostNetwork))
			}
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
