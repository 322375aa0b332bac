package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"reflect"
	"regexp"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	corev1 "k8s.io/api/core/v1"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

// Each rule's CEL form (cel.go) against its Go form (decide.go) on the same
// inputs, evaluated with cel-go and the CEL libraries kube-apiserver
// enables for admission policies, without a kube-apiserver.

var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("object", cel.DynType),
		cel.Variable("image", cel.StringType),
		cel.Variable("musl", cel.BoolType),
		cel.Variable("labels", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("name", cel.StringType),
		cel.OptionalTypes(),
		ext.Strings(ext.StringsVersion(2)),
	)
	if err != nil {
		panic(err)
	}
	return env
}()

func evalCEL(t *testing.T, expr string, vars map[string]any) any {
	t.Helper()
	ast, iss := celEnv.Compile(expr)
	if iss.Err() != nil {
		t.Fatalf("compile %s: %v", expr, iss.Err())
	}
	prg, err := celEnv.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := prg.Eval(vars)
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	if _, isList := out.Value().([]ref.Val); isList {
		v, err := out.ConvertToNative(reflect.TypeFor[[]map[string]any]())
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	return out.Value()
}

// asObject is p as kube-apiserver hands it to CEL: its JSON.
func asObject(t *testing.T, p *corev1.Pod) map[string]any {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLooksMuslCEL(t *testing.T) {
	for _, img := range []string{
		"alpine", "alpine:3.20", "library/alpine", "docker.io/library/alpine:3", "registry:5000/alpine",
		"registry:5000/alpine:edge", "nginx:1.27-alpine", "nginx:alpine3.20-slim", "python:3.12-alpine@sha256:0123",
		"alpine@sha256:0123", "myalpine:1", "alpine-tools:1", "ghcr.io/alpine/app:1", "nginx", "nginx:1.27",
		"registry:5000/nginx", "x/alpinelike", "busybox:musl", "",
	} {
		got := evalCEL(t, LooksMuslCEL("image"), map[string]any{"image": img})
		if got != LooksMusl(img) {
			t.Errorf("%q: CEL says %v, LooksMusl %v", img, got, LooksMusl(img))
		}
	}
}

func TestPodRulesCEL(t *testing.T) {
	windowsAffinity := func(values ...string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: OSLabel, Operator: corev1.NodeSelectorOpIn, Values: values}}}},
			}}}
		}
	}
	pods := map[string]*corev1.Pod{
		"plain":               pod(),
		"os windows":          pod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }),
		"os linux":            pod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Linux} }),
		"nodeSelector win":    pod(func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{OSLabel: "windows"} }),
		"affinity win":        pod(windowsAffinity("windows")),
		"affinity mixed":      pod(windowsAffinity("windows", "linux")),
		"affinity empty":      pod(windowsAffinity()),
		"opted out":           pod(func(p *corev1.Pod) { p.Labels = map[string]string{InjectLabel: InjectDisabled} }),
		"opted in":            pod(func(p *corev1.Pod) { p.Labels = map[string]string{InjectLabel: InjectEnabled} }),
		"coredns":             pod(func(p *corev1.Pod) { p.Labels = map[string]string{"k8s-app": "kube-dns"} }),
		"node-local-dns":      pod(func(p *corev1.Pod) { p.Labels = map[string]string{"k8s-app": "node-local-dns"} }),
		"other app":           pod(func(p *corev1.Pod) { p.Labels = map[string]string{"k8s-app": "web"} }),
		"hostNetwork":         pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		"hostNetwork CFWHN":   pod(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet }),
		"dnsPolicy Default":   pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }),
		"dnsPolicy None":      pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSNone }),
		"dnsPolicy CF":        pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSClusterFirst }),
		"hostNetwork CF":      pod(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirst }),
		"hostNetwork Default": pod(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSDefault }),
	}
	network, dnsPolicy := UsesClusterDNSCEL("object")
	for name, p := range pods {
		vars := map[string]any{"object": asObject(t, p)}
		if got, want := evalCEL(t, RunsOnWindowsCEL("object"), vars), RunsOnWindows(&p.Spec); got != want {
			t.Errorf("%s: RunsOnWindowsCEL %v, RunsOnWindows %v", name, got, want)
		}
		if got, want := evalCEL(t, LeftAloneCEL("object"), vars), p.Labels[InjectLabel] == InjectDisabled || isDNSServer(p.Labels); got != want {
			t.Errorf("%s: LeftAloneCEL %v, opted out or isDNSServer %v", name, got, want)
		}
		got := evalCEL(t, network+" && "+dnsPolicy, vars)
		if want := UsesClusterDNS(p.Spec.DNSPolicy, p.Spec.HostNetwork); got != want {
			t.Errorf("%s: UsesClusterDNSCEL %v, UsesClusterDNS %v", name, got, want)
		}
	}
}

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

// The namespace's profile and the rules' audit (ProfileCEL, AuditRulesCEL)
// against chooseProfile, and each profile's options (OptionsCEL) against
// OptionsFor, for the example policy's kinds of rules on namespaces its
// selectors and globs tell apart.
func TestNamespaceRulesCEL(t *testing.T) {
	pol, err := Load("rules.yaml", []byte(`apiVersion: dnstune.io/v1alpha1
kind: Policy
clusterDNS: 10.96.0.10
profiles:
  resilient: {mode: options, options: {ndots: 2, timeout: 1, attempts: 3, singleRequestReopen: true}}
  nodelocal: {mode: nodelocal, options: {ndots: 2, timeout: 1, attempts: 2}}
  fast: {mode: options, options: {ndots: 1}, musl: apply}
  slow: {mode: options, options: {timeout: 5}, musl: skip}
rules:
  - namespaces: ["payments-*", "team-?"]
    profile: nodelocal
  - namespaceSelector: {matchLabels: {team: legacy}, matchExpressions: [{key: tier, operator: NotIn, values: [web]}]}
    profile: slow
    enforcement: audit
  - namespaceSelector: {matchExpressions: [{key: fast, operator: Exists}, {key: tier, operator: In, values: [batch, web]}]}
    profile: fast
  - namespaceSelector: {matchExpressions: [{key: legacy, operator: DoesNotExist}, {key: zone, operator: In, values: [eu]}]}
    profile: fast
    enforcement: audit
`))
	if err != nil {
		t.Fatal(err)
	}
	profile, err := pol.ProfileCEL("labels", "name")
	if err != nil {
		t.Fatal(err)
	}
	audit := pol.AuditRulesCEL("labels", "name")
	names := []string{"shop", "payments-eu", "team-a", "team-ab", "legacy"}
	labelSets := []map[string]string{
		{}, {"team": "legacy"}, {"team": "legacy", "tier": "web"}, {"fast": "", "tier": "batch"}, {"fast": "1", "tier": "db"},
		{"zone": "eu"}, {"zone": "eu", "legacy": "yes"}, {ProfileLabel: "slow"}, {ProfileLabel: "nope", "team": "legacy"},
	}
	seen := map[string]bool{}
	for _, n := range names {
		for _, l := range labelSets {
			l := maps.Clone(l)
			l[InjectLabel] = InjectEnabled
			vars := map[string]any{"labels": l, "name": n}
			ns := Namespace{Name: n, Labels: l}
			prof, enforcement := pol.choose(ns)
			want := l[ProfileLabel]
			if prof != nil && want == "" {
				want = prof.Name
			}
			if got := evalCEL(t, profile, vars); got != want {
				t.Errorf("namespace %s %v: ProfileCEL %v, choose %q", n, l, got, want)
			}
			seen[want] = true
			if _, labelled := l[ProfileLabel]; !labelled {
				if got := evalCEL(t, audit, vars); got != (enforcement == v1alpha1.Audit) {
					t.Errorf("namespace %s %v: AuditRulesCEL %v, choose %q", n, l, got, enforcement)
				}
			}
		}
	}
	if len(seen) < 5 {
		t.Errorf("the table reached profiles %v only", seen)
	}
	for name, p := range pol.Profiles {
		for _, musl := range []bool{false, true} {
			got := evalCEL(t, p.OptionsCEL("musl"), map[string]any{"musl": musl})
			want := mergeOptionsFor(p.OptionsFor(musl))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("profile %s musl %v: OptionsCEL %v, OptionsFor %v", name, musl, got, want)
			}
		}
	}
}

// mergeOptionsFor is what mergeOptions adds to a pod without options, as
// the pod's JSON has it.
func mergeOptionsFor(o Options) []map[string]any {
	opts, _ := mergeOptions(nil, o)
	out := []map[string]any{}
	for _, o := range opts {
		m := map[string]any{"name": o.Name}
		if o.Value != nil {
			m["value"] = *o.Value
		}
		out = append(out, m)
	}
	return out
}
