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
)

var apiVersions = map[string]string{
	"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "ReplicaSet": "apps/v1",
	"Job": "batch/v1", "CronJob": "batch/v1", "Pod": "v1", "ReplicationController": "v1",
}

// PolicyReport builds the namespace's report: per workload, fail when a
// pod is out of date, pass when its pods are up to date, skip when the
// policy leaves them alone, and a second result, warn, when its pods are
// pointed at the node-local cache that their NetworkPolicies block; the
// summary counts results.
func PolicyReport(namespace string, ws []Workload, now time.Time) *unstructured.Unstructured {
	var results []any
	summary := map[string]int64{"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
	for _, w := range ws {
		result, rule, msg := "pass", "up-to-date", fmt.Sprintf("%d pods up to date", w.UpToDate)
		switch {
		case w.OutOfDate > 0:
			result, rule = "fail", "out-of-date"
			msg = fmt.Sprintf("%d of %d pods out of date; a restart gives %s", w.OutOfDate, w.OutOfDate+w.UpToDate+w.Skipped, w.Change)
		case w.UpToDate == 0:
			result, rule = "skip", "skipped"
			msg = fmt.Sprintf("%d pods skipped by the policy (%v)", w.Skipped, w.SkipReasons)
		}
		summary[result]++
		props := map[string]any{"upToDate": strconv.Itoa(w.UpToDate), "outOfDate": strconv.Itoa(w.OutOfDate), "skipped": strconv.Itoa(w.Skipped)}
		if w.Profile != "" {
			props["profile"] = w.Profile
		}
		if w.Audit {
			props["audit"] = "true"
		}
		res := func(rule, result, msg string, props map[string]any) map[string]any {
			return map[string]any{
				"source": ReportSource, "policy": ReportPolicy, "rule": rule, "result": result, "message": msg,
				"scored": true, "category": "DNS",
				"timestamp":  map[string]any{"seconds": now.Unix(), "nanos": int64(0)},
				"resources":  []any{map[string]any{"apiVersion": apiVersions[w.Kind], "kind": w.Kind, "name": w.Name, "namespace": w.Namespace}},
				"properties": props,
			}
		}
		results = append(results, res(rule, result, msg, props))
		if w.NodeLocalEgress != "" {
			summary["warn"]++
			results = append(results, res(RuleNodeLocalEgress, "warn", strings.TrimPrefix(w.NodeLocalEgress, "dnstune: "), map[string]any{"profile": w.Profile}))
		}
	}
	if results == nil {
		results = []any{}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": ReportName, "namespace": namespace, "labels": map[string]any{"app.kubernetes.io/managed-by": "dnstune"}},
		"summary":  map[string]any{"pass": summary["pass"], "fail": summary["fail"], "warn": summary["warn"], "error": summary["error"], "skip": summary["skip"]},
		"results":  results,
	}}
	u.SetGroupVersionKind(PolicyReportGVK)
	return u
}
