package admissionpolicy

// The CEL of the profiles' options, from the rules' CEL forms in package
// policy (policy/cel.go, beside decide.go).

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/dnstune/dnstune/policy"
)

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
		expr = fmt.Sprintf("variables.profile == %s ? %s :\n  %s", strconv.Quote(n), c.pol.Profiles[n].OptionsCEL(musl), expr)
	}
	return expr
}
