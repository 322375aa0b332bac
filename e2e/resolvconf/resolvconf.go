// Package resolvconf renders the /etc/resolv.conf kubelet writes into a
// pod, from the pod's dnsPolicy and dnsConfig, the cluster DNS address, the
// cluster domain and the node's own resolv.conf. It follows kubelet's
// pkg/kubelet/network/dns (GetPodDNS): the same choice of base
// configuration per dnsPolicy, the same merge of dnsConfig, the same limits.
// It is pure: no files are read.
package resolvconf

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/dnstune/dnstune/policy"
)

// Limits kubelet applies when it writes the file: the pod API's own.
const (
	MaxNameservers  = policy.MaxNameservers
	MaxSearches     = policy.MaxSearches
	MaxSearchLength = policy.MaxSearchListChars
)

// Config is the content of a resolv.conf.
type Config struct {
	Nameservers []string
	Searches    []string
	// Options are resolv.conf words such as "ndots:5" or "single-request-reopen".
	Options []string
}

// Cluster describes what kubelet knows about the cluster and the node.
type Cluster struct {
	// DNS is kubelet's --cluster-dns (the kube-dns Service IP).
	DNS []string
	// Domain is kubelet's --cluster-domain, e.g. cluster.local.
	Domain string
	// Host is the node's resolv.conf (kubelet's --resolv-conf).
	Host Config
}

// ForPod returns the resolv.conf kubelet would write for pod in namespace.
func ForPod(pod *corev1.Pod, namespace string, c Cluster) Config {
	var cfg Config
	switch podDNSType(pod, c) {
	case dnsCluster:
		cfg.Nameservers = slices.Clone(c.DNS)
		cfg.Searches = append([]string{namespace + ".svc." + c.Domain, "svc." + c.Domain, c.Domain}, c.Host.Searches...)
		cfg.Options = []string{"ndots:5"}
	case dnsHost:
		cfg = Config{Nameservers: slices.Clone(c.Host.Nameservers), Searches: slices.Clone(c.Host.Searches), Options: slices.Clone(c.Host.Options)}
	case dnsNone:
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		cfg.Nameservers = omitDuplicates(append(cfg.Nameservers, dc.Nameservers...))
		cfg.Searches = omitDuplicates(append(cfg.Searches, dc.Searches...))
		cfg.Options = mergeOptions(cfg.Options, dc.Options)
	}
	if len(cfg.Nameservers) > MaxNameservers {
		cfg.Nameservers = cfg.Nameservers[:MaxNameservers]
	}
	cfg.Searches = fitSearches(cfg.Searches)
	return cfg
}

type dnsType int

const (
	dnsCluster dnsType = iota
	dnsHost
	dnsNone
)

func podDNSType(pod *corev1.Pod, c Cluster) dnsType {
	switch {
	case pod.Spec.DNSPolicy == corev1.DNSNone:
		return dnsNone
	case policy.UsesClusterDNS(pod.Spec.DNSPolicy, pod.Spec.HostNetwork):
		return clusterOrHost(c)
	}
	return dnsHost
}

// clusterOrHost: kubelet falls back to the node's DNS when it has no cluster DNS.
func clusterOrHost(c Cluster) dnsType {
	if len(c.DNS) == 0 {
		return dnsHost
	}
	return dnsCluster
}

func omitDuplicates(in []string) []string {
	out := in[:0:0]
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// mergeOptions merges pod options over base ones by name; the pod's value
// wins. Kubelet goes through a map (random order); this keeps base order,
// then new names in the pod's order, which resolvers treat the same.
func mergeOptions(base []string, pod []corev1.PodDNSConfigOption) []string {
	names := make([]string, 0, len(base)+len(pod))
	values := map[string]string{}
	add := func(name, value string) {
		if _, ok := values[name]; !ok {
			names = append(names, name)
		}
		values[name] = value
	}
	for _, o := range base {
		name, value, _ := strings.Cut(o, ":")
		add(name, value)
	}
	for _, o := range pod {
		v := ""
		if o.Value != nil {
			v = *o.Value
		}
		add(o.Name, v)
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n
		if values[n] != "" {
			out[i] += ":" + values[n]
		}
	}
	return out
}

func fitSearches(s []string) []string {
	if len(s) > MaxSearches {
		s = s[:MaxSearches]
	}
	for len(s) > 0 && len(strings.Join(s, " ")) > MaxSearchLength {
		s = s[:len(s)-1]
	}
	return s
}

// String renders the file as kubelet writes it.
func (c Config) String() string {
	var b strings.Builder
	if len(c.Searches) > 0 {
		b.WriteString("search " + strings.Join(c.Searches, " ") + "\n")
	}
	for _, ns := range c.Nameservers {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(c.Options) > 0 {
		b.WriteString("options " + strings.Join(c.Options, " ") + "\n")
	}
	return b.String()
}

// Parse reads a resolv.conf (the node's), ignoring comments and unknown lines.
func Parse(text string) Config {
	var c Config
	for _, line := range strings.Split(text, "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			c.Nameservers = append(c.Nameservers, f[1])
		case "search", "domain":
			c.Searches = f[1:]
		case "options":
			c.Options = append(c.Options, f[1:]...)
		}
	}
	return c
}
