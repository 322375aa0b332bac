package webhook

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dnstune/dnstune/policy"
)

var descNamespaces = prometheus.NewDesc("dnstune_namespaces",
	"Opted-in namespaces by the profile, mode and enforcement their pods get under the policy in use (from the webhook's namespace cache, at scrape time).",
	[]string{"profile", "mode", "enforcement"}, nil)

// namespaceGauge counts opted-in namespaces per profile at scrape time, so
// that alerts about one mode (DnstuneNodeLocalDown) fire only while some
// namespace uses it.
type namespaceGauge struct {
	namespaces *namespaceLabels
	policy     func() *policy.Policy
}

func (g namespaceGauge) Describe(ch chan<- *prometheus.Desc) { ch <- descNamespaces }

func (g namespaceGauge) Collect(ch chan<- prometheus.Metric) {
	type key struct{ profile, mode, enforcement string }
	counts := map[key]int{}
	pol := g.policy()
	for name, labels := range g.namespaces.all() {
		if prof, enf := policy.NamespaceProfile(policy.Namespace{Name: name, Labels: labels}, pol); prof != nil {
			counts[key{prof.Name, string(prof.Mode), string(enf)}]++
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descNamespaces, prometheus.GaugeValue, float64(n), k.profile, k.mode, k.enforcement)
	}
}
