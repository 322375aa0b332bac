package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// PolicyReportGVK is wgpolicyk8s.io/v1alpha2 PolicyReport, the format Policy
// Reporter and Kyverno users already read: one per opted-in namespace,
// named ReportName, one result per workload.
var PolicyReportGVK = schema.GroupVersionKind{Group: "wgpolicyk8s.io", Version: "v1alpha2", Kind: "PolicyReport"}

// Names in the reports.
const (
	ReportName   = "dnstune"
	ReportSource = "dnstune"
	ReportPolicy = "dnstune-dns"
	// RuleNodeLocalEgress is the rule of a warn result: the workload's
	// NetworkPolicies block DNS to the node-local cache it is pointed at.
	RuleNodeLocalEgress = "nodelocal-egress-blocked"
	// RuleNodeLocalCoverage is the rule of a warn result: some of the
	// workload's pods use the node-local cache on nodes where it does not
	// answer (the node agents' dnstune.io/NodeLocalDNS condition).
	RuleNodeLocalCoverage = "nodelocal-coverage"
)

var apiVersions = map[string]string{
	"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "ReplicaSet": "apps/v1",
	"Job": "batch/v1", "CronJob": "batch/v1", "Pod": "v1", "ReplicationController": "v1",
}

// MaxReportResults is how many results one PolicyReport holds. A result
// is well under 1 KiB, so a full report stays far below the 1.5 MiB that
// etcd accepts for an object by default; a namespace with more workloads
// gets several reports, ReportName, ReportName-2, ReportName-3, ...
const MaxReportResults = 1000

// partName is the name of a namespace's i-th report (0-based).
func partName(i int) string {
	if i == 0 {
		return ReportName
	}
	return ReportName + "-" + strconv.Itoa(i+1)
}

// PolicyReports builds the namespace's reports: per workload, fail when a
// pod is out of date, pass when its pods are up to date, skip when the
// policy leaves them alone, and a second result, warn, when its pods are
// pointed at the node-local cache that their NetworkPolicies block. Results
// go MaxReportResults to a report (a workload's results stay together);
// each report's summary counts its own results. A namespace without
// workloads gets one empty report.
func PolicyReports(namespace string, ws []Workload, now time.Time) []*unstructured.Unstructured {
	var parts [][]any
	var cur []any
	for _, w := range ws {
		rs := workloadResults(w, now)
		if len(cur)+len(rs) > MaxReportResults && len(cur) > 0 {
			parts, cur = append(parts, cur), nil
		}
		cur = append(cur, rs...)
	}
	parts = append(parts, cur)
	out := make([]*unstructured.Unstructured, len(parts))
	for i, results := range parts {
		out[i] = newReport(namespace, partName(i), results)
	}
	return out
}

func workloadResults(w Workload, now time.Time) []any {
	result, rule, msg := "pass", "up-to-date", fmt.Sprintf("%d pods up to date", w.UpToDate)
	switch {
	case w.OutOfDate > 0:
		result, rule = "fail", "out-of-date"
		msg = fmt.Sprintf("%d of %d pods out of date; a restart gives %s", w.OutOfDate, w.OutOfDate+w.UpToDate+w.Skipped, w.Change)
	case w.UpToDate == 0:
		result, rule = "skip", "skipped"
		msg = fmt.Sprintf("%d pods skipped by the policy (%v)", w.Skipped, w.SkipReasons)
	}
	props := map[string]any{"upToDate": strconv.Itoa(w.UpToDate), "outOfDate": strconv.Itoa(w.OutOfDate), "skipped": strconv.Itoa(w.Skipped)}
	if w.Profile != "" {
		props["profile"] = w.Profile
	}
	if w.Audit {
		props["audit"] = "true"
	}
	res := func(rule, result, msg string, props map[string]any) any {
		return map[string]any{
			"source": ReportSource, "policy": ReportPolicy, "rule": rule, "result": result, "message": msg,
			"scored": true, "category": "DNS",
			"timestamp":  map[string]any{"seconds": now.Unix(), "nanos": int64(0)},
			"resources":  []any{map[string]any{"apiVersion": apiVersions[w.Kind], "kind": w.Kind, "name": w.Name, "namespace": w.Namespace}},
			"properties": props,
		}
	}
	out := []any{res(rule, result, msg, props)}
	if n := len(w.OnNodesWithoutCache); n > 0 {
		out = append(out, res(RuleNodeLocalCoverage, "warn", fmt.Sprintf("%d pods use the node-local DNS cache on nodes where it does not answer: %s", n, strings.Join(w.OnNodesWithoutCache, ", ")), map[string]any{"profile": w.Profile}))
	}
	if w.NodeLocalEgress != "" {
		out = append(out, res(RuleNodeLocalEgress, "warn", strings.TrimPrefix(w.NodeLocalEgress, "dnstune: "), map[string]any{"profile": w.Profile}))
	}
	return out
}

func newReport(namespace, name string, results []any) *unstructured.Unstructured {
	summary := map[string]int64{"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
	for _, r := range results {
		summary[r.(map[string]any)["result"].(string)]++
	}
	if results == nil {
		results = []any{}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": name, "namespace": namespace, "labels": map[string]any{"app.kubernetes.io/managed-by": "dnstune"}},
		"summary":  map[string]any{"pass": summary["pass"], "fail": summary["fail"], "warn": summary["warn"], "error": summary["error"], "skip": summary["skip"]},
		"results":  results,
	}}
	u.SetGroupVersionKind(PolicyReportGVK)
	return u
}
