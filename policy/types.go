// Package policy holds dnstune's policy: its schema, strict loading with
// file:line:column errors, defaults, and the pure decision of what to change
// in a Pod's DNS settings. It performs no I/O beyond reading a policy file in
// LoadFile, and knows nothing of admission reviews or clients.
package policy

import (
	"net/netip"

	"k8s.io/apimachinery/pkg/labels"
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

// APIVersion and Kind of a policy file.
const (
	APIVersion = "dnstune.io/v1alpha1"
	Kind       = "Policy"
)

// Defaults applied to fields a policy file leaves out.
const (
	DefaultClusterDomain  = "cluster.local"
	DefaultNodeLocalDNS   = "169.254.20.10"
	DefaultProfileName    = "resilient"
	DefaultNodeLocalName  = "nodelocal"
	defaultEnforcementStr = "enforce"
)

// DefaultExcludeNamespaces are never mutated unless a policy sets its own list.
var DefaultExcludeNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Mode is how a profile changes a pod's DNS.
type Mode string

const (
	// ModeOptions keeps the pod's nameservers and searches and adds resolver options.
	ModeOptions Mode = "options"
	// ModeNodeLocal sets dnsPolicy None with the node-local cache first.
	ModeNodeLocal Mode = "nodelocal"
)

// Enforcement says whether a decision is applied or only reported.
type Enforcement string

const (
	// Enforce applies changes. The default.
	Enforce Enforcement = "enforce"
	// Audit reports what would change and changes nothing.
	Audit Enforcement = "audit"
)

// Options are the resolver options a profile adds. A nil pointer means the
// option is not set by the profile.
type Options struct {
	// Ndots sets "ndots:N" (0–15). Kubelet's default is 5.
	Ndots *int
	// Timeout sets "timeout:N" seconds (1–30). glibc's default is 5.
	Timeout *int
	// Attempts sets "attempts:N" (1–5). glibc's default is 2.
	Attempts *int
	// SingleRequestReopen adds "single-request-reopen" (glibc only; musl ignores it).
	SingleRequestReopen bool
}

// Profile is a named set of DNS changes.
type Profile struct {
	// Name is the key of the profile in the policy.
	Name string
	// Mode defaults to ModeOptions.
	Mode Mode
	// Options are added to the pod's dnsConfig.options; the pod's own win.
	Options Options
}

// Rule chooses a profile for namespaces. Rules are tried in order; the first
// match wins. Exactly one of Namespaces and Selector is set.
type Rule struct {
	// Namespaces are glob patterns (path.Match syntax) on the namespace name.
	Namespaces []string
	// Selector matches the namespace's labels.
	Selector labels.Selector
	// Profile names a profile of the policy.
	Profile string
	// Enforcement, when set, can switch matching namespaces to Audit.
	Enforcement Enforcement
}

// Policy is a loaded, validated, defaulted policy. Treat it as immutable once
// loaded: the webhook shares one value between all requests.
type Policy struct {
	// ClusterDomain defaults to "cluster.local".
	ClusterDomain string
	// ClusterDNS is the kube-dns Service IP; invalid (zero) means "discover".
	ClusterDNS netip.Addr
	// NodeLocalDNS is the node-local cache address, default 169.254.20.10.
	NodeLocalDNS netip.Addr
	// Enforcement defaults to Enforce; Audit makes the whole cluster a dry run.
	Enforcement Enforcement
	// DefaultProfile names the profile used when no rule matches, default "resilient".
	DefaultProfile string
	// Profiles by name. A policy that defines none gets "resilient" and "nodelocal".
	Profiles map[string]*Profile
	// Rules in order.
	Rules []Rule
	// ExcludeNamespaces are never mutated, default DefaultExcludeNamespaces.
	ExcludeNamespaces []string
}

func intPtr(i int) *int { return &i }

// ResilientProfile is the built-in default profile: keep the cluster DNS,
// resolve external names in at most two queries, and give up on a lost
// packet after one second instead of five. attempts:3 rather than glibc's 2
// was chosen from the effect lab (EFFECT.md): with 10% of DNS packets lost,
// it failed 2, 0 and 0 of 600 lookups in three runs where attempts:2 failed
// 12, 3 and 11, at the same p50/p90.
func ResilientProfile() *Profile {
	return &Profile{Name: DefaultProfileName, Mode: ModeOptions, Options: Options{
		Ndots: intPtr(2), Timeout: intPtr(1), Attempts: intPtr(3), SingleRequestReopen: true,
	}}
}

// NodeLocalProfile is the built-in node-local cache profile.
func NodeLocalProfile() *Profile {
	return &Profile{Name: DefaultNodeLocalName, Mode: ModeNodeLocal, Options: Options{
		Ndots: intPtr(2), Timeout: intPtr(1), Attempts: intPtr(2),
	}}
}

// Default returns the built-in policy: the "resilient" profile for every
// opted-in namespace, "nodelocal" available by namespace label, enforced.
func Default() *Policy {
	return &Policy{
		ClusterDomain:     DefaultClusterDomain,
		NodeLocalDNS:      netip.MustParseAddr(DefaultNodeLocalDNS),
		Enforcement:       Enforce,
		DefaultProfile:    DefaultProfileName,
		Profiles:          map[string]*Profile{DefaultProfileName: ResilientProfile(), DefaultNodeLocalName: NodeLocalProfile()},
		ExcludeNamespaces: append([]string(nil), DefaultExcludeNamespaces...),
	}
}
