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
	"slices"
	"strconv"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
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

// The namespace's labels and name, as every compiled object reads them.
const (
	nsLabels = "variables.labels"
	nsName   = "namespaceObject.metadata.name"
)

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
	if c.profile, err = pol.ProfileCEL(nsLabels, nsName); err != nil {
		return nil, err
	}
	c.auditRules = pol.AuditRulesCEL(nsLabels, nsName)
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
