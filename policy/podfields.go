package policy

import (
	"fmt"
	"net/netip"
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
	// MaxNamespaceLen is the longest namespace name (a DNS label).
	MaxNamespaceLen = validation.DNS1123LabelMaxLength
	// MaxClusterDomainLen keeps "<namespace>.svc.<clusterDomain>", the first
	// search of every pod, a DNS-1123 subdomain (253 characters) for the
	// longest namespace name: 253 - 63 - len(".svc.") = 185.
	MaxClusterDomainLen = validation.DNS1123SubdomainMaxLength - MaxNamespaceLen - len(".svc.")
)

// CheckNameserver says why a can not be a pod's nameserver, or returns nil.
// It refuses what kube-apiserver refuses in spec.dnsConfig.nameservers
// (IPv4-mapped IPv6 addresses; zones, which no IP field takes) and what
// would break the pod's resolver: the unspecified address (glibc reads
// 0.0.0.0 and :: as "this host", so the pod asks itself) and multicast.
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
	return nil
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
