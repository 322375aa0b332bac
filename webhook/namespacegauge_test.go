package webhook

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnstune/dnstune/policy"
)

func TestNamespaceGauge(t *testing.T) {
	n := &namespaceLabels{}
	for name, labels := range map[string]map[string]string{
		"shop":        {"dnstune.io/inject": "enabled"},
		"cart":        {"dnstune.io/inject": "enabled"},
		"edge":        {"dnstune.io/inject": "enabled", "dnstune.io/profile": "nodelocal"},
		"dry":         {"dnstune.io/inject": "audit", "dnstune.io/profile": "nodelocal"},
		"plain":       nil,
		"typo":        {"dnstune.io/inject": "enabled", "dnstune.io/profile": "nosuch"},
		"kube-system": {"dnstune.io/inject": "enabled"},
	} {
		n.m.Store(name, labels)
	}
	g := namespaceGauge{namespaces: n, policy: policy.Default}
	want := `
# HELP dnstune_namespaces Opted-in namespaces by the profile, mode and enforcement their pods get under the policy in use (from the webhook's namespace cache, at scrape time).
# TYPE dnstune_namespaces gauge
dnstune_namespaces{enforcement="audit",mode="nodelocal",profile="nodelocal"} 1
dnstune_namespaces{enforcement="enforce",mode="nodelocal",profile="nodelocal"} 1
dnstune_namespaces{enforcement="enforce",mode="options",profile="resilient"} 2
`
	if err := testutil.CollectAndCompare(g, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
