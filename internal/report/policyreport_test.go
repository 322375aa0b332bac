package report

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dnstune/dnstune/policy"
)

func TestPolicyReport(t *testing.T) {
	ws := []Workload{
		{Kind: "Deployment", Namespace: "shop", Name: "web", OutOfDate: 2, UpToDate: 1, Profile: "resilient", Change: "add options ndots:2"},
		{Kind: "StatefulSet", Namespace: "shop", Name: "db", UpToDate: 3},
		{Kind: "Pod", Namespace: "shop", Name: "dns", Skipped: 1, SkipReasons: []policy.Reason{policy.ReasonDNSServer}},
	}
	u := PolicyReport("shop", ws, time.Unix(100, 0))
	if u.GetAPIVersion() != "wgpolicyk8s.io/v1alpha2" || u.GetKind() != "PolicyReport" || u.GetName() != ReportName || u.GetNamespace() != "shop" {
		t.Fatalf("object %s %s %s/%s", u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
	}
	for key, want := range map[string]int64{"pass": 1, "fail": 1, "skip": 1, "warn": 0, "error": 0} {
		if got, _, _ := unstructured.NestedInt64(u.Object, "summary", key); got != want {
			t.Errorf("summary.%s = %d, want %d", key, got, want)
		}
	}
	results, _, _ := unstructured.NestedSlice(u.Object, "results")
	wantResults := []string{"fail", "pass", "skip"}
	for i, r := range results {
		m := r.(map[string]any)
		res := m["resources"].([]any)[0].(map[string]any)
		if m["result"] != wantResults[i] || res["name"] != ws[i].Name || res["apiVersion"] == "" || m["source"] != "dnstune" {
			t.Errorf("result %d = %v", i, m)
		}
	}
	if empty := PolicyReport("empty", nil, time.Now()); len(empty.Object["results"].([]any)) != 0 {
		t.Error("a namespace without workloads should get an empty results list")
	}
}
