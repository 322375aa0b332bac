// Package daemon is what every long-running dnstune process stands on,
// whichever backend it runs (the webhook, or the admission-policy
// backend): the policy store with its metrics, cluster-DNS discovery, the
// REST config and the defaults they share. It imports no backend; the
// backends import it and not each other.
package daemon

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Defaults every dnstune process shares.
const (
	DefaultMetricsBindAddress      = ":8080"
	DefaultHealthProbeBindAddress  = ":8081"
	DefaultLeaderElectionNamespace = "dnstune-system"
	// LeaderElectionID is the Lease the replicas elect their one writer
	// with (PolicyReports, or the compiled admission policies).
	LeaderElectionID = "dnstune-webhook"
	// DefaultClusterDNSRefresh is how often the cluster DNS Service is read again.
	DefaultClusterDNSRefresh = 30 * time.Second
	// DefaultPolicyPollInterval is how often the policy file is re-read even
	// without a file-system event (ConfigMap volumes swap a symlink, which
	// some file systems do not report).
	DefaultPolicyPollInterval = 10 * time.Second
)

// DefaultClusterDNSService is the Service whose ClusterIP is the cluster DNS.
var DefaultClusterDNSService = client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}

// PolicyMetrics are the policy store's metrics.
type PolicyMetrics struct {
	// Reloads counts policy (re)loads by result (success, failure).
	Reloads *prometheus.CounterVec
	// Generation is the generation of the policy in use (1 = loaded at start).
	Generation prometheus.Gauge
	// LastReloadOK is 1 when the policy file on disk, as last read, loads
	// (whether or not its content changed), 0 while it does not (the
	// previous policy stays in use).
	LastReloadOK prometheus.Gauge
	// WatchErrors counts errors from the policy file watch (fsnotify).
	WatchErrors prometheus.Counter
}

// NewPolicyMetrics creates the metrics and registers them with reg (nil: not registered).
func NewPolicyMetrics(reg prometheus.Registerer) *PolicyMetrics {
	m := &PolicyMetrics{
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnstune_policy_reloads_total",
			Help: "Policy loads by result (success, failure). A failure keeps the last good policy.",
		}, []string{"result"}),
		Generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnstune_policy_generation",
			Help: "Generation of the policy in use; grows by one with every successful reload.",
		}),
		LastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnstune_policy_last_reload_successful",
			Help: "1 if the policy file on disk, as last read, is valid; 0 while it is invalid and an older policy is in use.",
		}),
		WatchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dnstune_policy_watch_errors_total",
			Help: "Errors reported by the policy file watch; reloads go on (events and polling).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Reloads, m.Generation, m.LastReloadOK, m.WatchErrors)
	}
	return m
}
