package admissionpolicy

// The CEL helpers every compiled object is built from: the namespace's
// profile and audit rules, the profile's options, the musl test, quoting.

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
	"github.com/dnstune/dnstune/policy"
)

// profileExpression is the profile a namespace gets: its dnstune.io/profile
// label, else the first matching rule, else the default.
func profileExpression(pol *policy.Policy) (string, error) {
	expr := strconv.Quote(pol.DefaultProfile)
	for i := len(pol.Rules) - 1; i >= 0; i-- {
		cond, err := ruleCondition(pol.Rules[i])
		if err != nil {
			return "", fmt.Errorf("rules[%d]: %w", i, err)
		}
		expr = fmt.Sprintf("(%s) ? %s : (%s)", cond, strconv.Quote(pol.Rules[i].Profile), expr)
	}
	return fmt.Sprintf("'%s' in variables.labels ? variables.labels['%s'] : (%s)", policy.ProfileLabel, policy.ProfileLabel, expr), nil
}

// auditRulesExpression is "the first rule matching the namespace audits
// it", or "" when no rule audits (the namespace label's audit is the
// bindings' business).
func auditRulesExpression(pol *policy.Policy) string {
	if !slices.ContainsFunc(pol.Rules, func(r policy.Rule) bool { return r.Enforcement == v1alpha1.Audit }) {
		return ""
	}
	expr := "false"
	for i := len(pol.Rules) - 1; i >= 0; i-- {
		cond, err := ruleCondition(pol.Rules[i])
		if err != nil {
			continue // profileExpression has refused it
		}
		expr = fmt.Sprintf("(%s) ? %t : (%s)", cond, pol.Rules[i].Enforcement == v1alpha1.Audit, expr)
	}
	return "(" + expr + ")"
}

func ruleCondition(r policy.Rule) (string, error) {
	if sel := r.LabelSelector; sel != nil {
		// The API's namespaceSelector as written: matchLabels (by key),
		// then matchExpressions in order, all of them.
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
			parts = append(parts, fmt.Sprintf("(%[1]s in variables.labels && variables.labels[%[1]s] == %[2]s)", strconv.Quote(k), strconv.Quote(sel.MatchLabels[k])))
		}
		for _, e := range sel.MatchExpressions {
			k, vals := strconv.Quote(e.Key), celStrings(e.Values)
			switch e.Operator {
			case metav1.LabelSelectorOpIn:
				parts = append(parts, fmt.Sprintf("(%s in variables.labels && variables.labels[%s] in %s)", k, k, vals))
			case metav1.LabelSelectorOpNotIn:
				parts = append(parts, fmt.Sprintf("!(%s in variables.labels && variables.labels[%s] in %s)", k, k, vals))
			case metav1.LabelSelectorOpExists:
				parts = append(parts, fmt.Sprintf("(%s in variables.labels)", k))
			case metav1.LabelSelectorOpDoesNotExist:
				parts = append(parts, fmt.Sprintf("!(%s in variables.labels)", k))
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
		parts = append(parts, fmt.Sprintf("namespaceObject.metadata.name.matches(%s)", strconv.Quote(re)))
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

// profilesWhere are the names among names whose profile satisfies f.
func (c *compiler) profilesWhere(names []string, f func(*policy.Profile) bool) []string {
	var out []string
	for _, n := range names {
		if f(c.pol.Profiles[n]) {
			out = append(out, n)
		}
	}
	return out
}

// wantExpression is the chosen profile's options (policy.Profile.OptionsFor:
// a pod with a musl-based image may get others, musl being a CEL bool), in
// the webhook's order (ndots, timeout, attempts, single-request-reopen), as
// the pod's JSON has them: {'name', 'value'} maps, {'name'} for a flag. A
// chain of conditionals, so only the chosen profile's list is built.
func (c *compiler) wantExpression(musl string) string {
	expr := "[]"
	for _, n := range slices.Backward(c.names) {
		plain, forMusl := optionList(c.pol.Profiles[n].OptionsFor(false)), optionList(c.pol.Profiles[n].OptionsFor(true))
		if plain != forMusl {
			plain = fmt.Sprintf("(%s ? %s : %s)", musl, forMusl, plain)
		}
		expr = fmt.Sprintf("variables.profile == %s ? %s :\n  %s", strconv.Quote(n), plain, expr)
	}
	return expr
}

func optionList(o policy.Options) string {
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

// muslExpr is policy.LooksMusl in CEL for the image reference img: the
// image is named alpine, or its tag contains "alpine". The first test, that
// the reference contains "alpine" at all, settles it for most images.
func muslExpr(img string) string {
	ref := img + `.split('@')[0]`
	hasTag := ref + `.lastIndexOf(':') > ` + ref + `.lastIndexOf('/')`
	name := `(` + hasTag + ` ? ` + ref + `.substring(0, ` + ref + `.lastIndexOf(':')) : ` + ref + `)`
	tag := `(` + hasTag + ` ? ` + ref + `.substring(` + ref + `.lastIndexOf(':') + 1) : '')`
	return `(` + img + `.contains('alpine') && (` + name + `.substring(` + name + `.lastIndexOf('/') + 1) == 'alpine' || ` + tag + `.contains('alpine')))`
}

func celStrings(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// celWarning is w as a CEL string expression: its words quoted, each slot
// the CEL string expression slots gives it. A slot without one panics
// (Compile returns that as an internal error; the tests compile every
// warning).
func celWarning(w policy.Warning, slots map[string]string) string {
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
