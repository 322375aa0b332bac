package policy

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// API limits on a Pod's dnsConfig, as enforced by kube-apiserver's validation.
const (
	MaxNameservers     = 3
	MaxSearches        = 32
	MaxSearchListChars = 2048
)

// UsesClusterDNS reports whether kubelet gives a pod the cluster DNS (the
// cluster nameserver and search list, which dnsConfig is merged into), as
// pkg/kubelet/network/dns does: dnsPolicy ClusterFirst (or unset) without
// hostNetwork, or ClusterFirstWithHostNet. Default gives the node's
// resolv.conf, None only the pod's own dnsConfig, and ClusterFirst with
// hostNetwork the node's resolv.conf too. The webhook configuration's
// matchConditions state the same rule in CEL (tested to agree).
func UsesClusterDNS(dnsPolicy corev1.DNSPolicy, hostNetwork bool) bool {
	switch dnsPolicy {
	case corev1.DNSClusterFirstWithHostNet:
		return true
	case corev1.DNSDefault, corev1.DNSNone:
		return false
	default: // ClusterFirst, or unset (the apiserver defaults it to ClusterFirst)
		return !hostNetwork
	}
}

// ValidatePodDNS checks a pod's dnsPolicy and dnsConfig with the rules
// kube-apiserver applies on Pod create (validatePodDNSConfig in
// k8s.io/kubernetes, StrictIPCIDRValidation on as in 1.37): dnsPolicy None
// needs a nameserver; at most 3 nameservers, each a strict IP; at most 32
// searches of at most 2048 characters together, each a DNS-1123 subdomain
// (underscores allowed, one trailing dot ignored); every option named.
func ValidatePodDNS(dnsPolicy corev1.DNSPolicy, cfg *corev1.PodDNSConfig) field.ErrorList {
	var errs field.ErrorList
	fld := field.NewPath("spec", "dnsConfig")
	if dnsPolicy == corev1.DNSNone {
		if cfg == nil {
			return append(errs, field.Required(fld, "must provide `dnsConfig` when `dnsPolicy` is None"))
		}
		if len(cfg.Nameservers) == 0 {
			return append(errs, field.Required(fld.Child("nameservers"), "must provide at least one DNS nameserver when `dnsPolicy` is None"))
		}
	}
	if cfg == nil {
		return nil
	}
	if len(cfg.Nameservers) > MaxNameservers {
		errs = append(errs, field.Invalid(fld.Child("nameservers"), cfg.Nameservers, fmt.Sprintf("must not have more than %d nameservers", MaxNameservers)))
	}
	for i, ns := range cfg.Nameservers {
		errs = append(errs, validation.IsValidIPForLegacyField(fld.Child("nameservers").Index(i), ns, true, nil)...)
	}
	if len(cfg.Searches) > MaxSearches {
		errs = append(errs, field.Invalid(fld.Child("searches"), cfg.Searches, fmt.Sprintf("must not have more than %d search paths", MaxSearches)))
	}
	if len(strings.Join(cfg.Searches, " ")) > MaxSearchListChars {
		errs = append(errs, field.Invalid(fld.Child("searches"), cfg.Searches, fmt.Sprintf("must not have more than %d characters (including spaces) in the search list", MaxSearchListChars)))
	}
	for i, s := range cfg.Searches {
		if s == "." {
			continue
		}
		for _, msg := range validation.IsDNS1123SubdomainWithUnderscore(strings.TrimSuffix(s, ".")) {
			errs = append(errs, field.Invalid(fld.Child("searches").Index(i), s, msg))
		}
	}
	for i, o := range cfg.Options {
		if o.Name == "" {
			errs = append(errs, field.Required(fld.Child("options").Index(i), "must not be empty"))
		}
	}
	return errs
}
