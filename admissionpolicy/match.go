package admissionpolicy

// Which pods and namespaces the compiled objects apply to: the webhook
// configuration's match conditions and the opt-in label's selectors.

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/policy"
)

func managed(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "dnstune"}}
}

func podCreates() *admissionregistrationv1.MatchResources {
	return &admissionregistrationv1.MatchResources{
		ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
		}}},
	}
}

// matchConditions are the webhook configuration's (pods that use the
// cluster DNS: policy.UsesClusterDNS), the Windows skip
// (policy.RunsOnWindows) and the pods and namespaces dnstune never touches
// (excludeNamespaces, the opt-out label, the DNS servers' own pods), as one
// condition: kube-apiserver evaluates each condition as a program of its
// own, and three cost a pod create about 10% more apiserver CPU than one
// (make bench). The exclusions are CEL rather than NotIn requirements of the
// bindings' selectors because kube-apiserver parses a policy binding's
// selectors again for every request, validating each value: with the
// default exclusions that cost more than the whole condition (make bench,
// -pprof). first, when set, is a cheap test put in front of them; alsoNone
// a condition under which a pod with dnsPolicy None still matches.
func (c *compiler) matchConditions(name, first, alsoNone string) []admissionregistrationv1.MatchCondition {
	network, owned := policy.UsesClusterDNSCEL("object")
	if alsoNone != "" {
		owned = "(" + owned + " || " + alsoNone + ")"
	}
	parts := []string{
		network, // uses the cluster DNS: not hostNetwork, unless ClusterFirstWithHostNet
		owned,   // a dnsPolicy dnstune does not own
		"!" + policy.RunsOnWindowsCEL("object"),
		"!" + policy.LeftAloneCEL("object"), // neither opted out nor a DNS server's own pod
	}
	if len(c.pol.ExcludeNamespaces) > 0 {
		parts = append(parts, fmt.Sprintf(`!(request.namespace in %s)`, policy.CELStrings(c.pol.ExcludeNamespaces)))
	}
	if first != "" {
		parts = append([]string{"(" + first + ")"}, parts...)
	}
	return []admissionregistrationv1.MatchCondition{{Name: name, Expression: strings.Join(parts, " &&\n")}}
}

// matchResources selects the namespaces whose inject label is one of
// inject (and Options.NamespaceSelector's labels): label equality only, the
// cheapest selector for kube-apiserver to parse on every request; the
// exclusions are in matchConditions.
func (c *compiler) matchResources(inject ...string) *admissionregistrationv1.MatchResources {
	nsSel := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	if len(inject) == 1 {
		nsSel.MatchLabels[policy.InjectLabel] = inject[0]
	} else {
		nsSel.MatchExpressions = append(nsSel.MatchExpressions, metav1.LabelSelectorRequirement{Key: policy.InjectLabel, Operator: metav1.LabelSelectorOpIn, Values: slices.Clone(inject)})
	}
	maps.Copy(nsSel.MatchLabels, c.o.NamespaceSelector)
	return &admissionregistrationv1.MatchResources{NamespaceSelector: nsSel}
}
