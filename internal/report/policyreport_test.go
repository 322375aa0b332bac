package report

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/dnstune/dnstune/node"
	"github.com/dnstune/dnstune/policy"
)

func TestPolicyReport(t *testing.T) {
	ws := []Workload{
		{Kind: "Deployment", Namespace: "shop", Name: "web", OutOfDate: 2, UpToDate: 1, Profile: "resilient", Change: "add options ndots:2"},
		{Kind: "StatefulSet", Namespace: "shop", Name: "db", UpToDate: 3},
		{Kind: "Pod", Namespace: "shop", Name: "dns", Skipped: 1, SkipReasons: []policy.Reason{policy.ReasonDNSServer}},
	}
	u := PolicyReports("shop", ws, time.Unix(100, 0))[0]
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
	if empty := PolicyReports("empty", nil, time.Now()); len(empty) != 1 || len(empty[0].Object["results"].([]any)) != 0 {
		t.Error("a namespace without workloads should get an empty results list")
	}
}

func TestPolicyReportNodeLocalEgress(t *testing.T) {
	ws := []Workload{{Kind: "Deployment", Namespace: "shop", Name: "web", UpToDate: 2, Profile: "nodelocal",
		NodeLocalEgress: "dnstune: NetworkPolicy shop/deny selects this pod for egress and allows no UDP or TCP port 53 to the node-local DNS cache 169.254.20.10"}}
	u := PolicyReports("shop", ws, time.Unix(100, 0))[0]
	results, _, _ := unstructured.NestedSlice(u.Object, "results")
	if len(results) != 2 {
		t.Fatalf("%d results, want the workload's and its egress warning", len(results))
	}
	m := results[1].(map[string]any)
	if m["result"] != "warn" || m["rule"] != RuleNodeLocalEgress || m["message"] != "NetworkPolicy shop/deny selects this pod for egress and allows no UDP or TCP port 53 to the node-local DNS cache 169.254.20.10" {
		t.Errorf("egress result %v", m)
	}
	if got, _, _ := unstructured.NestedInt64(u.Object, "summary", "warn"); got != 1 {
		t.Errorf("summary.warn = %d", got)
	}
}

// Scan finds the NetworkPolicies that block a nodelocal workload's DNS to
// the cache, and only for nodelocal workloads.
func TestScanNodeLocalEgress(t *testing.T) {
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: "edge"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}}
	denyShop := deny.DeepCopy()
	denyShop.Namespace = "shop"
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge", Labels: map[string]string{policy.InjectLabel: "enabled", policy.ProfileLabel: "nodelocal"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{policy.InjectLabel: "enabled"}}},
		deny, denyShop,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "edge"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "shop"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}},
	}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(objs...).Build()
	ws, err := Scan(context.Background(), Options{Client: c, Policy: policy.Default(), ClusterDNS: netip.MustParseAddr("10.96.0.10")})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, w := range ws {
		got[w.Namespace] = w.NodeLocalEgress
	}
	if !strings.HasPrefix(got["edge"], "dnstune: NetworkPolicy edge/deny selects this pod for egress") || got["shop"] != "" {
		t.Errorf("egress findings %q", got)
	}
}

// A namespace with thousands of workloads gets several reports, each far
// under the 1.5 MiB etcd accepts, with a workload's results together.
func TestPolicyReportsSplit(t *testing.T) {
	var ws []Workload
	for i := range 2500 {
		w := Workload{Kind: "Deployment", Namespace: "big", Name: fmt.Sprintf("app-%04d-%s", i, strings.Repeat("x", 200)), OutOfDate: 3, Profile: "nodelocal",
			Change: "profile nodelocal (nodelocal): dnsPolicy ClusterFirst -> None; nameservers 169.254.20.10,10.96.0.10; searches big.svc.cluster.local,svc.cluster.local,cluster.local; add options ndots:2 timeout:1 attempts:2"}
		if i%3 == 0 {
			w.NodeLocalEgress = "dnstune: NetworkPolicy big/deny selects this pod for egress and allows no UDP or TCP port 53 to the node-local DNS cache 169.254.20.10"
		}
		ws = append(ws, w)
	}
	parts := PolicyReports("big", ws, time.Unix(100, 0))
	if len(parts) != 4 {
		t.Fatalf("%d reports for 2500 workloads (3334 results), want 4", len(parts))
	}
	seen := map[string]bool{}
	total := 0
	for i, u := range parts {
		if u.GetName() != partName(i) || (i > 0 && u.GetName() != fmt.Sprintf("dnstune-%d", i+1)) {
			t.Errorf("report %d is named %s", i, u.GetName())
		}
		b, err := json.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1<<20 {
			t.Errorf("report %s is %d bytes; etcd's default limit is 1.5 MiB", u.GetName(), len(b))
		}
		results, _, _ := unstructured.NestedSlice(u.Object, "results")
		if len(results) > MaxReportResults {
			t.Errorf("report %s holds %d results", u.GetName(), len(results))
		}
		var n int64
		for _, k := range []string{"pass", "fail", "warn", "skip", "error"} {
			v, _, _ := unstructured.NestedInt64(u.Object, "summary", k)
			n += v
		}
		if n != int64(len(results)) {
			t.Errorf("report %s: summary counts %d of %d results", u.GetName(), n, len(results))
		}
		for _, r := range results {
			name := r.(map[string]any)["resources"].([]any)[0].(map[string]any)["name"].(string)
			if r.(map[string]any)["rule"] != RuleNodeLocalEgress {
				if seen[name] {
					t.Errorf("workload %s reported twice", name)
				}
				seen[name] = true
			}
		}
		total += len(results)
	}
	if total != 2500+834 || len(seen) != 2500 {
		t.Errorf("%d results for %d workloads", total, len(seen))
	}
}

// Scan, given the nodes where the cache does not answer (from the Node
// conditions), names the nodelocal pods running there, and the
// PolicyReport warns about them; pods elsewhere, and pods not pointed at
// the cache, are not named.
func TestScanAndReportNodeLocalCoverage(t *testing.T) {
	down := node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictDown, Last: node.ProbeResult{Detail: "refused"}}
	up := node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictUp, Last: node.ProbeResult{Up: true, Detail: "NOERROR"}}
	nodelocalDNS := &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10", "10.96.0.10"}}
	pod := func(name, nodeName string, dns *corev1.PodDNSConfig) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "edge"},
			Spec: corev1.PodSpec{NodeName: nodeName, DNSPolicy: corev1.DNSClusterFirst, DNSConfig: dns, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	}
	n1, n2 := nodeWith("n1", &down, nil), nodeWith("n2", &up, nil)
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge", Labels: map[string]string{policy.InjectLabel: "enabled", policy.ProfileLabel: "nodelocal"}}},
		&n1, &n2,
		pod("on-n1", "n1", nodelocalDNS), pod("on-n2", "n2", nodelocalDNS), pod("plain-on-n1", "n1", nil),
	}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(objs...).Build()
	pol := policy.Default()
	cov, err := ReadCoverage(context.Background(), c, pol)
	if err != nil || cov == nil {
		t.Fatalf("coverage %v, %v", cov, err)
	}
	if cov.Summary() != "node-local DNS cache 169.254.20.10 answers on 1/2 nodes (missing: n1 NoAnswer)" {
		t.Errorf("summary %q", cov.Summary())
	}
	ws, err := Scan(context.Background(), Options{Client: c, Policy: pol, ClusterDNS: netip.MustParseAddr("10.96.0.10"), CacheMissing: cov.MissingNodes()})
	if err != nil {
		t.Fatal(err)
	}
	var gaps []string
	for _, w := range ws {
		gaps = append(gaps, w.OnNodesWithoutCache...)
	}
	if !slices.Equal(gaps, []string{"on-n1 on n1 (NoAnswer)"}) {
		t.Errorf("pods on nodes without the cache %q, want on-n1 alone", gaps)
	}
	var warned []string
	for _, u := range PolicyReports("edge", ws, time.Unix(100, 0)) {
		results, _, _ := unstructured.NestedSlice(u.Object, "results")
		for _, r := range results {
			if m := r.(map[string]any); m["rule"] == RuleNodeLocalCoverage && m["result"] == "warn" {
				warned = append(warned, m["message"].(string))
			}
		}
	}
	if !slices.Equal(warned, []string{"1 pods use the node-local DNS cache on nodes where it does not answer: on-n1 on n1 (NoAnswer)"}) {
		t.Errorf("coverage warnings %q", warned)
	}
}
