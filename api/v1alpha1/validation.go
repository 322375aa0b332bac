package v1alpha1

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxNamespaceLen is the longest namespace name (a DNS label).
const MaxNamespaceLen = validation.DNS1123LabelMaxLength

// MaxClusterDomainLen keeps "<namespace>.svc.<clusterDomain>", the first
// search of every nodelocal pod, a DNS-1123 subdomain (253 characters) for
// the longest namespace name: 253 - 63 - len(".svc.") = 185.
const MaxClusterDomainLen = validation.DNS1123SubdomainMaxLength - MaxNamespaceLen - len(".svc.")

// Ranges of the resolver options.
var (
	NdotsRange    = [2]int32{0, 15}
	TimeoutRange  = [2]int32{1, 30}
	AttemptsRange = [2]int32{1, 5}
)

// MapKey is the BadValue of an error about a map key (a profile name)
// rather than its value, so that it can be placed at the key.
type MapKey string

// Validate checks a defaulted policy. Field paths are dotted, with map keys
// as path elements ("profiles.fast.options.ndots") and list indexes in
// brackets ("rules[0].profile").
func Validate(p *Policy) field.ErrorList {
	var errs field.ErrorList
	if p.APIVersion == "" {
		errs = append(errs, field.Required(field.NewPath("apiVersion"), APIVersion))
	} else if p.APIVersion != APIVersion {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), p.APIVersion, fmt.Sprintf("must be %q, got %q", APIVersion, p.APIVersion)))
	}
	if p.Kind == "" {
		errs = append(errs, field.Required(field.NewPath("kind"), Kind))
	} else if p.Kind != Kind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), p.Kind, fmt.Sprintf("must be %q, got %q", Kind, p.Kind)))
	}
	if err := CheckClusterDomain(p.ClusterDomain); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("clusterDomain"), p.ClusterDomain, err.Error()))
	}
	if p.ClusterDNS != "" {
		errs = append(errs, validateAddr(field.NewPath("clusterDNS"), p.ClusterDNS)...)
	}
	errs = append(errs, validateAddr(field.NewPath("nodeLocalDNS"), p.NodeLocalDNS)...)
	errs = append(errs, validateEnforcement(field.NewPath("enforcement"), p.Enforcement)...)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Profiles {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range names {
		fld := field.NewPath("profiles").Child(name)
		if len(validation.IsDNS1123Label(name)) > 0 {
			errs = append(errs, field.Invalid(fld, MapKey(name), "profile name must be a lowercase DNS label (it is used as a label value)"))
		}
		errs = append(errs, validateProfile(fld, p.Profiles[name])...)
	}
	if _, ok := p.Profiles[p.DefaultProfile]; !ok {
		errs = append(errs, field.Invalid(field.NewPath("defaultProfile"), p.DefaultProfile, fmt.Sprintf("no profile named %q (profiles: %s)", p.DefaultProfile, strings.Join(names, ", "))))
	}
	for i, r := range p.Rules {
		errs = append(errs, validateRule(field.NewPath("rules").Index(i), r, p.Profiles, names)...)
	}
	for i, ns := range p.ExcludeNamespaces {
		errs = append(errs, validateNamespaceName(field.NewPath("excludeNamespaces").Index(i), ns)...)
	}
	return errs
}

func validateAddr(fld *field.Path, s string) field.ErrorList {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return field.ErrorList{field.Invalid(fld, s, fmt.Sprintf("must be an IPv4 or IPv6 address, got %q", s))}
	}
	if err := CheckNameserver(a); err != nil {
		return field.ErrorList{field.Invalid(fld, s, fmt.Sprintf("%v, got %q", err, s))}
	}
	return nil
}

func validateEnforcement(fld *field.Path, e Enforcement) field.ErrorList {
	switch e {
	case "", Enforce, Audit:
		return nil
	}
	return field.ErrorList{field.Invalid(fld, string(e), fmt.Sprintf("must be %q or %q, got %q", Enforce, Audit, e))}
}

func validateProfile(fld *field.Path, p Profile) field.ErrorList {
	var errs field.ErrorList
	switch p.Mode {
	case "", ModeOptions, ModeNodeLocal:
	default:
		errs = append(errs, field.Invalid(fld.Child("mode"), string(p.Mode), fmt.Sprintf("must be %q or %q, got %q", ModeOptions, ModeNodeLocal, p.Mode)))
	}
	switch p.Musl {
	case "", MuslKeepNdots, MuslSkip, MuslApply:
	default:
		errs = append(errs, field.Invalid(fld.Child("musl"), string(p.Musl), fmt.Sprintf("must be %q, %q or %q, got %q", MuslKeepNdots, MuslSkip, MuslApply, p.Musl)))
	}
	opts := fld.Child("options")
	for _, o := range []struct {
		name string
		v    *int32
		r    [2]int32
	}{{"ndots", p.Options.Ndots, NdotsRange}, {"timeout", p.Options.Timeout, TimeoutRange}, {"attempts", p.Options.Attempts, AttemptsRange}} {
		if o.v != nil && (*o.v < o.r[0] || *o.v > o.r[1]) {
			errs = append(errs, field.Invalid(opts.Child(o.name), *o.v, fmt.Sprintf("must be between %d and %d, got %d", o.r[0], o.r[1], *o.v)))
		}
	}
	return errs
}

func validateRule(fld *field.Path, r Rule, profiles map[string]Profile, names []string) field.ErrorList {
	var errs field.ErrorList
	if (r.Namespaces != nil) == (r.NamespaceSelector != nil) {
		errs = append(errs, field.Invalid(fld, "", "set exactly one of namespaces and namespaceSelector"))
	}
	for i, g := range r.Namespaces {
		if _, err := path.Match(g, ""); err != nil {
			errs = append(errs, field.Invalid(fld.Child("namespaces").Index(i), g, fmt.Sprintf("bad glob %q: %v", g, err)))
		}
	}
	if r.NamespaceSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(r.NamespaceSelector); err != nil {
			errs = append(errs, field.Invalid(fld.Child("namespaceSelector"), "", fmt.Sprintf("invalid selector: %v", err)))
		}
	}
	if r.Profile == "" {
		errs = append(errs, field.Required(fld.Child("profile"), ""))
	} else if _, ok := profiles[r.Profile]; !ok {
		errs = append(errs, field.Invalid(fld.Child("profile"), r.Profile, fmt.Sprintf("no profile named %q (profiles: %s)", r.Profile, strings.Join(names, ", "))))
	}
	errs = append(errs, validateEnforcement(fld.Child("enforcement"), r.Enforcement)...)
	return errs
}

// CheckNameserver says why a can not be a pod's nameserver, or returns nil.
// It refuses what kube-apiserver refuses in spec.dnsConfig.nameservers
// (IPv4-mapped IPv6 addresses; zones, which no IP field takes) and what
// would break the pod's resolver: the unspecified address (glibc reads
// 0.0.0.0 and :: as "this host", so the pod asks itself), multicast, and
// IPv6 link-local (unreachable without a zone). IPv4 link-local, such as
// the default node-local cache address 169.254.20.10, is fine.
func CheckNameserver(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("must be an IPv4 or IPv6 address")
	case a.Zone() != "":
		return fmt.Errorf("must not have a zone (%%%s): pod nameservers take plain addresses", a.Zone())
	case a.Is4In6():
		return fmt.Errorf("must not be an IPv4-mapped IPv6 address (kube-apiserver rejects it in pod nameservers); write %s", a.Unmap())
	case a.IsUnspecified():
		return fmt.Errorf("must not be the unspecified address: the pod's resolver would ask itself")
	case a.IsMulticast():
		return fmt.Errorf("must not be a multicast address")
	case a.Is6() && a.IsLinkLocalUnicast():
		return fmt.Errorf("must not be an IPv6 link-local address: without a zone, which pod nameservers can't carry, the pod's resolver can't reach it")
	}
	return nil
}

// CheckClusterDomain says why d can not be the cluster domain, or returns
// nil: it must be a DNS-1123 subdomain short enough that every namespace's
// search "<namespace>.svc.<d>" is one too.
func CheckClusterDomain(d string) error {
	if errs := validation.IsDNS1123Subdomain(d); len(errs) > 0 {
		return fmt.Errorf("must be a DNS domain like cluster.local, got %q", d)
	}
	if len(d) > MaxClusterDomainLen {
		return fmt.Errorf("must be at most %d characters (so that <namespace>.svc.<domain> fits the 253 of a DNS name for a 63-character namespace), got %d", MaxClusterDomainLen, len(d))
	}
	for _, l := range strings.Split(d, ".") {
		if len(l) > validation.DNS1123LabelMaxLength {
			return fmt.Errorf("each label must be at most %d characters (a DNS label; kube-apiserver refuses longer ones in pod searches), got %q (%d)", validation.DNS1123LabelMaxLength, l, len(l))
		}
	}
	return nil
}

// validateNamespaceName checks an excludeNamespaces entry as kube-apiserver
// checks the values of a namespaceSelector (the webhook configuration's and
// the compiled bindings'): a namespace name, a DNS-1123 label of at most
// 63 characters. Globs are not supported there (rules[].namespaces take
// them), so an entry that looks like one gets a hint.
func validateNamespaceName(fld *field.Path, ns string) field.ErrorList {
	msgs := validation.IsDNS1123Label(ns)
	if len(msgs) == 0 {
		return nil
	}
	msg := "must be a namespace name (a lowercase DNS label of at most 63 characters): " + strings.Join(msgs, "; ")
	if strings.ContainsAny(ns, "*?[") {
		msg = "must be a namespace name, not a pattern: excludeNamespaces takes exact names (kube-apiserver refuses patterns in the namespaceSelector it becomes); list each namespace, or use a rule with namespaces: [" + strconv.Quote(ns) + "] and a profile"
	}
	return field.ErrorList{field.Invalid(fld, ns, msg)}
}
