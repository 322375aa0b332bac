package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the webhook's domain metrics (the policy store's are
// daemon.PolicyMetrics). Every label is bounded: profile
// names come from the policy, modes, results and reasons are fixed sets.
type Metrics struct {
	// Mutations counts admission decisions by profile, mode, result
	// (mutated, audited, skipped, error) and skip reason.
	Mutations *prometheus.CounterVec
	// AuditFindings counts pods that audit mode would have changed.
	AuditFindings *prometheus.CounterVec
	// NodeLocalEgressBlocked counts pods pointed (or, in audit, that would
	// be pointed) at the node-local cache whose NetworkPolicies block DNS
	// to it, by profile and result (mutated, audited).
	NodeLocalEgressBlocked *prometheus.CounterVec
}

// newMetrics creates the metrics and registers them with reg (nil: not registered).
func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Mutations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnstune_mutations_total",
			Help: "Pod admission decisions by profile, mode, result (mutated, audited, skipped, error) and reason.",
		}, []string{"profile", "mode", "result", "reason"}),
		AuditFindings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnstune_audit_findings_total",
			Help: "Pods that dnstune would have changed in audit mode, by profile and mode.",
		}, []string{"profile", "mode"}),
		NodeLocalEgressBlocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnstune_nodelocal_egress_blocked_total",
			Help: "Pods pointed (mutated) or that would be pointed (audited) at the node-local DNS cache while their NetworkPolicies allow no DNS to it, by profile and result.",
		}, []string{"profile", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.Mutations, m.AuditFindings, m.NodeLocalEgressBlocked)
	}
	return m
}
