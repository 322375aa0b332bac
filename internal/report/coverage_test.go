package report

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/dnstune/dnstune/node"
)

// nodeWith is a node whose agent wrote s (nil: no agent).
func nodeWith(name string, s *node.CacheStatus, labels map[string]string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if s != nil {
		n.Status.Conditions = append(n.Status.Conditions, s.Condition(time.Now(), time.Now()))
	}
	return n
}

func TestNodeLocalCoverage(t *testing.T) {
	addr := netip.MustParseAddr("169.254.20.10")
	up := &node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictUp, Last: node.ProbeResult{Up: true, Detail: "NOERROR"}}
	down := &node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictDown, Last: node.ProbeResult{Detail: "refused"}}
	covered := &node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictDown, Covering: true, Upstream: "10.0.0.11:53"}
	aks := &node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictDown, Answering: []string{"169.254.10.11 (AKS LocalDNS (pod traffic))", "169.254.10.10 (AKS LocalDNS (node traffic))"}}
	for _, tc := range []struct {
		name    string
		nodes   []corev1.Node
		summary string
		advice  string
		missing map[string]string
	}{
		{"everywhere", []corev1.Node{nodeWith("a", up, nil), nodeWith("b", up, nil)},
			"node-local DNS cache 169.254.20.10 answers on 2/2 nodes", "", map[string]string{}},
		{"one down, one covered, one without agent, Windows left out",
			[]corev1.Node{nodeWith("a", up, nil), nodeWith("b", down, nil), nodeWith("c", covered, nil), nodeWith("d", nil, nil),
				nodeWith("win", nil, map[string]string{corev1.LabelOSStable: "windows"})},
			"node-local DNS cache 169.254.20.10 answers on 1/4 nodes (missing: b NoAnswer, c Covered, d NoAgent)", "",
			map[string]string{"b": node.ReasonNoAnswer, "c": node.ReasonCovered, "d": ReasonNoAgent}},
		{"AKS LocalDNS everywhere, the policy's address nowhere", []corev1.Node{nodeWith("a", aks, nil), nodeWith("b", aks, nil)},
			"answers on 0/2 nodes", "AKS LocalDNS (pod traffic) answers at 169.254.10.11 on 2/2 nodes; set nodeLocalDNS: 169.254.10.11",
			map[string]string{"a": node.ReasonNoAnswer, "b": node.ReasonNoAnswer}},
		{"a well-known address on some nodes only: no advice", []corev1.Node{nodeWith("a", aks, nil), nodeWith("b", down, nil)},
			"answers on 0/2 nodes", "", map[string]string{"a": node.ReasonNoAnswer, "b": node.ReasonNoAnswer}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NodeLocalCoverage(tc.nodes, addr)
			if !strings.Contains(c.Summary(), tc.summary) {
				t.Errorf("summary %q, want it to contain %q", c.Summary(), tc.summary)
			}
			if c.Advice() != tc.advice {
				t.Errorf("advice %q, want %q", c.Advice(), tc.advice)
			}
			if !maps.Equal(c.MissingNodes(), tc.missing) {
				t.Errorf("missing nodes %v, want %v", c.MissingNodes(), tc.missing)
			}
		})
	}
}

// The report writer logs and records the coverage's advice once per change.
func TestReporterAdvisesOnce(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	r := &Reporter{Events: rec, About: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dnstune-system", Name: "dnstune-policy"}}}
	a := "AKS LocalDNS (pod traffic) answers at 169.254.10.11 on 2/2 nodes; set nodeLocalDNS: 169.254.10.11"
	for _, advice := range []string{a, a, "", a} {
		r.advise(advice)
	}
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	want := []string{"Warning NodeLocalDNSAddress " + a, "Warning NodeLocalDNSAddress " + a}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q (once, and again after it went away and came back)", got, want)
	}
}
