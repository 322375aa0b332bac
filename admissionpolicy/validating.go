package admissionpolicy

// The ValidatingAdmissionPolicies: the webhook's warnings in its words,
// and in audit namespaces what it would change.

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
		add(c.validatingPolicy(AuditName, auditAll, local), c.validatingBinding(AuditName, AuditName, policy.InjectEnabled, policy.InjectAudit))
		return
	}
	if c.auditRules != "" {
		// Audited namespaces are the rules' say: bind everywhere.
		add(c.validatingPolicy(AuditName, auditByRules, local), c.validatingBinding(AuditName, AuditName, policy.InjectEnabled, policy.InjectAudit))
		return
	}
	unknown := c.validatingBinding(UnknownProfileName, AuditName, policy.InjectEnabled)
	sel := unknown.Spec.MatchResources.NamespaceSelector
	sel.MatchExpressions = append(sel.MatchExpressions,
		metav1.LabelSelectorRequirement{Key: policy.ProfileLabel, Operator: metav1.LabelSelectorOpExists},
		metav1.LabelSelectorRequirement{Key: policy.ProfileLabel, Operator: metav1.LabelSelectorOpNotIn, Values: slices.Clone(c.names)})
	add(c.validatingPolicy(AuditName, auditAll, local), c.validatingBinding(AuditName, AuditName, policy.InjectAudit), unknown)
	if c.o.NoEnforcedWarnings {
		return
	}
	if w := c.validatingPolicy(WarningsName, auditNone, local); w != nil {
		add(w, c.validatingBinding(WarningsName, WarningsName, policy.InjectEnabled))
	}
}

// validatingPolicy is a ValidatingAdmissionPolicy giving the webhook's
// warnings in its words, for the namespaces a says are audited (auditNone:
// WarningsName's, which also gets the could-warn match condition and no
// audit). local are the nodelocal profiles it judges. It is nil when an
// enforced namespace's pod can get no warning.
func (c *compiler) validatingPolicy(name string, a audit, local []string) *admissionregistrationv1.ValidatingAdmissionPolicy {
	pol := c.pol
	audited := a.cel()
	enforcedOnly := a == auditNone
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
	if a == auditByRules {
		vars = append(vars, admissionregistrationv1.Variable{Name: "audited", Expression: fmt.Sprintf("variables.labels[?'%s'].orValue('') == '%s' || %s", policy.InjectLabel, policy.InjectAudit, c.auditRules)})
	}
	vars = append(vars,
		admissionregistrationv1.Variable{Name: "containers", Expression: `object.spec.?initContainers.orValue([]).map(c, {'name': c.name, 'image': c.image}) + object.spec.containers.map(c, {'name': c.name, 'image': c.image})`},
		admissionregistrationv1.Variable{Name: "musl", Expression: `variables.containers.filter(c, ` + policy.LooksMuslCEL(`c['image']`) + `)`},
		admissionregistrationv1.Variable{Name: "muslSkip", Expression: fmt.Sprintf(`size(variables.musl) > 0 && variables.profile in %s`, policy.CELStrings(c.profilesWhere(c.names, func(p *policy.Profile) bool { return p.Musl == v1alpha1.MuslSkip })))},
		admissionregistrationv1.Variable{Name: "want", Expression: c.wantExpression(`size(variables.musl) > 0`)},
		admissionregistrationv1.Variable{Name: "have", Expression: `object.spec.?dnsConfig.?options.orValue([])`},
		admissionregistrationv1.Variable{Name: "missing", Expression: missingExpression},
	)
	if len(local) > 0 {
		vars = append(vars, c.nodeLocalVariables()...)
	}
	words := `variables.missing.map(o, 'value' in o ? o['name'] + ':' + o['value'] : o['name']).join(' ')`
	// change is policy.Decision.Summary: what the webhook would change.
	change := `'profile ' + variables.profile + ' (options): add options ' + ` + words
	wouldLocal := "false"
	if len(local) > 0 {
		change = fmt.Sprintf(`(variables.profile in %s ?
  'profile ' + variables.profile + ' (nodelocal): dnsPolicy ' + object.spec.?dnsPolicy.orValue('ClusterFirst') + ' -> None; nameservers ' + variables.servers.join(',') + '; searches ' + variables.searches.join(',') + (size(variables.missing) > 0 ? '; add options ' + %s : '') :
  %s)`, policy.CELStrings(local), words, change)
		wouldLocal = fmt.Sprintf(`(variables.profile in %s && %s)`, policy.CELStrings(local), limitsExpression)
	}
	// A pod dnstune made nodelocal (enforced namespaces only: the match
	// conditions let it through) would not change again.
	vars = append(vars, admissionregistrationv1.Variable{Name: "wouldChange", Expression: fmt.Sprintf(
		`%s && object.spec.?dnsPolicy.orValue('') != 'None' && !variables.muslSkip && ((variables.profile in %s && size(variables.missing) > 0) || %s)`, audited, policy.CELStrings(c.opt), wouldLocal)})
	// "dnstune changed this pod": exact where it is audited (nothing was
	// mutated: it would change); in enforced namespaces the pod is seen
	// after mutation, and the profile annotation stands for it.
	annotated := fmt.Sprintf(`object.metadata.?annotations[?'%s'].orValue('') == variables.profile`, policy.ProfileLabel)
	var changed string
	switch a {
	case auditAll:
		changed = "variables.wouldChange"
	case auditNone:
		changed = annotated
	case auditByRules:
		changed = fmt.Sprintf(`((%[1]s && variables.wouldChange) || (!(%[1]s) && %[2]s))`, audited, annotated)
	}
	// The pod's own ndots (policy.muslNdotsWarning). Under keepNdots an
	// options profile never adds ndots to a musl pod, so after mutation too
	// an ndots option is the pod's own; a nodelocal one adds ndots:5, which
	// after mutation can't be told from a pod's own ndots:5 (counted as
	// dnstune's: the pod gets the "gets ndots:5" warning).
	noOwnNdots := `size(variables.podNdots) == 0`
	if len(keepLocal) > 0 && a != auditAll {
		noOwnNdots = fmt.Sprintf(`(size(variables.podNdots) == 0 || (!(%s) && variables.profile in %s && variables.podNdots[0] == '%d'))`, audited, policy.CELStrings(keepLocal), v1alpha1.KubeletNdots)
	}
	vars = append(vars,
		admissionregistrationv1.Variable{Name: "warnMusl", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && !variables.muslSkip && ((%s && variables.missing.exists(o, o['name'] == 'single-request-reopen')) || (!(%s) && object.metadata.?annotations[?'%s'].orValue('') == variables.profile))`,
			policy.CELStrings(srr), audited, audited, policy.ProfileLabel)},
		admissionregistrationv1.Variable{Name: "podNdots", Expression: `variables.have.filter(o, o.name == 'ndots').map(o, o.?value.orValue(''))`},
		admissionregistrationv1.Variable{Name: "warnNdotsKept", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && %s && %s`, policy.CELStrings(keep), changed, noOwnNdots)},
		admissionregistrationv1.Variable{Name: "warnOwnNdots", Expression: fmt.Sprintf(
			`variables.profile in %s && size(variables.musl) > 0 && %s && size(variables.podNdots) > 0 && variables.podNdots[0].matches('^[0-9]{1,9}$') && int(variables.podNdots[0]) < %d`,
			policy.CELStrings(keep), changed, v1alpha1.KubeletNdots)},
	)
	var profNdots []string
	for _, n := range keep {
		profNdots = append(profNdots, fmt.Sprintf("'%s': '%d'", n, pol.Profiles[n].Ndots()))
	}
	ndotsOf := "{" + strings.Join(profNdots, ", ") + "}[variables.profile]"
	container, image := `variables.musl[0]['name']`, `variables.musl[0]['image']`
	var validations []admissionregistrationv1.Validation
	if !enforcedOnly {
		// The webhook's unknown-profile warning (policy.ReasonUnknownProfile).
		validations = append(validations, admissionregistrationv1.Validation{Expression: fmt.Sprintf("variables.profile in %s", policy.CELStrings(c.names)),
			MessageExpression: policy.WarnUnknownProfile.CEL(map[string]string{"namespace": nsName, "profile": "variables.profile"})})
	}
	validations = append(validations,
		admissionregistrationv1.Validation{Expression: "!variables.warnMusl", MessageExpression: policy.WarnMuslSingleRequestReopen.CEL(map[string]string{"container": container, "image": image})},
		admissionregistrationv1.Validation{Expression: "!variables.warnNdotsKept", MessageExpression: policy.WarnMuslNdotsKept.CEL(map[string]string{"container": container, "image": image, "profile": "variables.profile", "ndots": ndotsOf})},
		admissionregistrationv1.Validation{Expression: "!variables.warnOwnNdots", MessageExpression: policy.WarnMuslOwnNdots.CEL(map[string]string{"container": container, "image": image, "ndots": "variables.podNdots[0]"})},
	)
	if !enforcedOnly {
		validations = append(validations, admissionregistrationv1.Validation{Expression: "!variables.wouldChange", MessageExpression: policy.WarnAudit.CEL(map[string]string{"change": change})})
	}
	if len(local) > 0 {
		// The webhook's over-the-limits skip (policy.ReasonOverLimits): the
		// first limit passed, as checkLimits says it. Enforced pods are seen
		// unchanged (the mutating policy left them alone for the same reason).
		on := fmt.Sprintf(`variables.profile in %s && !variables.muslSkip`, policy.CELStrings(local))
		n, s, ch := `size(variables.servers)`, `size(variables.searches)`, `variables.searches.join(' ').size()`
		validations = append(validations,
			admissionregistrationv1.Validation{Expression: fmt.Sprintf(`!(%s && %s > %d)`, on, n, policy.MaxNameservers),
				MessageExpression: policy.WarnTooManyNameservers.CEL(map[string]string{"count": "string(" + n + ")"})},
			admissionregistrationv1.Validation{Expression: fmt.Sprintf(`!(%s && %s <= %d && %s > %d)`, on, n, policy.MaxNameservers, s, policy.MaxSearches),
				MessageExpression: policy.WarnTooManySearches.CEL(map[string]string{"count": "string(" + s + ")"})},
			admissionregistrationv1.Validation{Expression: fmt.Sprintf(`!(%s && %s <= %d && %s <= %d && %s > %d)`, on, n, policy.MaxNameservers, s, policy.MaxSearches, ch, policy.MaxSearchListChars),
				MessageExpression: policy.WarnSearchListTooLong.CEL(map[string]string{"count": "string(" + ch + ")"})},
		)
	}
	// Where a pod can have been made nodelocal by the mutating policy, the
	// match conditions let it through (as dnsPolicy None), for its warnings.
	madeNodeLocal := ""
	if len(local) > 0 && a != auditAll {
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
			ValueExpression: `variables.wouldChange ? (` + change + `) : ''`}}
	}
	return vap
}

// audit says which of the namespaces a validating policy is bound to are
// audited: what the webhook would change is a warning and an audit
// annotation there; elsewhere the pod is seen after mutation.
type audit int

const (
	// auditAll: every namespace it is bound to (the audit label's, or the
	// whole policy audits).
	auditAll audit = iota
	// auditNone: enforced namespaces, warnings only.
	auditNone
	// auditByRules: those the namespace label or the policy's rules audit
	// (variables.audited).
	auditByRules
)

// cel is a as a CEL bool expression.
func (a audit) cel() string {
	switch a {
	case auditAll:
		return "true"
	case auditNone:
		return "false"
	default:
		return "variables.audited"
	}
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
