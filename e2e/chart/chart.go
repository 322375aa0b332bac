// Package chart reads the monitoring parts of the Helm chart
// (manifests/dnstune): its alert rules and its Grafana dashboard's queries, and
// the metric names they select. The chart's tests and the real-node e2e
// (which checks every name against what the running binaries expose) use it.
package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/e2e/framework"
)

// Dir is the chart's directory.
func Dir() string {
	return filepath.Join(framework.RepoRoot(), "manifests", "dnstune")
}

// Rule is one alerting rule of files/alerts.yaml.
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// AlertRules returns every rule of files/alerts.yaml.
func AlertRules() ([]Rule, error) {
	data, err := os.ReadFile(filepath.Join(Dir(), "files", "alerts.yaml")) // #nosec G304 -- the chart's own file
	if err != nil {
		return nil, err
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("files/alerts.yaml: %w", err)
	}
	var out []Rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// DashboardQueries returns every query of files/dashboard.json; a panel
// without a query is an error.
func DashboardQueries() ([]string, error) {
	data, err := os.ReadFile(filepath.Join(Dir(), "files", "dashboard.json")) // #nosec G304 -- the chart's own file
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("files/dashboard.json: %w", err)
	}
	var out []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			return nil, fmt.Errorf("files/dashboard.json: panel %q has no query", p.Title)
		}
		for _, t := range p.Targets {
			out = append(out, t.Expr)
		}
	}
	return out, nil
}

// QueryMetricNames parses every alert and dashboard query and returns the
// metric names they select, sorted, each once.
func QueryMetricNames() ([]string, error) {
	rules, err := AlertRules()
	if err != nil {
		return nil, err
	}
	exprs, err := DashboardQueries()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		exprs = append(exprs, r.Expr)
	}
	var all []string
	for _, e := range exprs {
		names, err := MetricNames(e)
		if err != nil {
			return nil, fmt.Errorf("PromQL does not parse: %w", err)
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%q selects no metric", e)
		}
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

// FromExporters are names the chart's queries use that dnstune's binaries
// do not expose: Prometheus' own up, and kube-state-metrics' namespace
// labels (DnstuneWebhookAbsent).
var FromExporters = []string{"up", "kube_namespace_labels"}
