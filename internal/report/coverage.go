package report

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/node"
	"github.com/dnstune/dnstune/policy"
)

// Coverage is where the node-local DNS cache answers, as the node agents
// report it in their Node condition (node.ConditionType).
type Coverage struct {
	// Address is the policy's nodeLocalDNS.
	Address string `json:"address"`
	// Nodes counts the Linux nodes (Windows nodes run neither the cache nor
	// the agent, and get no nodelocal pods).
	Nodes int `json:"nodes"`
	// Answering counts the nodes whose condition is True.
	Answering int `json:"answering"`
	// Missing are the other nodes, by name, with why.
	Missing []NodeGap `json:"missing,omitempty"`
	// WellKnown counts, per well-known node-local address, the nodes where
	// it answers.
	WellKnown map[string]int `json:"wellKnown,omitempty"`
}

// NodeGap is a node where the cache does not answer: Reason is the
// condition's (node.ReasonNoAnswer, node.ReasonCovered, node.ReasonProbing),
// or "NoAgent" when no agent reports on it.
type NodeGap struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// ReasonNoAgent is a gap without a dnstune.io/NodeLocalDNS condition (no
// node agent there, or one without --nodelocal-address).
const ReasonNoAgent = "NoAgent"

// NodeLocalCoverage reads the nodes' conditions about the cache at addr.
func NodeLocalCoverage(nodes []corev1.Node, addr netip.Addr) Coverage {
	c := Coverage{Address: addr.String()}
	for i := range nodes {
		n := &nodes[i]
		if n.Labels[corev1.LabelOSStable] == "windows" {
			continue
		}
		c.Nodes++
		var cond *corev1.NodeCondition
		for j := range n.Status.Conditions {
			if n.Status.Conditions[j].Type == node.ConditionType {
				cond = &n.Status.Conditions[j]
			}
		}
		switch {
		case cond == nil:
			c.Missing = append(c.Missing, NodeGap{n.Name, ReasonNoAgent})
		case cond.Status == corev1.ConditionTrue:
			c.Answering++
		default:
			c.Missing = append(c.Missing, NodeGap{n.Name, cond.Reason})
		}
		if cond != nil {
			for _, a := range node.AnsweringInCondition(*cond) {
				if c.WellKnown == nil {
					c.WellKnown = map[string]int{}
				}
				c.WellKnown[a]++
			}
		}
	}
	sort.Slice(c.Missing, func(i, j int) bool { return c.Missing[i].Node < c.Missing[j].Node })
	return c
}

// MissingNodes maps each node where the cache does not answer to why.
func (c Coverage) MissingNodes() map[string]string {
	m := make(map[string]string, len(c.Missing))
	for _, g := range c.Missing {
		m[g.Node] = g.Reason
	}
	return m
}

// usesNodeLocal says whether a profile of pol is nodelocal.
func usesNodeLocal(pol *policy.Policy) bool {
	for _, p := range pol.Profiles {
		if p.Mode == v1alpha1.ModeNodeLocal {
			return true
		}
	}
	return false
}

// ReadCoverage lists the nodes and returns the coverage of pol's
// nodeLocalDNS; nil when no profile is nodelocal.
func ReadCoverage(ctx context.Context, c client.Reader, pol *policy.Policy) (*Coverage, error) {
	if !usesNodeLocal(pol) {
		return nil, nil
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("cannot list nodes for the node-local coverage: %w", err)
	}
	cov := NodeLocalCoverage(nodes.Items, pol.NodeLocalDNS)
	return &cov, nil
}

// CacheMissing is ReadCoverage's MissingNodes (nil without nodelocal).
func CacheMissing(ctx context.Context, c client.Reader, pol *policy.Policy) (map[string]string, error) {
	cov, err := ReadCoverage(ctx, c, pol)
	if cov == nil {
		return nil, err
	}
	return cov.MissingNodes(), nil
}

// Summary is one line: "node-local DNS cache 169.254.20.10 answers on
// 41/42 nodes (missing: node-7 Covered)".
func (c Coverage) Summary() string {
	s := fmt.Sprintf("node-local DNS cache %s answers on %d/%d nodes", c.Address, c.Answering, c.Nodes)
	if len(c.Missing) == 0 {
		return s
	}
	var m []string
	for i, g := range c.Missing {
		if i == 10 {
			m = append(m, fmt.Sprintf("and %d more", len(c.Missing)-10))
			break
		}
		m = append(m, g.Node+" "+g.Reason)
	}
	return s + " (missing: " + strings.Join(m, ", ") + ")"
}

// Advice says, when the policy's address answers nowhere but a well-known
// one answers on every node, which address to set; "" otherwise.
func (c Coverage) Advice() string {
	if c.Answering > 0 || c.Nodes == 0 {
		return ""
	}
	names := map[string]string{}
	for _, w := range node.DefaultWellKnown {
		names[w.Address] = w.Platform
	}
	var addrs []string
	for a, n := range c.WellKnown {
		if n == c.Nodes {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	// Prefer a pod-traffic address (AKS LocalDNS's 169.254.10.11): the
	// order of DefaultWellKnown.
	slices.SortFunc(addrs, func(a, b string) int { return wellKnownRank(a) - wellKnownRank(b) })
	return fmt.Sprintf("%s answers at %s on %d/%d nodes; set nodeLocalDNS: %s", names[addrs[0]], addrs[0], c.Nodes, c.Nodes, addrs[0])
}

func wellKnownRank(a string) int {
	for i, w := range node.DefaultWellKnown {
		if w.Address == a {
			return i
		}
	}
	return len(node.DefaultWellKnown)
}
