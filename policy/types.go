// Package policy holds dnstune's policy as the webhook uses it: strict
// loading of the API types (package api/v1alpha1) with file:line:column
// errors, their compiled form, and the pure decision of what to change in a
// Pod's DNS settings. It performs no I/O beyond reading a policy file in
// LoadFile, and knows nothing of admission reviews or clients.
package policy

import (
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

// Labels and annotations dnstune reads and writes (domain dnstune.io).
const (
	// InjectLabel opts a namespace in ("enabled"), into dry-run ("audit"),
	// or a pod out ("disabled").
	InjectLabel = "dnstune.io/inject"
	// ProfileLabel on a namespace chooses the profile, overriding rules.
	// As an annotation on a Pod it records the profile dnstune applied.
	ProfileLabel = "dnstune.io/profile"

	InjectEnabled  = "enabled"
	InjectAudit    = "audit"
	InjectDisabled = "disabled"
)

// Options are the resolver options a profile adds. A nil pointer means the
// option is not set by the profile.
type Options struct {
	Ndots, Timeout, Attempts *int
	SingleRequestReopen      bool
}

// Profile is a named set of DNS changes.
type Profile struct {
	Name    string
	Mode    v1alpha1.Mode
	Options Options
	Musl    v1alpha1.Musl
}

// OptionsFor returns the options the profile adds to a pod, musl telling
// whether the pod runs a musl-based image: under keepNdots, ndots is never
// lowered below kubelet's 5 (left out in options mode, so kubelet's or the
// pod's own stays; set to 5 in nodelocal mode, where kubelet adds none).
// Every path (webhook, offline CLI, report, the compiled admission policy)
// takes a profile's options from here.
func (p *Profile) OptionsFor(musl bool) Options {
	o := p.Options
	if !musl || p.Musl != v1alpha1.MuslKeepNdots || (o.Ndots != nil && *o.Ndots >= v1alpha1.KubeletNdots) {
		return o
	}
	if p.Mode == v1alpha1.ModeNodeLocal {
		five := v1alpha1.KubeletNdots
		o.Ndots = &five
	} else {
		o.Ndots = nil
	}
	return o
}

// Ndots is the ndots a pod ends up with under the profile before its musl
// rule: the profile's own, else what the resolver is left with when the
// profile sets none: kubelet's 5 in options mode, the resolvers' default
// of 1 in nodelocal mode (dnsPolicy None: kubelet writes no options).
func (p *Profile) Ndots() int {
	switch {
	case p.Options.Ndots != nil:
		return *p.Options.Ndots
	case p.Mode == v1alpha1.ModeNodeLocal:
		return v1alpha1.ResolverNdots
	default:
		return v1alpha1.KubeletNdots
	}
}

// KeepsNdotsFor reports whether OptionsFor(true) differs from the
// profile's options in ndots.
func (p *Profile) KeepsNdotsFor() bool {
	a, b := p.Options.Ndots, p.OptionsFor(true).Ndots
	return (a == nil) != (b == nil) || (a != nil && *a != *b)
}

// Rule chooses a profile for namespaces; exactly one of Namespaces and
// Selector is set.
type Rule struct {
	Namespaces []string
	// Selector is LabelSelector, the API's namespaceSelector as written,
	// built for matching.
	Selector      labels.Selector
	LabelSelector *metav1.LabelSelector
	Profile       string
	Enforcement   v1alpha1.Enforcement
}

// Policy is a loaded, validated, defaulted policy, compiled for decisions
// (addresses parsed, selectors built). Treat it as immutable once loaded:
// the webhook shares one value between all requests.
type Policy struct {
	ClusterDomain string
	// ClusterDNS is invalid (zero) when the policy leaves it to discovery.
	ClusterDNS        netip.Addr
	NodeLocalDNS      netip.Addr
	Enforcement       v1alpha1.Enforcement
	DefaultProfile    string
	Profiles          map[string]*Profile
	Rules             []Rule
	ExcludeNamespaces []string
}

// WithClusterDNS returns the policy with its cluster DNS address set to a
// (a copy: p is not changed), or p itself when a is invalid. Callers
// decide who wins: the CLI's --cluster-dns overrides the policy's (flags
// override files); a discovered address is given only when the policy
// sets none.
func (p *Policy) WithClusterDNS(a netip.Addr) *Policy {
	if !a.IsValid() {
		return p
	}
	c := *p
	c.ClusterDNS = a
	return &c
}

// Compile turns a defaulted, valid API policy into the form decisions use.
// It panics on a policy Validate refuses: call it after Decode.
func Compile(p *v1alpha1.Policy) *Policy {
	out := &Policy{
		ClusterDomain:     p.ClusterDomain,
		NodeLocalDNS:      netip.MustParseAddr(p.NodeLocalDNS),
		Enforcement:       p.Enforcement,
		DefaultProfile:    p.DefaultProfile,
		Profiles:          make(map[string]*Profile, len(p.Profiles)),
		ExcludeNamespaces: append([]string(nil), p.ExcludeNamespaces...),
	}
	if p.ClusterDNS != "" {
		out.ClusterDNS = netip.MustParseAddr(p.ClusterDNS)
	}
	for name, prof := range p.Profiles {
		out.Profiles[name] = compileProfile(name, prof)
	}
	for _, r := range p.Rules {
		cr := Rule{Namespaces: r.Namespaces, Profile: r.Profile, Enforcement: r.Enforcement}
		if r.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(r.NamespaceSelector)
			if err != nil {
				panic("policy.Compile: unvalidated selector: " + err.Error())
			}
			cr.Selector, cr.LabelSelector = sel, r.NamespaceSelector.DeepCopy()
		}
		out.Rules = append(out.Rules, cr)
	}
	return out
}

// compileProfile turns a defaulted profile (v1alpha1.SetProfileDefaults)
// into the form decisions use.
func compileProfile(name string, p v1alpha1.Profile) *Profile {
	toInt := func(v *int32) *int {
		if v == nil {
			return nil
		}
		i := int(*v)
		return &i
	}
	return &Profile{Name: name, Mode: p.Mode, Musl: p.Musl, Options: Options{
		Ndots: toInt(p.Options.Ndots), Timeout: toInt(p.Options.Timeout), Attempts: toInt(p.Options.Attempts),
		SingleRequestReopen: p.Options.SingleRequestReopen != nil && *p.Options.SingleRequestReopen,
	}}
}

// builtin compiles a built-in profile, defaulted as a policy's would be.
func builtin(name string, p v1alpha1.Profile) *Profile {
	v1alpha1.SetProfileDefaults(&p)
	return compileProfile(name, p)
}

// ResilientProfile is the built-in default profile (v1alpha1.ResilientProfile), compiled.
func ResilientProfile() *Profile {
	return builtin(v1alpha1.DefaultProfileName, v1alpha1.ResilientProfile())
}

// Default returns the built-in policy: the "resilient" profile for every
// opted-in namespace, "nodelocal" available by namespace label, enforced.
func Default() *Policy { return Compile(v1alpha1.Default()) }
