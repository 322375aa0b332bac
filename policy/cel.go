package policy

// The rules of decide.go in CEL, function by function, as the compiled
// admission policies (package admissionpolicy) evaluate them inside
// kube-apiserver. Each takes CEL expressions for its inputs (a Pod as
// object, the namespace's labels as a map) and returns a CEL expression.
// cel_test.go runs each against its Go form with cel-go on the same
// inputs; the e2e differential runs the compiled policies on a real
// kube-apiserver.

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

// UsesClusterDNSCEL is UsesClusterDNS of the Pod pod, as its two
// conditions: its network (not hostNetwork, unless ClusterFirstWithHostNet)
// and its dnsPolicy (neither Default nor None).
func UsesClusterDNSCEL(pod string) (network, dnsPolicy string) {
	return `(!` + pod + `.spec.?hostNetwork.orValue(false) || ` + pod + `.spec.?dnsPolicy.orValue('') == 'ClusterFirstWithHostNet')`,
		`!(` + pod + `.spec.?dnsPolicy.orValue('ClusterFirst') in ['Default', 'None'])`
}

// RunsOnWindowsCEL is RunsOnWindows of the Pod pod.
func RunsOnWindowsCEL(pod string) string {
	return `(
  ` + pod + `.spec.?os.?name.orValue('') == 'windows' ||
  ` + pod + `.spec.?nodeSelector[?'` + OSLabel + `'].orValue('') == 'windows' ||
  (` + pod + `.spec.?affinity.?nodeAffinity.?requiredDuringSchedulingIgnoredDuringExecution.?nodeSelectorTerms.orValue([]).size() > 0 &&
   ` + pod + `.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.all(t,
     t.?matchExpressions.orValue([]).exists(r, r.key == '` + OSLabel + `' && r.operator == 'In' && size(r.?values.orValue([])) > 0 && r.values.all(v, v == 'windows'))))
)`
}

// LeftAloneCEL is skipReason's rule for the Pod pod itself: it opted out,
// or it is a cluster DNS server (isDNSServer).
func LeftAloneCEL(pod string) string {
	return fmt.Sprintf(`(%[1]s.metadata.?labels[?'%[2]s'].orValue('') == '%[3]s' || %[1]s.metadata.?labels[?'k8s-app'].orValue('') in %[4]s)`,
		pod, InjectLabel, InjectDisabled, CELStrings(DNSServerApps))
}

// LooksMuslCEL is LooksMusl of the image reference img: the image is named
// alpine, or its tag contains "alpine". The first test, that the reference
// contains "alpine" at all, settles it for most images.
func LooksMuslCEL(img string) string {
	ref := img + `.split('@')[0]`
	hasTag := ref + `.lastIndexOf(':') > ` + ref + `.lastIndexOf('/')`
	name := `(` + hasTag + ` ? ` + ref + `.substring(0, ` + ref + `.lastIndexOf(':')) : ` + ref + `)`
	tag := `(` + hasTag + ` ? ` + ref + `.substring(` + ref + `.lastIndexOf(':') + 1) : '')`
	return `(` + img + `.contains('alpine') && (` + name + `.substring(` + name + `.lastIndexOf('/') + 1) == 'alpine' || ` + tag + `.contains('alpine')))`
}

// ProfileCEL is the name of the profile chooseProfile gives a namespace
// whose labels (a map) and name are the CEL expressions given: its
// dnstune.io/profile label, else the first matching rule's, else the
// default.
func (p *Policy) ProfileCEL(labels, name string) (string, error) {
	expr := strconv.Quote(p.DefaultProfile)
	for i := len(p.Rules) - 1; i >= 0; i-- {
		cond, err := p.Rules[i].CEL(labels, name)
		if err != nil {
			return "", fmt.Errorf("rules[%d]: %w", i, err)
		}
		expr = fmt.Sprintf("(%s) ? %s : (%s)", cond, strconv.Quote(p.Rules[i].Profile), expr)
	}
	return fmt.Sprintf("'%[1]s' in %[2]s ? %[2]s['%[1]s'] : (%[3]s)", ProfileLabel, labels, expr), nil
}

// AuditRulesCEL is "the first rule matching the namespace audits it" (the
// enforcement choose gives), or "" when no rule audits (the namespace
// label's audit and the policy's are the bindings' business).
func (p *Policy) AuditRulesCEL(labels, name string) string {
	if !slices.ContainsFunc(p.Rules, func(r Rule) bool { return r.Enforcement == v1alpha1.Audit }) {
		return ""
	}
	expr := "false"
	for i := len(p.Rules) - 1; i >= 0; i-- {
		cond, err := p.Rules[i].CEL(labels, name)
		if err != nil {
			continue // ProfileCEL has refused it
		}
		expr = fmt.Sprintf("(%s) ? %t : (%s)", cond, p.Rules[i].Enforcement == v1alpha1.Audit, expr)
	}
	return "(" + expr + ")"
}

// CEL is whether r matches a namespace (Rule.matches): its
// namespaceSelector as written in the API (matchLabels by key, then
// matchExpressions in order, all of them), or any of its name globs.
func (r Rule) CEL(labels, name string) (string, error) {
	if sel := r.LabelSelector; sel != nil {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
			parts = append(parts, fmt.Sprintf("(%[1]s in %[3]s && %[3]s[%[1]s] == %[2]s)", strconv.Quote(k), strconv.Quote(sel.MatchLabels[k]), labels))
		}
		for _, e := range sel.MatchExpressions {
			k, vals := strconv.Quote(e.Key), CELStrings(e.Values)
			switch e.Operator {
			case metav1.LabelSelectorOpIn:
				parts = append(parts, fmt.Sprintf("(%[1]s in %[3]s && %[3]s[%[1]s] in %[2]s)", k, vals, labels))
			case metav1.LabelSelectorOpNotIn:
				parts = append(parts, fmt.Sprintf("!(%[1]s in %[3]s && %[3]s[%[1]s] in %[2]s)", k, vals, labels))
			case metav1.LabelSelectorOpExists:
				parts = append(parts, fmt.Sprintf("(%s in %s)", k, labels))
			case metav1.LabelSelectorOpDoesNotExist:
				parts = append(parts, fmt.Sprintf("!(%s in %s)", k, labels))
			default:
				return "", fmt.Errorf("selector operator %s has no CEL form here", e.Operator)
			}
		}
		if len(parts) == 0 {
			return "true", nil
		}
		return strings.Join(parts, " && "), nil
	}
	var parts []string
	for _, g := range r.Namespaces {
		re, err := globRegexp(g)
		if err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s.matches(%s)", name, strconv.Quote(re)))
	}
	if len(parts) == 0 {
		return "false", nil
	}
	return strings.Join(parts, " || "), nil
}

// globRegexp turns a path.Match glob (as the policy's rules use on
// namespace names, which hold no '/') into an anchored RE2 expression.
func globRegexp(g string) (string, error) {
	if _, err := path.Match(g, ""); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(g); i++ {
		switch c := g[i]; c {
		case '*':
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		case '\\':
			if i+1 < len(g) {
				i++
				b.WriteString(regexp.QuoteMeta(string(g[i])))
			}
		case '[':
			j := strings.IndexByte(g[i:], ']')
			class := g[i+1 : i+j]
			if strings.HasPrefix(class, "^") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + class + "]")
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return b.String(), nil
}

// OptionsCEL is OptionsFor as a CEL list, musl being a CEL bool: the
// options in the webhook's order (ndots, timeout, attempts,
// single-request-reopen) as the pod's JSON has them, {'name', 'value'}
// maps, {'name'} for a flag.
func (p *Profile) OptionsCEL(musl string) string {
	plain, forMusl := p.OptionsFor(false).cel(), p.OptionsFor(true).cel()
	if plain == forMusl {
		return plain
	}
	return fmt.Sprintf("(%s ? %s : %s)", musl, forMusl, plain)
}

func (o Options) cel() string {
	var opts []string
	add := func(name string, v *int) {
		if v != nil {
			opts = append(opts, fmt.Sprintf("{'name': '%s', 'value': '%d'}", name, *v))
		}
	}
	add("ndots", o.Ndots)
	add("timeout", o.Timeout)
	add("attempts", o.Attempts)
	if o.SingleRequestReopen {
		opts = append(opts, "{'name': 'single-request-reopen'}")
	}
	return "[" + strings.Join(opts, ", ") + "]"
}

// CEL is w as a CEL string expression: its words quoted, each slot the
// CEL string expression slots gives it. A slot without one panics
// (admissionpolicy.Compile returns that as an internal error; the tests
// compile every warning).
func (w Warning) CEL(slots map[string]string) string {
	parts := w.Parts()
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		switch {
		case i%2 == 1:
			e, ok := slots[p]
			if !ok {
				panic(fmt.Sprintf("warning %q: no CEL for slot {%s}", w, p))
			}
			out = append(out, e)
		case p != "":
			out = append(out, celQuote(p))
		}
	}
	return strings.Join(out, " + ")
}

// celQuote is s as a single-quoted CEL string literal.
func celQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// CELStrings is s as a CEL list of strings.
func CELStrings(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
