// Package policytest makes dnstune policy files for property tests, as
// net/http/httptest makes servers: Generate turns any bytes (a fuzzer's, or
// a seed's) into a policy file that exercises the API's fields, valid or
// not. The tests that use it hold every path to one rule: a policy that
// `policy check` accepts compiles, and every backend decides with it.
package policytest

import (
	"encoding/json"
	"math/rand/v2"
)

// Generate returns a policy file (JSON, which is YAML) built from data,
// each byte choosing one field's value among ones the validation accepts
// and a few it refuses. Exhausted data reads as zeros, so every input,
// the empty one too, yields a policy.
func Generate(data []byte) []byte {
	g := &gen{data: data}
	g.bad = g.pick(4) == 0 // one policy in four may hold values check refuses
	p := map[string]any{"apiVersion": "dnstune.io/v1alpha1", "kind": "Policy"}
	g.maybe(p, "clusterDomain", "cluster.local", "corp.example", "a.b.c")
	g.maybe(p, "clusterDNS", "10.96.0.10", "fd00::a", "169.254.20.10")
	g.maybe(p, "nodeLocalDNS", g.or([]any{"169.254.20.10", "169.254.10.11", "fd00::10"}, "10.96.0.10")...)
	g.maybe(p, "enforcement", "enforce", "audit")
	names := []string{"fast", "resilient", "nodelocal", "slow", "p-1"}
	var defined []string
	if n := g.pick(4); n > 0 {
		profiles := map[string]any{}
		for range n {
			name := names[g.pick(len(names))]
			profiles[name] = g.profile()
			defined = append(defined, name)
		}
		p["profiles"] = profiles
	}
	// A policy that defines profiles has only those (the built-in ones
	// otherwise), and its default must be one of them.
	candidates := defined
	if len(defined) == 0 {
		candidates = []string{"resilient", "nodelocal"}
	}
	if g.bad {
		candidates = append(candidates, "undefined")
	}
	profiles, _ := p["profiles"].(map[string]any)
	if _, ok := profiles["resilient"]; g.pick(3) > 0 || (len(defined) > 0 && !ok) {
		p["defaultProfile"] = candidates[g.pick(len(candidates))]
	}
	if n := g.pick(4); n > 0 {
		rules := make([]any, 0, n)
		for range n {
			rules = append(rules, g.rule(candidates))
		}
		p["rules"] = rules
	}
	switch g.pick(len(g.or([]any{0, 1, 2, 3}, 4))) {
	case 1:
		p["excludeNamespaces"] = []string{}
	case 2:
		p["excludeNamespaces"] = []string{"kube-system"}
	case 3:
		p["excludeNamespaces"] = []string{"kube-system", "monitoring", "a"}
	case 4:
		p["excludeNamespaces"] = []string{"kube-*"} // refused: not a DNS-1123 label
	}
	out, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic(err) // maps of strings, numbers and bools always marshal
	}
	return append(out, '\n')
}

// Seeds returns n inputs for Generate from a fixed pseudo-random sequence:
// the same seeds on every run, so a failure reproduces.
func Seeds(n int) [][]byte {
	r := rand.New(rand.NewPCG(28, 2026)) // #nosec G404 -- reproducible test seeds, not secrets
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 48)
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		out[i] = b
	}
	return out
}

type gen struct {
	data []byte
	i    int
	// bad lets the refused values be chosen.
	bad bool
}

// or returns valid, with refused appended when g.bad.
func (g *gen) or(valid []any, refused ...any) []any {
	if g.bad {
		return append(valid, refused...)
	}
	return valid
}

// pick returns a number in [0, n) from the next byte.
func (g *gen) pick(n int) int {
	if g.i >= len(g.data) {
		return 0
	}
	b := g.data[g.i]
	g.i++
	return int(b) % n
}

// maybe sets m[key] to one of values, or leaves it out.
func (g *gen) maybe(m map[string]any, key string, values ...any) {
	// 0 leaves the key out; i in 1..len(values) picks values[i-1].
	if i := g.pick(len(values) + 1); i > 0 {
		m[key] = values[i-1] // #nosec G602 -- pick returns less than len(values)+1
	}
}

func (g *gen) profile() map[string]any {
	prof := map[string]any{}
	g.maybe(prof, "mode", "options", "nodelocal")
	g.maybe(prof, "musl", "keepNdots", "skip", "apply")
	opts := map[string]any{}
	g.maybe(opts, "ndots", g.or([]any{0, 1, 2, 4, 5, 15}, 16)...)
	g.maybe(opts, "timeout", g.or([]any{1, 2, 30}, 0)...)
	g.maybe(opts, "attempts", 1, 3, 5)
	g.maybe(opts, "singleRequestReopen", true, false)
	if len(opts) > 0 || g.pick(2) == 1 {
		prof["options"] = opts
	}
	return prof
}

func (g *gen) rule(profiles []string) map[string]any {
	r := map[string]any{"profile": profiles[g.pick(len(profiles))]}
	g.maybe(r, "enforcement", "enforce", "audit")
	switch g.pick(4) {
	case 0:
		globs := []string{"payments-*", "team-?", "prod[0-9]", "x", "*"}
		r["namespaces"] = []string{globs[g.pick(len(globs))], globs[g.pick(len(globs))]}
	case 1:
		r["namespaceSelector"] = map[string]any{"matchLabels": map[string]string{"team": "legacy"}}
	case 2:
		ops := []map[string]any{
			{"key": "tier", "operator": "In", "values": []string{"web", "api"}},
			{"key": "tier", "operator": "NotIn", "values": []string{"batch"}},
			{"key": "legacy", "operator": "Exists"},
			{"key": "legacy", "operator": "DoesNotExist"},
		}
		r["namespaceSelector"] = map[string]any{"matchExpressions": []any{ops[g.pick(len(ops))], ops[g.pick(len(ops))]}}
	case 3:
		r["namespaceSelector"] = map[string]any{} // every namespace
	}
	return r
}
