package admissionpolicy

// The one MutatingAdmissionPolicy: the profile's options appended, or the
// nodelocal nameservers, searches and options, as one JSONPatch.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/policy"
)

// mutating is the one MutatingAdmissionPolicy and its binding.
func (c *compiler) mutating() (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding) {
	vars := []admissionregistrationv1.Variable{
		{Name: "labels", Expression: `namespaceObject.metadata.?labels.orValue({})`},
		{Name: "profile", Expression: c.profile},
		{Name: "musl", Expression: `object.spec.containers.exists(c, ` + policy.LooksMuslCEL(`c.image`) + `) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, ` + policy.LooksMuslCEL(`c.image`) + `))`},
		{Name: "want", Expression: c.wantExpression(`variables.musl`)},
		{Name: "have", Expression: `object.spec.?dnsConfig.?options.orValue([])`},
		{Name: "missing", Expression: missingExpression},
		{Name: "annotate", Expression: `object.metadata.?annotations[?'` + policy.ProfileLabel + `'].orValue('') != variables.profile`},
	}
	// Who is left alone whatever the mode: a namespace a rule audits, a
	// musl pod under musl: skip.
	var leftAlone []string
	if c.auditRules != "" {
		vars = append(vars, admissionregistrationv1.Variable{Name: "audited", Expression: c.auditRules})
		leftAlone = append(leftAlone, "variables.audited")
	}
	if skip := c.profilesWhere(c.names, func(p *policy.Profile) bool { return p.Musl == v1alpha1.MuslSkip }); len(skip) > 0 {
		leftAlone = append(leftAlone, fmt.Sprintf("(variables.profile in %s && variables.musl)", policy.CELStrings(skip)))
	}
	guard := func(skip string) string {
		return strings.Join(append(slices.Clone(leftAlone), skip), " || ")
	}
	patch := "[]"
	if len(c.local) > 0 {
		vars = append(vars, c.nodeLocalVariables()...)
		vars = append(vars, admissionregistrationv1.Variable{Name: "withinLimits", Expression: limitsExpression})
		patch = fmt.Sprintf("variables.profile in %s ? (%s ? [] : %s) : []", policy.CELStrings(c.local), guard("!variables.withinLimits"), nodeLocalPatch)
	}
	if len(c.opt) > 0 {
		patch = fmt.Sprintf("variables.profile in %s ? (%s ? [] : %s) :\n%s", policy.CELStrings(c.opt), guard("size(variables.missing) == 0"), optionsPatch, patch)
	}
	var param *admissionregistrationv1.ParamKind
	var ref *admissionregistrationv1.ParamRef
	if c.param {
		param = &admissionregistrationv1.ParamKind{APIVersion: "v1", Kind: "Service"}
		// kube-dns missing: the policy is skipped, pods are admitted unchanged.
		allow := admissionregistrationv1.AllowAction
		ref = &admissionregistrationv1.ParamRef{Namespace: c.o.KubeDNSNamespace, Name: c.o.KubeDNSName, ParameterNotFoundAction: &allow}
	}
	ignore := admissionregistrationv1.Ignore
	p := &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingAdmissionPolicy"},
		ObjectMeta: managed(Name),
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			ParamKind:        param,
			MatchConstraints: podCreates(),
			MatchConditions:  c.matchConditions("dnstune-applies", "", ""),
			Variables:        vars,
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: patch},
			}},
			FailurePolicy: &ignore,
			// Never: kube-apiserver evaluates it once per pod. IfNeeded
			// evaluates a mutating policy twice even with no other mutator:
			// in one run each here, +2.24 ms added to the p50 of a create
			// with IfNeeded (webhook +1.42 ms) and +1.42 ms with Never
			// (webhook +1.24 ms). A later mutator rarely touches dnsConfig,
			// and the patch is idempotent either way.
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	b := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingAdmissionPolicyBinding"},
		ObjectMeta: managed(Name),
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName:     Name,
			ParamRef:       ref,
			MatchResources: c.matchResources(policy.InjectEnabled),
		},
	}
	return p, b
}

// The options profiles' patch appends the missing options (the pod's own
// win) and sets the profile annotation. Its values are the missing options
// themselves (variables.want holds each as the pod's JSON has it, a flag
// without a value key): no comprehension, and plain CEL maps, which
// kube-apiserver converts without the type-name check and Object
// conversion it gives an Object (make bench, -pprof). No JSONPatch value is
// a list of Objects:
// kube-apiserver 1.36.0 to 1.36.4 panic converting one
// (kubernetes/kubernetes#142181), failing the create whatever the failure
// policy says. A pod with a dnsConfig but no options gets an empty list
// first, then each option on its own.
const (
	optionsPatch = `(!has(object.spec.dnsConfig) ?
    [JSONPatch{op: "add", path: "/spec/dnsConfig", value: {'options': variables.missing}}] :
    (!has(object.spec.dnsConfig.options) ? [JSONPatch{op: "add", path: "/spec/dnsConfig/options", value: []}] : []) +
    variables.missing.map(o, JSONPatch{op: "add", path: "/spec/dnsConfig/options/-", value: o})
  ) + ` + annotationPatch

	// option is a missing option o as an Object (nodeLocalPatch's dnsConfig
	// is an Object holding a list of them, which converts fine on 1.36).
	option = `('value' in o ? Object.spec.dnsConfig.options{name: o['name'], value: o['value']} : Object.spec.dnsConfig.options{name: o['name']})`

	// nodeLocalPatch sets dnsPolicy None, the node-local cache and cluster
	// DNS first, the namespace's searches, and the options.
	nodeLocalPatch = `[
    JSONPatch{op: "add", path: "/spec/dnsPolicy", value: "None"},
    JSONPatch{op: "add", path: "/spec/dnsConfig", value: Object.spec.dnsConfig{
      nameservers: variables.servers,
      searches: variables.searches,
      options: variables.have.map(h, has(h.value) ? Object.spec.dnsConfig.options{name: h.name, value: h.value} : Object.spec.dnsConfig.options{name: h.name}) +
        variables.missing.map(o, ` + option + `)
    }}
  ] + ` + annotationPatch

	annotationPatch = `(!variables.annotate ? [] :
    !has(object.metadata.annotations) ?
      [JSONPatch{op: "add", path: "/metadata/annotations", value: {"` + policy.ProfileLabel + `": variables.profile}}] :
      [JSONPatch{op: "add", path: "/metadata/annotations/` + "dnstune.io~1profile" + `", value: variables.profile}])`
)

// missingExpression is the wanted options the pod does not name (its own
// win), without a comprehension for the common pod that names none: each
// costs kube-apiserver a folder and, nested, stack growth (make bench,
// -pprof).
const missingExpression = `size(variables.have) == 0 ? variables.want : variables.want.filter(w, !variables.have.exists(h, h.name == w['name']))`

// limitsExpression: the nodelocal result stays within kube-apiserver's
// limits (policy.checkLimits).
var limitsExpression = fmt.Sprintf(`size(variables.servers) <= %d && size(variables.searches) <= %d && variables.searches.join(' ').size() <= %d`,
	policy.MaxNameservers, policy.MaxSearches, policy.MaxSearchListChars)

// nodeLocalVariables are the nameservers and searches a nodelocal pod gets:
// the node-local cache and the cluster DNS first, then the pod's own; the
// namespace's cluster searches first, then the pod's own; each without
// repeats, as policy.Decide merges them.
func (c *compiler) nodeLocalVariables() []admissionregistrationv1.Variable {
	return []admissionregistrationv1.Variable{
		{Name: "front", Expression: fmt.Sprintf(`[%s, %s]`, strconv.Quote(c.pol.NodeLocalDNS.String()), c.dns)},
		{Name: "servers", Expression: `variables.front + object.spec.?dnsConfig.?nameservers.orValue([]).filter(s, !(s in variables.front)).distinct()`},
		{Name: "searchFront", Expression: fmt.Sprintf(`[namespaceObject.metadata.name + '.svc.%[1]s', 'svc.%[1]s', '%[1]s']`, c.pol.ClusterDomain)},
		{Name: "searches", Expression: `variables.searchFront + object.spec.?dnsConfig.?searches.orValue([]).filter(s, !(s in variables.searchFront)).distinct()`},
	}
}
