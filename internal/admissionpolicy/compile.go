// Package admissionpolicy compiles a dnstune policy to kube-apiserver's
// in-tree admission policies (admissionregistration.k8s.io/v1, GA since
// Kubernetes 1.36): the webhook's decision in CEL and JSONPatch, evaluated
// inside kube-apiserver, so pods keep being mutated while dnstune's own pods
// are down.
//
// One MutatingAdmissionPolicy, dnstune, does both modes. Its variables (the
// namespace's profile, whether the pod runs a musl image, the options it
// lacks; for nodelocal, its nameservers and searches) are evaluated lazily,
// at most once per pod, and one JSONPatch writes what the profile's mode
// asks. kube-apiserver round-trips the whole pod through JSON for every
// mutating policy whose match conditions pass, whether it patches or not:
// one policy is one round trip. The skip rules are the binding's selectors
// (opt-in label, excluded namespaces, pod opt-out, DNS servers) and the
// match conditions (dnsPolicy and hostNetwork, Windows).
//
// Warnings and audit mode are ValidatingAdmissionPolicies, bound only where
// they can say something, since each one that matches a pod adds its
// evaluation to the create:
//   - pods.dnstune.io, in audit namespaces (what the webhook would change,
//     as a warning and the pods.dnstune.io/would-mutate audit annotation),
//     and in enforced namespaces whose profile label names a profile the
//     policy does not define;
//   - warnings.dnstune.io, in enforced namespaces, for pods its match
//     conditions say could get a warning: an image whose reference contains
//     "alpine" (the musl warnings), or, under nodelocal profiles, their own
//     nameservers or searches (kube-apiserver's limits).
//
// When the policy's rules decide audit (or the whole policy is audit),
// which namespaces are audited is not a label selector: pods.dnstune.io is
// then bound to every opted-in namespace and does all of it.
package admissionpolicy

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/policy"
)

// Names of the compiled objects. Each binding has its policy's name, but
// for UnknownProfileName, a second binding of AuditName.
const (
	// Name is the MutatingAdmissionPolicy's.
	Name = "dnstune"
	// AuditName is the audit ValidatingAdmissionPolicy's. It prefixes the
	// audit annotation, so it is the webhook's name.
	AuditName = "pods.dnstune.io"
	// UnknownProfileName binds AuditName to enforced namespaces whose
	// profile label names no profile of the policy.
	UnknownProfileName = AuditName + "-unknown-profile"
	// WarningsName is the ValidatingAdmissionPolicy of enforced namespaces'
	// warnings.
	WarningsName = "warnings.dnstune.io"
)

// LegacyNames are the mutating policies dnstune compiled before one policy
// did both modes (one per mode). The in-cluster backend deletes them: they
// carry its managed-by label.
var LegacyNames = []string{"dnstune-options", "dnstune-nodelocal"}

// Options for Compile.
type Options struct {
	// NamespaceSelector, when set, is added to every binding's namespace
	// selector (tests run the compiled policy beside the webhook).
	NamespaceSelector map[string]string
	// KubeDNSNamespace and KubeDNSName name the Service the mutating policy
	// reads the cluster DNS address from when the policy sets none and has
	// nodelocal profiles, default kube-system/kube-dns.
	KubeDNSNamespace, KubeDNSName string
	// NoParams leaves nodelocal out, rather than reading kube-dns as a
	// parameter, when the policy gives no clusterDNS: creating a policy
	// with a paramKind needs "get" on every object of that kind (every
	// Service), which the in-cluster backend avoids by compiling in the
	// address it discovers.
	NoParams bool
	// NoEnforcedWarnings leaves warnings.dnstune.io out: pods in enforced
	// namespaces then get no musl or limit warnings (audit namespaces keep
	// all theirs, as do unknown profiles). A validating policy bound to a
	// namespace costs every pod create there its evaluation, even one its
	// match condition then skips (kube-apiserver converts the pod for it
	// first): about 0.04 ms at p50 per create (make bench). Default false.
	NoEnforcedWarnings bool
}

// Objects are the compiled policies and bindings.
type Objects struct {
	// Mutating and MutatingBinding are nil when nothing is mutated (a
	// cluster-wide audit).
	Mutating        *admissionregistrationv1.MutatingAdmissionPolicy
	MutatingBinding *admissionregistrationv1.MutatingAdmissionPolicyBinding
	// Validating are the warning and audit policies, ValidatingBindings
	// their bindings (Warn and Audit).
	Validating         []*admissionregistrationv1.ValidatingAdmissionPolicy
	ValidatingBindings []*admissionregistrationv1.ValidatingAdmissionPolicyBinding
}

// All is every object, in the order they are applied: policies before the
// bindings that name them.
func (o *Objects) All() []client.Object {
	var all []client.Object
	if o.Mutating != nil {
		all = append(all, o.Mutating, o.MutatingBinding)
	}
	for _, p := range o.Validating {
		all = append(all, p)
	}
	for _, b := range o.ValidatingBindings {
		all = append(all, b)
	}
	return all
}

// compiler holds what every part of the output is built from.
type compiler struct {
	pol *policy.Policy
	o   Options
	// names are every profile, opt the options profiles, local the
	// nodelocal profiles the mutating policy applies (none when the cluster
	// DNS is unknown and o.NoParams), sorted.
	names, opt, local []string
	// dns is the cluster DNS address as a CEL string expression ("" when
	// nodelocal is left out); param, whether it is read from kube-dns.
	dns   string
	param bool
	// profile is the CEL expression of the namespace's profile.
	profile string
	// auditRules is the CEL expression of "a rule audits this namespace",
	// "" when no rule does.
	auditRules string
}

// Compile returns the admission policies implementing pol. Every policy
// policy.Load accepts compiles (FuzzCheckImpliesCompile); a bug that
// panics here anyway is returned as an error, so the in-cluster backend
// logs it and keeps the objects it applied last rather than crash-looping.
func Compile(pol *policy.Policy, o Options) (objs *Objects, err error) {
	defer func() {
		if r := recover(); r != nil {
			objs, err = nil, fmt.Errorf("internal error compiling the policy (please report it with the policy file): %v", r)
		}
	}()
	if o.KubeDNSName == "" {
		o.KubeDNSNamespace, o.KubeDNSName = "kube-system", "kube-dns"
	}
	c := &compiler{pol: pol, o: o, names: slices.Sorted(maps.Keys(pol.Profiles))}
	if c.profile, err = profileExpression(pol); err != nil {
		return nil, err
	}
	c.auditRules = auditRulesExpression(pol)
	var local []string
	for _, n := range c.names {
		if pol.Profiles[n].Mode == v1alpha1.ModeNodeLocal {
			local = append(local, n)
		} else {
			c.opt = append(c.opt, n)
		}
	}
	switch {
	case len(local) == 0:
	case pol.ClusterDNS.IsValid():
		c.local, c.dns = local, strconv.Quote(pol.ClusterDNS.String())
	case !o.NoParams:
		c.local, c.dns, c.param = local, `string(params.spec.clusterIP)`, true
	}
	out := &Objects{}
	if pol.Enforcement != v1alpha1.Audit && len(c.opt)+len(c.local) > 0 {
		out.Mutating, out.MutatingBinding = c.mutating()
	}
	c.validating(out)
	return out, nil
}

// mutating is the one MutatingAdmissionPolicy and its binding.
func (c *compiler) mutating() (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding) {
	vars := []admissionregistrationv1.Variable{
		{Name: "labels", Expression: `namespaceObject.metadata.?labels.orValue({})`},
		{Name: "profile", Expression: c.profile},
		{Name: "musl", Expression: `object.spec.containers.exists(c, ` + muslExpr(`c.image`) + `) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, ` + muslExpr(`c.image`) + `))`},
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
		leftAlone = append(leftAlone, fmt.Sprintf("(variables.profile in %s && variables.musl)", celStrings(skip)))
	}
	guard := func(skip string) string {
		return strings.Join(append(slices.Clone(leftAlone), skip), " || ")
	}
	patch := "[]"
	if len(c.local) > 0 {
		vars = append(vars, c.nodeLocalVariables()...)
		vars = append(vars, admissionregistrationv1.Variable{Name: "withinLimits", Expression: limitsExpression})
		patch = fmt.Sprintf("variables.profile in %s ? (%s ? [] : %s) : []", celStrings(c.local), guard("!variables.withinLimits"), nodeLocalPatch)
	}
	if len(c.opt) > 0 {
		patch = fmt.Sprintf("variables.profile in %s ? (%s ? [] : %s) :\n%s", celStrings(c.opt), guard("size(variables.missing) == 0"), optionsPatch, patch)
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

// validating adds the warning and audit policies and their bindings.
func (c *compiler) validating(out *Objects) {
	// Nodelocal warnings need the cluster DNS address compiled in: a
	// validating policy reading kube-dns would skip everything without it.
	local := c.local
	if c.param {
		local = nil
	}
	add := func(p *admissionregistrationv1.ValidatingAdmissionPolicy, bindings ...*admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
		out.Validating = append(out.Validating, p)
		out.ValidatingBindings = append(out.ValidatingBindings, bindings...)
	}
	if c.pol.Enforcement == v1alpha1.Audit {
		add(c.validatingPolicy(AuditName, "true", local), c.validatingBinding(AuditName, AuditName, policy.InjectEnabled, policy.InjectAudit))
		return
	}
	if c.auditRules != "" {
		// Audited namespaces are the rules' say: bind everywhere.
		add(c.validatingPolicy(AuditName, "variables.audited", local), c.validatingBinding(AuditName, AuditName, policy.InjectEnabled, policy.InjectAudit))
		return
	}
	unknown := c.validatingBinding(UnknownProfileName, AuditName, policy.InjectEnabled)
	sel := unknown.Spec.MatchResources.NamespaceSelector
	sel.MatchExpressions = append(sel.MatchExpressions,
		metav1.LabelSelectorRequirement{Key: policy.ProfileLabel, Operator: metav1.LabelSelectorOpExists},
		metav1.LabelSelectorRequirement{Key: policy.ProfileLabel, Operator: metav1.LabelSelectorOpNotIn, Values: slices.Clone(c.names)})
	add(c.validatingPolicy(AuditName, "true", local), c.validatingBinding(AuditName, AuditName, policy.InjectAudit), unknown)
	if c.o.NoEnforcedWarnings {
		return
	}
	if w := c.validatingPolicy(WarningsName, "false", local); w != nil {
		add(w, c.validatingBinding(WarningsName, WarningsName, policy.InjectEnabled))
	}
}

// validatingPolicy is a ValidatingAdmissionPolicy giving the webhook's
// warnings in its words. audited is a CEL bool expression: "true" for audit
// namespaces, "false" for enforced ones (warningsName's, which also gets
// the could-warn match condition and no audit), or variables.audited.
// local are the nodelocal profiles it judges. It is nil when an enforced
// namespace's pod can get no warning.
func (c *compiler) validatingPolicy(name, audited string, local []string) *admissionregistrationv1.ValidatingAdmissionPolicy {
	pol := c.pol
	enforcedOnly := audited == "false"
	known := append(slices.Clone(c.opt), local...)
	var srr []string // options profiles that add single-request-reopen
	for _, n := range c.opt {
		if pol.Profiles[n].Options.SingleRequestReopen {
			srr = append(srr, n)
		}
	}
	// The ndots warnings are for profiles whose musl: keepNdots changes
	// ndots for musl pods.
	keep := c.profilesWhere(known, func(p *policy.Profile) bool { return p.KeepsNdotsFor() })
	keepLocal := c.profilesWhere(local, func(p *policy.Profile) bool { return p.KeepsNdotsFor() })
	var couldWarn []string
	if len(srr)+len(keep) > 0 {
		couldWarn = append(couldWarn, `object.spec.containers.exists(c, c.image.contains('alpine')) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.image.contains('alpine')))`)
	}
	if len(local) > 0 {
		// A pod dnstune made nodelocal is within the limits by construction.
		couldWarn = append(couldWarn, `object.spec.?dnsPolicy.orValue('') != 'None' && (object.spec.?dnsConfig.?nameservers.orValue([]).size() > 0 || object.spec.?dnsConfig.?searches.orValue([]).size() > 0)`)
	}
	if enforcedOnly && len(couldWarn) == 0 {
		return nil
	}
	vars := []admissionregistrationv1.Variable{
		{Name: "labels", Expression: `namespaceObject.metadata.?labels.orValue({})`},
		{Name: "profile", Expression: c.profile},
	}
	if audited == "variables.audited" {
		vars = append(vars, admissionregistrationv1.Variable{Name: "audited", Expression: fmt.Sprintf("variables.labels[?'%s'].orValue('') == '%s' || %s", policy.InjectLabel, policy.InjectAudit, c.auditRules)})
	}
	vars = append(vars,
		admissionregistrationv1.Variable{Name: "containers", Expression: `object.spec.?initContainers.orValue([]).map(c, {'name': c.name, 'image': c.image}) + object.spec.containers.map(c, {'name': c.name, 'image': c.image})`},
		admissionregistrationv1.Variable{Name: "musl", Expression: `variables.containers.filter(c, ` + muslExpr(`c['image']`) + `)`},
		admissionregistrationv1.Variable{Name: "muslSkip", Expression: fmt.Sprintf(`size(variables.musl) > 0 && variables.profile in %s`, celStrings(c.profilesWhere(c.names, func(p *policy.Profile) bool { return p.Musl == v1alpha1.MuslSkip })))},
		admissionregistrationv1.Variable{Name: "want", Expression: c.wantExpression(`size(variables.musl) > 0`)},
		admissionregistrationv1.Variable{Name: "have", Expression: `object.spec.?dnsConfig.?options.orValue([])`},
		admissionregistrationv1.Variable{Name: "missing", Expression: missingExpression},
	)
	if len(local) > 0 {
		vars = append(vars, c.nodeLocalVariables()...)
	}
	words := `variables.missing.map(o, 'value' in o ? o['name'] + ':' + o['value'] : o['name']).join(' ')`
	msg := `'dnstune audit: would apply profile ' + variables.profile + ' (options): add options ' + ` + words
	wouldLocal := "false"
	if len(local) > 0 {
		msg = fmt.Sprintf(`variables.profile in %s ?
  'dnstune audit: would apply profile ' + variables.profile + ' (nodelocal): dnsPolicy ' + object.spec.?dnsPolicy.orValue('ClusterFirst') + ' -> None; nameservers ' + variables.servers.join(',') + '; searches ' + variables.searches.join(',') + (size(variables.missing) > 0 ? '; add options ' + %s : '') :
  %s`, celStrings(local), words, msg)
		wouldLocal = fmt.Sprintf(`(variables.profile in %s && %s)`, celStrings(local), limitsExpression)
	}
	// A pod dnstune made nodelocal (enforced namespaces only: the match
	// conditions let it through) would not change again.
	vars = append(vars, admissionregistrationv1.Variable{Name: "wouldChange", Expression: fmt.Sprintf(
		`%s && object.spec.?dnsPolicy.orValue('') != 'None' && !variables.muslSkip && ((variables.profile in %s && size(variables.missing) > 0) || %s)`, audited, celStrings(c.opt), wouldLocal)})
	// "dnstune changed this pod": exact where it is audited (nothing was
	// mutated: it would change); in enforced namespaces the pod is seen
	// after mutation, and the profile annotation stands for it.
	annotated := fmt.Sprintf(`object.metadata.?annotations[?'%s'].orValue('') == variables.profile`, policy.ProfileLabel)
	var changed string
	switch audited {
	case "true":
		changed = "variables.wouldChange"
	case "false":
		changed = annotated
	default:
		changed = fmt.Sprintf(`((%[1]s && variables.wouldChange) || (!(%[1]s) && %[2]s))`, audited, annotated)
	}
	// The pod's own ndots (policy.muslNdotsWarning). Under keepNdots an
	// options profile never adds ndots to a musl pod, so after mutation too
	// an ndots option is the pod's own; a nodelocal one adds ndots:5, which
	// after mutation can't be told from a pod's own ndots:5 (counted as
	// dnstune's: the pod gets the "gets ndots:5" warning).
	noOwnNdots := `size(variables.podNdots) == 0`
	if len(keepLocal) > 0 && audited != "true" {
		noOwnNdots = fmt.Sprintf(`(size(variables.podNdots) == 0 || (!(%s) && variables.profile in %s && variables.podNdots[0] == '%d'))`, audited, celStrings(keepLocal), v1alpha1.KubeletNdots)
	}
	vars = append(vars,
		admissionregistrationv1.Variable{Name: "warnMusl", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && !variables.muslSkip && ((%s && variables.missing.exists(o, o['name'] == 'single-request-reopen')) || (!(%s) && object.metadata.?annotations[?'%s'].orValue('') == variables.profile))`,
			celStrings(srr), audited, audited, policy.ProfileLabel)},
		admissionregistrationv1.Variable{Name: "podNdots", Expression: `variables.have.filter(o, o.name == 'ndots').map(o, o.?value.orValue(''))`},
		admissionregistrationv1.Variable{Name: "warnNdotsKept", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && %s && %s`, celStrings(keep), changed, noOwnNdots)},
		admissionregistrationv1.Variable{Name: "warnOwnNdots", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && %s && size(variables.podNdots) > 0 && variables.podNdots[0].matches('^[0-9]{1,9}$') && int(variables.podNdots[0]) < %d`,
			celStrings(keep), changed, v1alpha1.KubeletNdots)},
	)
	var profNdots []string
	for _, n := range keep {
		profNdots = append(profNdots, fmt.Sprintf("'%s': '%d'", n, pol.Profiles[n].Ndots()))
	}
	ndotsOf := "{" + strings.Join(profNdots, ", ") + "}[variables.profile]"
	musl := `'dnstune: container "' + variables.musl[0]['name'] + '" uses "' + variables.musl[0]['image'] + '", which looks musl-based (Alpine): `
	var validations []admissionregistrationv1.Validation
	if !enforcedOnly {
		// The webhook's unknown-profile warning (policy.ReasonUnknownProfile).
		validations = append(validations, admissionregistrationv1.Validation{Expression: fmt.Sprintf("variables.profile in %s", celStrings(c.names)),
			MessageExpression: `'dnstune: namespace ' + namespaceObject.metadata.name + ' names profile "' + variables.profile + '", which the policy does not define; pod left unchanged'`})
	}
	validations = append(validations,
		admissionregistrationv1.Validation{Expression: "!variables.warnMusl", MessageExpression: musl + `musl ignores single-request-reopen; use the ` + v1alpha1.NodeLocalProfileName + ` profile (node-local DNS cache) to avoid 5-second DNS stalls'`},
		admissionregistrationv1.Validation{Expression: "!variables.warnNdotsKept", MessageExpression: musl + `this pod gets ndots:` + strconv.Itoa(v1alpha1.KubeletNdots) + `, not profile ' + variables.profile + '\'s ndots:' + ` + ndotsOf + ` + ', because with a lower ndots musl fails name.namespace.svc lookups (it does not fall back to the search list); profile ' + variables.profile + '\'s musl: apply gives it ndots:' + ` + ndotsOf + ` + ' anyway'`},
		admissionregistrationv1.Validation{Expression: "!variables.warnOwnNdots", MessageExpression: musl + `this pod sets ndots:' + variables.podNdots[0] + ' itself, which dnstune keeps, and with it musl fails name.namespace.svc lookups (it does not fall back to the search list); remove the pod\'s ndots option or set it to ` + strconv.Itoa(v1alpha1.KubeletNdots) + `'`},
	)
	if !enforcedOnly {
		validations = append(validations, admissionregistrationv1.Validation{Expression: "!variables.wouldChange", MessageExpression: msg})
	}
	if len(local) > 0 {
		// The webhook's over-the-limits skip (policy.ReasonOverLimits): the
		// first limit passed, as checkLimits says it. Enforced pods are seen
		// unchanged (the mutating policy left them alone for the same reason).
		on := fmt.Sprintf(`variables.profile in %s && !variables.muslSkip`, celStrings(local))
		n, s, ch := `size(variables.servers)`, `size(variables.searches)`, `variables.searches.join(' ').size()`
		validations = append(validations,
			admissionregistrationv1.Validation{Expression: fmt.Sprintf(`!(%s && %s > %d)`, on, n, policy.MaxNameservers),
				MessageExpression: fmt.Sprintf(`'dnstune: nameservers would number ' + string(%s) + ', over the limit of %d; pod left unchanged'`, n, policy.MaxNameservers)},
			admissionregistrationv1.Validation{Expression: fmt.Sprintf(`!(%s && %s <= %d && %s > %d)`, on, n, policy.MaxNameservers, s, policy.MaxSearches),
				MessageExpression: fmt.Sprintf(`'dnstune: searches would number ' + string(%s) + ', over the limit of %d; pod left unchanged'`, s, policy.MaxSearches)},
			admissionregistrationv1.Validation{Expression: fmt.Sprintf(`!(%s && %s <= %d && %s <= %d && %s > %d)`, on, n, policy.MaxNameservers, s, policy.MaxSearches, ch, policy.MaxSearchListChars),
				MessageExpression: fmt.Sprintf(`'dnstune: the search list would be ' + string(%s) + ' characters, over the limit of %d; pod left unchanged'`, ch, policy.MaxSearchListChars)},
		)
	}
	// Where a pod can have been made nodelocal by the mutating policy, the
	// match conditions let it through (as dnsPolicy None), for its warnings.
	madeNodeLocal := ""
	if len(local) > 0 && audited != "true" {
		madeNodeLocal = fmt.Sprintf(`(object.spec.?dnsPolicy.orValue('') == 'None' && object.metadata.?annotations[?'%s'].hasValue() && object.spec.?dnsConfig.?nameservers.orValue([]).size() > 0 && object.spec.dnsConfig.nameservers[0] == %s)`,
			policy.ProfileLabel, strconv.Quote(pol.NodeLocalDNS.String()))
	}
	conds := c.matchConditions("dnstune-applies", "", madeNodeLocal)
	if enforcedOnly {
		// Most pods fail the could-warn test: first.
		conds = c.matchConditions("could-warn", strings.Join(couldWarn, " || "), madeNodeLocal)
	}
	ignore := admissionregistrationv1.Ignore
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: managed(name),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: podCreates(),
			MatchConditions:  conds,
			Variables:        vars,
			Validations:      validations,
			FailurePolicy:    &ignore,
		},
	}
	if !enforcedOnly {
		vap.Spec.AuditAnnotations = []admissionregistrationv1.AuditAnnotation{{Key: "would-mutate",
			ValueExpression: `variables.wouldChange ? (` + strings.ReplaceAll(msg, "'dnstune audit: would apply ", "'") + `) : ''`}}
	}
	return vap
}

// validatingBinding binds policyName (Warn and Audit) to the opted-in
// namespaces whose inject label is one of inject.
func (c *compiler) validatingBinding(name, policyName string, inject ...string) *admissionregistrationv1.ValidatingAdmissionPolicyBinding {
	return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: managed(name),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn, admissionregistrationv1.Audit},
			MatchResources:    c.matchResources(inject...),
		},
	}
}

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
	owned := `!(object.spec.?dnsPolicy.orValue('ClusterFirst') in ['Default', 'None'])`
	if alsoNone != "" {
		owned = "(" + owned + " || " + alsoNone + ")"
	}
	parts := []string{
		// uses the cluster DNS: not hostNetwork, unless ClusterFirstWithHostNet
		`(!object.spec.?hostNetwork.orValue(false) || object.spec.?dnsPolicy.orValue('') == 'ClusterFirstWithHostNet')`,
		// a dnsPolicy dnstune does not own
		owned,
		// not Windows
		`!(
  object.spec.?os.?name.orValue('') == 'windows' ||
  object.spec.?nodeSelector[?'` + policy.OSLabel + `'].orValue('') == 'windows' ||
  (object.spec.?affinity.?nodeAffinity.?requiredDuringSchedulingIgnoredDuringExecution.?nodeSelectorTerms.orValue([]).size() > 0 &&
   object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.all(t,
     t.?matchExpressions.orValue([]).exists(r, r.key == '` + policy.OSLabel + `' && r.operator == 'In' && size(r.?values.orValue([])) > 0 && r.values.all(v, v == 'windows'))))
)`,
		// neither opted out nor a DNS server's own pod (policy.DNSServerApps)
		fmt.Sprintf(`object.metadata.?labels[?'%s'].orValue('') != '%s' && !(object.metadata.?labels[?'k8s-app'].orValue('') in %s)`,
			policy.InjectLabel, policy.InjectDisabled, celStrings(policy.DNSServerApps)),
	}
	if len(c.pol.ExcludeNamespaces) > 0 {
		parts = append(parts, fmt.Sprintf(`!(request.namespace in %s)`, celStrings(c.pol.ExcludeNamespaces)))
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
	if r.Selector != nil {
		reqs, _ := r.Selector.Requirements()
		var parts []string
		for _, req := range reqs {
			k := strconv.Quote(req.Key())
			vals := celStrings(req.Values().List())
			switch req.Operator() {
			case selection.In, selection.Equals, selection.DoubleEquals:
				parts = append(parts, fmt.Sprintf("(%s in variables.labels && variables.labels[%s] in %s)", k, k, vals))
			case selection.NotIn, selection.NotEquals:
				parts = append(parts, fmt.Sprintf("!(%s in variables.labels && variables.labels[%s] in %s)", k, k, vals))
			case selection.Exists:
				parts = append(parts, fmt.Sprintf("(%s in variables.labels)", k))
			case selection.DoesNotExist:
				parts = append(parts, fmt.Sprintf("!(%s in variables.labels)", k))
			default:
				return "", fmt.Errorf("selector operator %s has no CEL form here", req.Operator())
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
