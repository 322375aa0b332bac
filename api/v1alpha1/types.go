// Package v1alpha1 is dnstune's policy API, dnstune.io/v1alpha1 Policy: the
// schema of the policy file (and of the Helm chart's policy values), its
// defaults (SetDefaults) and its validation (Validate). The webhook, the
// offline CLI and every later backend read a policy through these types.
//
// +groupName=dnstune.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIVersion and Kind of a policy file.
const (
	Group      = "dnstune.io"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
	Kind       = "Policy"
)

// Policy chooses, per namespace, how dnstune changes new pods' DNS settings.
type Policy struct {
	// APIVersion must be dnstune.io/v1alpha1.
	APIVersion string `json:"apiVersion" jsonschema:"enum=dnstune.io/v1alpha1"`
	// Kind must be Policy.
	Kind string `json:"kind" jsonschema:"enum=Policy"`
	// ClusterDomain is the cluster's DNS domain, default cluster.local. At
	// most 185 characters, so that <namespace>.svc.<domain> is a DNS name.
	ClusterDomain string `json:"clusterDomain,omitempty" jsonschema:"maxLength=185,pattern=^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$,default=cluster.local"`
	// ClusterDNS is the kube-dns Service IP that the nodelocal profile puts
	// second. Empty (the default) means discover kube-system/kube-dns.
	ClusterDNS string `json:"clusterDNS,omitempty"`
	// NodeLocalDNS is the node-local cache address, default 169.254.20.10.
	NodeLocalDNS string `json:"nodeLocalDNS,omitempty" jsonschema:"default=169.254.20.10"`
	// Enforcement is enforce (the default) or audit: a cluster-wide dry run.
	Enforcement Enforcement `json:"enforcement,omitempty" jsonschema:"enum=enforce,enum=audit,default=enforce"`
	// DefaultProfile is used when no rule matches, default resilient.
	DefaultProfile string `json:"defaultProfile,omitempty" jsonschema:"default=resilient"`
	// Profiles by name (a DNS label: it becomes a label value). A policy
	// that defines none gets resilient and nodelocal.
	Profiles map[string]Profile `json:"profiles,omitempty"`
	// Rules choose a profile per namespace; the first match wins. The
	// namespace label dnstune.io/profile beats every rule.
	Rules []Rule `json:"rules,omitempty"`
	// ExcludeNamespaces are never mutated, default kube-system, kube-public
	// and kube-node-lease. An empty list excludes none. Each entry must be a
	// namespace name (a lowercase DNS label of at most 63 characters), not a
	// pattern: kube-apiserver refuses patterns in the namespaceSelector it
	// becomes; list each namespace, or use a rule's namespaces, which take
	// globs.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty" jsonschema:"pattern=^[a-z0-9]([-a-z0-9]*[a-z0-9])?$,maxLength=63"`
}

// Enforcement says whether a decision is applied or only reported.
type Enforcement string

const (
	// Enforce applies changes.
	Enforce Enforcement = "enforce"
	// Audit reports what would change and changes nothing.
	Audit Enforcement = "audit"
)

// Mode is how a profile changes a pod's DNS.
type Mode string

const (
	// ModeOptions keeps the pod's nameservers and searches and adds resolver options.
	ModeOptions Mode = "options"
	// ModeNodeLocal sets dnsPolicy None with the node-local cache first.
	ModeNodeLocal Mode = "nodelocal"
)

// Musl is what a profile does to a pod that runs a musl-based image.
type Musl string

const (
	// MuslKeepNdots applies the profile but never lowers ndots below
	// kubelet's 5 (KubeletNdots): options profiles leave ndots out,
	// nodelocal profiles set ndots:5.
	MuslKeepNdots Musl = "keepNdots"
	// MuslSkip leaves the pod unchanged (skip reason "musl").
	MuslSkip Musl = "skip"
	// MuslApply applies the profile as to any other pod.
	MuslApply Musl = "apply"
)

// KubeletNdots is the ndots kubelet writes for pods on the cluster DNS.
const KubeletNdots = 5

// ResolverNdots is the ndots glibc and musl use when resolv.conf sets none:
// what a nodelocal pod (dnsPolicy None, so no kubelet options) gets from a
// profile that leaves ndots out.
const ResolverNdots = 1

// Profile is a named set of DNS changes.
type Profile struct {
	// Mode is options (the default) or nodelocal.
	Mode Mode `json:"mode,omitempty" jsonschema:"enum=options,enum=nodelocal,default=options"`
	// Options are added to the pod's dnsConfig.options; the pod's own win.
	Options Options `json:"options,omitempty"`
	// Musl is what the profile does to a pod with a container whose image
	// looks musl-based (Alpine: an image named alpine, or a tag containing
	// "alpine"): keepNdots (the default), skip or apply. musl does not fall
	// back to the search list for a name with at least ndots dots, so with
	// ndots:2 a lookup of name.namespace.svc fails in such pods (measured on
	// a real node: EFFECT.md); keepNdots gives them every other option and
	// kubelet's ndots:5.
	Musl Musl `json:"musl,omitempty" jsonschema:"enum=keepNdots,enum=skip,enum=apply,default=keepNdots"`
}

// Options are resolver options; an unset one is not added.
type Options struct {
	// Ndots sets ndots:N, 0-15. Kubelet's default is 5.
	Ndots *int32 `json:"ndots,omitempty" jsonschema:"minimum=0,maximum=15"`
	// Timeout sets timeout:N seconds, 1-30. glibc's default is 5.
	Timeout *int32 `json:"timeout,omitempty" jsonschema:"minimum=1,maximum=30"`
	// Attempts sets attempts:N, 1-5. glibc's default is 2.
	Attempts *int32 `json:"attempts,omitempty" jsonschema:"minimum=1,maximum=5"`
	// SingleRequestReopen adds single-request-reopen (glibc; musl ignores it).
	SingleRequestReopen *bool `json:"singleRequestReopen,omitempty"`
}

// Rule chooses a profile for namespaces by name or by labels: exactly one
// of Namespaces and NamespaceSelector is set.
type Rule struct {
	// Namespaces are glob patterns (path.Match syntax) on the namespace name.
	Namespaces []string `json:"namespaces,omitempty"`
	// NamespaceSelector matches the namespace's labels.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Profile names a profile of the policy.
	Profile string `json:"profile" jsonschema:"minLength=1"`
	// Enforcement, when audit, makes matching namespaces a dry run. A rule
	// can only make things stricter.
	Enforcement Enforcement `json:"enforcement,omitempty" jsonschema:"enum=enforce,enum=audit"`
}
