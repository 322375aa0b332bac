// Package admissionpolicy compiles a dnstune policy to the in-tree
// MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA since
// Kubernetes 1.36): the same decision as the webhook, written in CEL and
// JSONPatch, evaluated inside kube-apiserver, so pods keep being mutated
// while dnstune's own pods are down.
//
// Two policies: one for the options profiles, one for nodelocal profiles
// (which needs the kube-dns Service as its parameter when the policy gives
// no clusterDNS; a missing Service then only stops nodelocal, as the
// webhook's no-cluster-dns skip does). The skip rules are the binding's
// selectors (opt-in label, excluded namespaces, pod opt-out, DNS servers)
// and the policies' matchConditions (dnsPolicy/hostNetwork, Windows).
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

// Names of the compiled objects.
const (
	OptionsName   = "dnstune-options"
	NodeLocalName = "dnstune-nodelocal"
)

// Options for Compile.
type Options struct {
	// NamespaceSelector, when set, is added to the bindings' namespace
	// selector (tests run the compiled policy beside the webhook).
	NamespaceSelector map[string]string
	// KubeDNS is the Service the nodelocal policy reads the cluster DNS
	// address from when the policy sets none, default kube-system/kube-dns.
	KubeDNSNamespace, KubeDNSName string
	// NoParams leaves the nodelocal policy out, rather than reading kube-dns
	// as a parameter, when the policy gives no clusterDNS: creating a policy
	// with a paramKind needs "get" on every object of that kind (every
	// Service), which the in-cluster backend avoids by compiling in the
	// address it discovers.
	NoParams bool
}

// Objects are the compiled policies and bindings, in apply order.
type Objects struct {
	Policies []*admissionregistrationv1.MutatingAdmissionPolicy
	Bindings []*admissionregistrationv1.MutatingAdmissionPolicyBinding
	// Audit warns, as the webhook does in audit mode, what it would change
	// (validationActions Warn and Audit; the audit annotation is
	// pods.dnstune.io/would-mutate, as the webhook's).
	Audit        *admissionregistrationv1.ValidatingAdmissionPolicy
	AuditBinding *admissionregistrationv1.ValidatingAdmissionPolicyBinding
}

// All is every object, in the order they are applied: the policies, their
// bindings, then the audit policy and its binding when there is one.
func (o *Objects) All() []client.Object {
	var all []client.Object
	for _, p := range o.Policies {
		all = append(all, p)
	}
	for _, b := range o.Bindings {
		all = append(all, b)
	}
	if o.Audit != nil {
		all = append(all, o.Audit, o.AuditBinding)
	}
	return all
}

// AuditName is the ValidatingAdmissionPolicy's name; it prefixes its audit
// annotation, so it is the webhook's name.
const AuditName = "pods.dnstune.io"

// Compile returns the admission policies implementing pol. Audit (the
// policy's, a rule's or a namespace's) is not mutation: such namespaces are
// left alone here (warnings need a ValidatingAdmissionPolicy).
func Compile(pol *policy.Policy, o Options) (out *Objects, err error) {
	if o.KubeDNSName == "" {
		o.KubeDNSNamespace, o.KubeDNSName = "kube-system", "kube-dns"
	}
	out = &Objects{}
	profileExpr, err := profileExpression(pol)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range pol.Profiles {
			if !yield(n) {
				return
			}
		}
	})
	var optNames, localNames []string
	for _, n := range names {
		if pol.Profiles[n].Mode == v1alpha1.ModeNodeLocal {
			localNames = append(localNames, n)
		} else {
			optNames = append(optNames, n)
		}
	}
	common := []admissionregistrationv1.Variable{
		{Name: "labels", Expression: `namespaceObject.metadata.?labels.orValue({})`},
		{Name: "profile", Expression: profileExpr},
		{Name: "audited", Expression: auditExpression(pol)},
		{Name: "containers", Expression: `object.spec.?initContainers.orValue([]).map(c, {'name': c.name, 'image': c.image}) + object.spec.containers.map(c, {'name': c.name, 'image': c.image})`},
		{Name: "musl", Expression: `variables.containers.filter(c, ` + muslExpr(`c['image']`) + `)`},
		{Name: "muslSkip", Expression: fmt.Sprintf(`size(variables.musl) > 0 && variables.profile in %s`, celStrings(muslProfiles(pol, names, func(p *policy.Profile) bool { return p.Musl == v1alpha1.MuslSkip })))},
		{Name: "want", Expression: wantExpression(pol, names)},
		{Name: "have", Expression: `object.spec.?dnsConfig.?options.orValue([])`},
		{Name: "missing", Expression: `variables.want.filter(w, !variables.have.exists(h, h.name == w.name))`},
		{Name: "annotate", Expression: `object.metadata.?annotations[?'` + policy.ProfileLabel + `'].orValue('') != variables.profile`},
	}
	defer func() {
		if err == nil {
			out.Audit, out.AuditBinding = auditPolicy(pol, o, common, optNames, localNames)
		}
	}()
	if pol.Enforcement == v1alpha1.Audit {
		return out, nil // a cluster-wide dry run mutates nothing
	}
	if len(optNames) > 0 {
		vars := append(slices.Clone(common), admissionregistrationv1.Variable{
			Name: "active", Expression: fmt.Sprintf(`!variables.audited && !variables.muslSkip && variables.profile in %s && size(variables.missing) > 0`, celStrings(optNames)),
		})
		out.Policies = append(out.Policies, mutatingPolicy(OptionsName, vars, optionsPatch, nil))
		out.Bindings = append(out.Bindings, binding(OptionsName, pol, o, nil))
	}
	if len(localNames) > 0 && (pol.ClusterDNS.IsValid() || !o.NoParams) {
		dns := `string(params.spec.clusterIP)`
		var param *admissionregistrationv1.ParamKind
		var ref *admissionregistrationv1.ParamRef
		if pol.ClusterDNS.IsValid() {
			dns = strconv.Quote(pol.ClusterDNS.String())
		} else {
			param = &admissionregistrationv1.ParamKind{APIVersion: "v1", Kind: "Service"}
			allow := admissionregistrationv1.AllowAction // kube-dns missing: nodelocal skips, as the webhook does
			ref = &admissionregistrationv1.ParamRef{Namespace: o.KubeDNSNamespace, Name: o.KubeDNSName, ParameterNotFoundAction: &allow}
		}
		vars := append(slices.Clone(common), nodeLocalVariables(pol, dns)...)
		vars = append(vars,
			admissionregistrationv1.Variable{Name: "withinLimits", Expression: fmt.Sprintf(`size(variables.servers) <= %d && size(variables.searches) <= %d && variables.searches.join(' ').size() <= %d`, policy.MaxNameservers, policy.MaxSearches, policy.MaxSearchListChars)},
			admissionregistrationv1.Variable{Name: "active", Expression: fmt.Sprintf(`!variables.audited && !variables.muslSkip && variables.profile in %s && variables.withinLimits`, celStrings(localNames))},
		)
		out.Policies = append(out.Policies, mutatingPolicy(NodeLocalName, vars, nodeLocalPatch, param))
		out.Bindings = append(out.Bindings, binding(NodeLocalName, pol, o, ref))
	}
	return out, nil
}

// nodeLocalVariables are the nameservers and searches a nodelocal pod gets:
// the node-local cache and dns (a CEL string expression) first, then the
// pod's own; the namespace's cluster searches first, then the pod's own;
// each without repeats, as policy.Decide merges them.
func nodeLocalVariables(pol *policy.Policy, dns string) []admissionregistrationv1.Variable {
	return []admissionregistrationv1.Variable{
		{Name: "front", Expression: fmt.Sprintf(`[%s, %s]`, strconv.Quote(pol.NodeLocalDNS.String()), dns)},
		{Name: "servers", Expression: `variables.front + object.spec.?dnsConfig.?nameservers.orValue([]).filter(s, !(s in variables.front)).distinct()`},
		{Name: "searchFront", Expression: fmt.Sprintf(`[namespaceObject.metadata.name + '.svc.%[1]s', 'svc.%[1]s', '%[1]s']`, pol.ClusterDomain)},
		{Name: "searches", Expression: `variables.searchFront + object.spec.?dnsConfig.?searches.orValue([]).filter(s, !(s in variables.searchFront)).distinct()`},
	}
}

// optionsPatch appends the missing options (the pod's own win) and sets the
// profile annotation. No JSONPatch value is a list of Objects:
// kube-apiserver 1.36.0 to 1.36.4 panic converting one
// (kubernetes/kubernetes#142181), failing the create whatever the failure
// policy says. A pod with a dnsConfig but no options gets an empty list
// first, then each option on its own; an Object holding a list of Objects
// (a new dnsConfig) converts fine there.
const optionsPatch = `!variables.active ? [] :
  (!has(object.spec.dnsConfig) ?
    [JSONPatch{op: "add", path: "/spec/dnsConfig", value: Object.spec.dnsConfig{options: variables.missing.map(o, o.value == '' ? Object.spec.dnsConfig.options{name: o.name} : Object.spec.dnsConfig.options{name: o.name, value: o.value})}}] :
    (!has(object.spec.dnsConfig.options) ? [JSONPatch{op: "add", path: "/spec/dnsConfig/options", value: []}] : []) +
    variables.missing.map(o, JSONPatch{op: "add", path: "/spec/dnsConfig/options/-", value: o.value == '' ? Object.spec.dnsConfig.options{name: o.name} : Object.spec.dnsConfig.options{name: o.name, value: o.value}})
  ) + ` + annotationPatch

// nodeLocalPatch sets dnsPolicy None, the node-local cache and cluster DNS
// first, the namespace's searches, and the options.
const nodeLocalPatch = `!variables.active ? [] :
  [
    JSONPatch{op: "add", path: "/spec/dnsPolicy", value: "None"},
    JSONPatch{op: "add", path: "/spec/dnsConfig", value: Object.spec.dnsConfig{
      nameservers: variables.servers,
      searches: variables.searches,
      options: object.spec.?dnsConfig.?options.orValue([]).map(h, has(h.value) ? Object.spec.dnsConfig.options{name: h.name, value: h.value} : Object.spec.dnsConfig.options{name: h.name}) +
        variables.missing.map(o, o.value == '' ? Object.spec.dnsConfig.options{name: o.name} : Object.spec.dnsConfig.options{name: o.name, value: o.value})
    }}
  ] + ` + annotationPatch

const annotationPatch = `(!variables.annotate ? [] :
    !has(object.metadata.annotations) ?
      [JSONPatch{op: "add", path: "/metadata/annotations", value: {"` + policy.ProfileLabel + `": variables.profile}}] :
      [JSONPatch{op: "add", path: "/metadata/annotations/` + "dnstune.io~1profile" + `", value: variables.profile}])`

// auditPolicy is the ValidatingAdmissionPolicy that says, in audit
// namespaces (and under audit rules or a cluster-wide audit), what the
// webhook would change, in the webhook's words.
func auditPolicy(pol *policy.Policy, o Options, common []admissionregistrationv1.Variable, optNames, localNames []string) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	vars := slices.Clone(common)
	audited := "variables.audited"
	if pol.Enforcement == v1alpha1.Audit {
		audited = "true"
	}
	known := optNames
	words := `variables.missing.map(o, o.value == '' ? o.name : o.name + ':' + o.value).join(' ')`
	msg := `'dnstune audit: would apply profile ' + variables.profile + ' (options): add options ' + ` + words
	if pol.ClusterDNS.IsValid() && len(localNames) > 0 {
		known = append(slices.Clone(optNames), localNames...)
		vars = append(vars, nodeLocalVariables(pol, strconv.Quote(pol.ClusterDNS.String()))...)
		msg = fmt.Sprintf(`variables.profile in %s ?
  'dnstune audit: would apply profile ' + variables.profile + ' (nodelocal): dnsPolicy ' + object.spec.?dnsPolicy.orValue('ClusterFirst') + ' -> None; nameservers ' + variables.servers.join(',') + '; searches ' + variables.searches.join(',') + (size(variables.missing) > 0 ? '; add options ' + %s : '') :
  %s`, celStrings(localNames), words, msg)
	}
	local := "false"
	if len(known) > len(optNames) {
		local = fmt.Sprintf(`(variables.profile in %s && size(variables.servers) <= %d && size(variables.searches) <= %d && variables.searches.join(' ').size() <= %d)`,
			celStrings(localNames), policy.MaxNameservers, policy.MaxSearches, policy.MaxSearchListChars)
	}
	vars = append(vars, admissionregistrationv1.Variable{Name: "wouldChange", Expression: fmt.Sprintf(
		`%s && !variables.muslSkip && ((variables.profile in %s && size(variables.missing) > 0) || %s)`, audited, celStrings(optNames), local)})
	// The webhook's over-the-limits skip (policy.ReasonOverLimits), in
	// enforced and audit namespaces: the first limit passed, as checkLimits
	// says it. Enforced pods are seen unchanged (the mutating policy left
	// them alone for the same reason).
	limitsCheck := []admissionregistrationv1.Validation{}
	if len(known) > len(optNames) {
		on := fmt.Sprintf(`variables.profile in %s && !variables.muslSkip`, celStrings(localNames))
		n, s, c := `size(variables.servers)`, `size(variables.searches)`, `variables.searches.join(' ').size()`
		limitsCheck = []admissionregistrationv1.Validation{
			{Expression: fmt.Sprintf(`!(%s && %s > %d)`, on, n, policy.MaxNameservers),
				MessageExpression: fmt.Sprintf(`'dnstune: nameservers would number ' + string(%s) + ', over the limit of %d; pod left unchanged'`, n, policy.MaxNameservers)},
			{Expression: fmt.Sprintf(`!(%s && %s <= %d && %s > %d)`, on, n, policy.MaxNameservers, s, policy.MaxSearches),
				MessageExpression: fmt.Sprintf(`'dnstune: searches would number ' + string(%s) + ', over the limit of %d; pod left unchanged'`, s, policy.MaxSearches)},
			{Expression: fmt.Sprintf(`!(%s && %s <= %d && %s <= %d && %s > %d)`, on, n, policy.MaxNameservers, s, policy.MaxSearches, c, policy.MaxSearchListChars),
				MessageExpression: fmt.Sprintf(`'dnstune: the search list would be ' + string(%s) + ' characters, over the limit of %d; pod left unchanged'`, c, policy.MaxSearchListChars)},
		}
	}
	// The musl warning (policy.LooksMusl), for options profiles that add
	// single-request-reopen: exact in audit namespaces (nothing mutated);
	// in enforced ones the pod is seen after mutation, so "dnstune changed
	// this pod" (its profile annotation) stands for "the pod did not set
	// single-request-reopen itself".
	var srr []string
	for _, n := range optNames {
		if pol.Profiles[n].Options.SingleRequestReopen {
			srr = append(srr, n)
		}
	}
	// The ndots-kept warning: the same "changed" test, for profiles whose
	// musl: keepNdots changes ndots for musl pods.
	keep := muslProfiles(pol, known, func(p *policy.Profile) bool { return p.KeepsNdotsFor() })
	changed := fmt.Sprintf(`((%s && variables.wouldChange) || (!(%s) && object.metadata.?annotations[?'%s'].orValue('') == variables.profile))`, audited, audited, policy.ProfileLabel)
	vars = append(vars,
		admissionregistrationv1.Variable{Name: "warnMusl", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && !variables.muslSkip && ((%s && variables.missing.exists(o, o.name == 'single-request-reopen')) || (!(%s) && object.metadata.?annotations[?'%s'].orValue('') == variables.profile))`,
			celStrings(srr), audited, audited, policy.ProfileLabel)},
		// The pod's own ndots (policy.muslNdotsWarning): options mode never
		// adds ndots to a musl pod under keepNdots, so after mutation too
		// an ndots option is the pod's own.
		admissionregistrationv1.Variable{Name: "podNdots", Expression: `object.spec.?dnsConfig.?options.orValue([]).filter(o, o.name == 'ndots').map(o, o.?value.orValue(''))`},
		admissionregistrationv1.Variable{Name: "warnNdotsKept", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && %s && size(variables.podNdots) == 0`, celStrings(keep), changed)},
		admissionregistrationv1.Variable{Name: "warnOwnNdots", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && %s && size(variables.podNdots) > 0 && variables.podNdots[0].matches('^[0-9]{1,9}$') && int(variables.podNdots[0]) < %d`,
			celStrings(keep), changed, v1alpha1.KubeletNdots)},
	)
	var profNdots []string
	for _, n := range keep {
		profNdots = append(profNdots, fmt.Sprintf("'%s': '%d'", n, *pol.Profiles[n].Options.Ndots))
	}
	ndotsOf := "{" + strings.Join(profNdots, ", ") + "}[variables.profile]"
	ignore := admissionregistrationv1.Ignore
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: AuditName, Labels: map[string]string{"app.kubernetes.io/managed-by": "dnstune"}},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: mutatingPolicy("x", nil, "", nil).Spec.MatchConstraints,
			MatchConditions:  matchConditions(),
			Variables:        vars,
			Validations: append([]admissionregistrationv1.Validation{
				// The webhook's unknown-profile warning (policy.ReasonUnknownProfile),
				// in enforced and audit namespaces alike.
				{Expression: fmt.Sprintf("variables.profile in %s", celStrings(slices.Sorted(maps.Keys(pol.Profiles)))),
					MessageExpression: `'dnstune: namespace ' + namespaceObject.metadata.name + ' names profile "' + variables.profile + '", which the policy does not define; pod left unchanged'`},
				{Expression: "!variables.warnMusl", MessageExpression: `'dnstune: container "' + variables.musl[0]['name'] + '" uses "' + variables.musl[0]['image'] + '", which looks musl-based (Alpine): musl ignores single-request-reopen; use the ` + v1alpha1.NodeLocalProfileName + ` profile (node-local DNS cache) to avoid 5-second DNS stalls'`},
				{Expression: "!variables.warnNdotsKept", MessageExpression: `'dnstune: container "' + variables.musl[0]['name'] + '" uses "' + variables.musl[0]['image'] + '", which looks musl-based (Alpine): this pod gets ndots:` + strconv.Itoa(v1alpha1.KubeletNdots) + `, not profile ' + variables.profile + '\'s ndots:' + ` + ndotsOf + ` + ', because with a lower ndots musl fails name.namespace.svc lookups (it does not fall back to the search list); profile ' + variables.profile + '\'s musl: apply gives it ndots:' + ` + ndotsOf + ` + ' anyway'`},
				{Expression: "!variables.warnOwnNdots", MessageExpression: `'dnstune: container "' + variables.musl[0]['name'] + '" uses "' + variables.musl[0]['image'] + '", which looks musl-based (Alpine): this pod sets ndots:' + variables.podNdots[0] + ' itself, which dnstune keeps, and with it musl fails name.namespace.svc lookups (it does not fall back to the search list); remove the pod\'s ndots option or set it to ` + strconv.Itoa(v1alpha1.KubeletNdots) + `'`},
				{Expression: "!variables.wouldChange", MessageExpression: msg},
			}, limitsCheck...),
			AuditAnnotations: []admissionregistrationv1.AuditAnnotation{{Key: "would-mutate",
				ValueExpression: `variables.wouldChange ? (` + strings.ReplaceAll(msg, "'dnstune audit: would apply ", "'") + `) : ''`}},
			FailurePolicy: &ignore,
		},
	}
	b := binding(AuditName, pol, o, nil)
	inject := b.Spec.MatchResources.NamespaceSelector
	delete(inject.MatchLabels, policy.InjectLabel)
	inject.MatchExpressions = append(inject.MatchExpressions, metav1.LabelSelectorRequirement{Key: policy.InjectLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{policy.InjectEnabled, policy.InjectAudit}})
	vb := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: AuditName, Labels: map[string]string{"app.kubernetes.io/managed-by": "dnstune"}},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        AuditName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn, admissionregistrationv1.Audit},
			MatchResources:    b.Spec.MatchResources,
		},
	}
	return vap, vb
}

func mutatingPolicy(name string, vars []admissionregistrationv1.Variable, patch string, param *admissionregistrationv1.ParamKind) *admissionregistrationv1.MutatingAdmissionPolicy {
	ignore := admissionregistrationv1.Ignore
	p := &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "dnstune"}},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			ParamKind: param,
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}}},
			},
			MatchConditions: matchConditions(),
			Variables:       vars,
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
	return p
}

// matchConditions are the webhook configuration's (pods that use the
// cluster DNS: policy.UsesClusterDNS) and the Windows skip
// (policy.RunsOnWindows).
func matchConditions() []admissionregistrationv1.MatchCondition {
	return []admissionregistrationv1.MatchCondition{
		{Name: "cluster-dns-in-use", Expression: `!object.spec.?hostNetwork.orValue(false) || object.spec.?dnsPolicy.orValue('') == 'ClusterFirstWithHostNet'`},
		{Name: "dns-policy-not-owned", Expression: `!(object.spec.?dnsPolicy.orValue('ClusterFirst') in ['Default', 'None'])`},
		{Name: "not-windows", Expression: `!(
  object.spec.?os.?name.orValue('') == 'windows' ||
  object.spec.?nodeSelector[?'` + policy.OSLabel + `'].orValue('') == 'windows' ||
  (object.spec.?affinity.?nodeAffinity.?requiredDuringSchedulingIgnoredDuringExecution.?nodeSelectorTerms.orValue([]).size() > 0 &&
   object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.all(t,
     t.?matchExpressions.orValue([]).exists(r, r.key == '` + policy.OSLabel + `' && r.operator == 'In' && size(r.?values.orValue([])) > 0 && r.values.all(v, v == 'windows')))))`},
	}
}

func binding(name string, pol *policy.Policy, o Options, ref *admissionregistrationv1.ParamRef) *admissionregistrationv1.MutatingAdmissionPolicyBinding {
	nsSel := &metav1.LabelSelector{
		MatchLabels: map[string]string{policy.InjectLabel: policy.InjectEnabled},
	}
	for k, v := range o.NamespaceSelector {
		nsSel.MatchLabels[k] = v
	}
	if len(pol.ExcludeNamespaces) > 0 {
		nsSel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: slices.Clone(pol.ExcludeNamespaces)}}
	}
	return &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "dnstune"}},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: name,
			ParamRef:   ref,
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: nsSel,
				ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: policy.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{policy.InjectDisabled}},
					{Key: "k8s-app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-dns", "node-local-dns"}},
				}},
			},
		},
	}
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

// auditExpression: a namespace in audit (label, or a matching audit rule
// before any other match) is not mutated.
func auditExpression(pol *policy.Policy) string {
	expr := "false"
	for i := len(pol.Rules) - 1; i >= 0; i-- {
		cond, err := ruleCondition(pol.Rules[i])
		if err != nil {
			continue
		}
		expr = fmt.Sprintf("(%s) ? %t : (%s)", cond, pol.Rules[i].Enforcement == v1alpha1.Audit, expr)
	}
	return fmt.Sprintf("variables.labels[?'%s'].orValue('') == 'audit' || (%s)", policy.InjectLabel, expr)
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

// muslProfiles are the names among names whose profile satisfies f.
func muslProfiles(pol *policy.Policy, names []string, f func(*policy.Profile) bool) []string {
	var out []string
	for _, n := range names {
		if f(pol.Profiles[n]) {
			out = append(out, n)
		}
	}
	return out
}

// wantExpression is the chosen profile's options (policy.Profile.OptionsFor:
// a pod with a musl-based image may get others), in the webhook's order
// (ndots, timeout, attempts, single-request-reopen); value ” = none.
func wantExpression(pol *policy.Policy, names []string) string {
	return fmt.Sprintf("variables.profile in %s ? (size(variables.musl) > 0 ? {%s} : {%s})[variables.profile].map(o, {'name': o['name'], 'value': o['value']}) : []",
		celStrings(names), optionEntries(pol, names, true), optionEntries(pol, names, false))
}

func optionEntries(pol *policy.Policy, names []string, musl bool) string {
	var entries []string
	for _, n := range names {
		o := pol.Profiles[n].OptionsFor(musl)
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
			opts = append(opts, "{'name': 'single-request-reopen', 'value': ''}")
		}
		entries = append(entries, fmt.Sprintf("%s: [%s]", strconv.Quote(n), strings.Join(opts, ", ")))
	}
	return strings.Join(entries, ", ")
}

// muslExpr is policy.LooksMusl in CEL for the image reference img: the
// image is named alpine, or its tag contains "alpine".
func muslExpr(img string) string {
	ref := img + `.split('@')[0]`
	hasTag := ref + `.lastIndexOf(':') > ` + ref + `.lastIndexOf('/')`
	name := `(` + hasTag + ` ? ` + ref + `.substring(0, ` + ref + `.lastIndexOf(':')) : ` + ref + `)`
	tag := `(` + hasTag + ` ? ` + ref + `.substring(` + ref + `.lastIndexOf(':') + 1) : '')`
	return `(` + name + `.substring(` + name + `.lastIndexOf('/') + 1) == 'alpine' || ` + tag + `.contains('alpine'))`
}

func celStrings(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
