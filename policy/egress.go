package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// dnsPort is the port a pod's resolver sends to.
const dnsPort = 53

// Egress is what the NetworkPolicies of a pod's namespace let it send to
// one address on DNSPort, from CacheEgress.
type Egress struct {
	// Isolated is true when at least one policy selects the pod for egress
	// (Policies names them, sorted): only what they allow leaves the pod.
	Isolated bool
	Policies []string
	// Blocked are the protocols (UDP, TCP, in that order) that no selecting
	// policy allows to the address on port 53. Empty when not isolated.
	Blocked []corev1.Protocol
}

// Allowed reports whether the pod may send both UDP and TCP DNS to the
// address (TCP carries the answers too large for UDP).
func (e Egress) Allowed() bool { return len(e.Blocked) == 0 }

// CacheEgress evaluates, as Kubernetes defines NetworkPolicy, whether a pod
// may send DNS (UDP and TCP port 53) to addr, the node-local cache, under
// policies, the NetworkPolicies of its namespace (the caller lists them:
// at admission a pod may not carry its namespace yet). A policy applies when its
// podSelector matches the pod and its policyTypes include Egress (or, with
// no policyTypes, when it has egress rules); the pod may send what any
// applying policy's rules allow (a union). A rule allows addr when it has
// no "to" or an ipBlock whose cidr contains addr and whose except does not,
// and port 53 of the protocol when it has no ports, or a port with that
// protocol (TCP when unset) that is unset, 53, or a range port..endPort
// holding 53. Pod and namespace selectors never match the cache's address
// (it is no pod's IP), and neither does a named port: network plugins
// resolve names against the destination pod's container ports.
// CacheEgress is pure: no policy is modified.
func CacheEgress(pod *corev1.Pod, policies []networkingv1.NetworkPolicy, addr netip.Addr) Egress {
	var e Egress
	allowed := map[corev1.Protocol]bool{}
	for i := range policies {
		np := &policies[i]
		if !appliesToEgress(np) || !selects(np.Spec.PodSelector, pod.Labels) {
			continue
		}
		e.Isolated = true
		e.Policies = append(e.Policies, np.Name)
		for _, r := range np.Spec.Egress {
			if !ruleReaches(r.To, addr) {
				continue
			}
			for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
				if rulePorts(r.Ports, proto) {
					allowed[proto] = true
				}
			}
		}
	}
	if !e.Isolated {
		return e
	}
	slices.Sort(e.Policies)
	for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
		if !allowed[proto] {
			e.Blocked = append(e.Blocked, proto)
		}
	}
	return e
}

// EgressWarning is the admission warning (and report message) for a pod
// that would be pointed at the cache at addr but whose NetworkPolicies
// block it, or "" when they allow it.
func EgressWarning(e Egress, namespace string, addr netip.Addr) string {
	if e.Allowed() {
		return ""
	}
	names := make([]string, len(e.Policies))
	for i, n := range e.Policies {
		names[i] = namespace + "/" + n
	}
	protos := make([]string, len(e.Blocked))
	for i, p := range e.Blocked {
		protos[i] = string(p)
	}
	return fmt.Sprintf("dnstune: NetworkPolicy %s selects this pod for egress and allows no %s port %d to the node-local DNS cache %s: each lookup waits out the timeout there before it reaches kube-dns; add an egress rule to %s with ports %d/UDP and %d/TCP",
		strings.Join(names, ", "), strings.Join(protos, " or "), dnsPort, addr, hostPrefix(addr), dnsPort, dnsPort)
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func appliesToEgress(np *networkingv1.NetworkPolicy) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return len(np.Spec.Egress) > 0
	}
	return slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
}

func selects(sel metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return false // kube-apiserver refuses such a selector; nothing selected
	}
	return s.Matches(labels.Set(podLabels))
}

// ruleReaches reports whether a rule's "to" includes addr.
func ruleReaches(to []networkingv1.NetworkPolicyPeer, addr netip.Addr) bool {
	if len(to) == 0 {
		return true
	}
	for _, p := range to {
		if p.IPBlock == nil {
			continue
		}
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil || !cidr.Contains(addr) {
			continue
		}
		excluded := slices.ContainsFunc(p.IPBlock.Except, func(x string) bool {
			ex, err := netip.ParsePrefix(x)
			return err == nil && ex.Contains(addr)
		})
		if !excluded {
			return true
		}
	}
	return false
}

// rulePorts reports whether a rule's ports include port 53 of proto.
func rulePorts(ports []networkingv1.NetworkPolicyPort, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == 0 && p.EndPort != nil:
			if p.Port.IntVal <= dnsPort && dnsPort <= *p.EndPort {
				return true
			}
		case p.Port.Type == 0 && p.Port.IntVal == dnsPort:
			return true
		}
	}
	return false
}
