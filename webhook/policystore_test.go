package webhook

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/dnstune/dnstune/policy"
)

const policyV1 = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 2}\n"
const policyV2 = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 3}\n"
const policyBad = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 99}\n"

func ndots(p *policy.Policy) int { return *p.Profiles["resilient"].Options.Ndots }

func TestPolicyStoreReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(policyV1)
	pol, err := policy.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	s := NewPolicyStore(file, pol, logr.Discard(), m)

	if err := s.Reload(); err != nil || s.Generation() != 1 {
		t.Fatalf("unchanged file: err=%v generation=%d, want nil, 1", err, s.Generation())
	}
	write(policyBad)
	if err := s.Reload(); err == nil {
		t.Fatal("bad policy loaded")
	}
	if ndots(s.Policy()) != 2 || s.Generation() != 1 {
		t.Fatalf("bad edit replaced the policy: ndots=%d gen=%d", ndots(s.Policy()), s.Generation())
	}
	if testutil.ToFloat64(m.PolicyLastReloadOK) != 0 || testutil.ToFloat64(m.PolicyReloads.WithLabelValues("failure")) != 1 {
		t.Fatal("failure not counted")
	}
	write(policyV2)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if ndots(s.Policy()) != 3 || s.Generation() != 2 || testutil.ToFloat64(m.PolicyGeneration) != 2 || testutil.ToFloat64(m.PolicyLastReloadOK) != 1 {
		t.Fatalf("good edit not applied: ndots=%d gen=%d", ndots(s.Policy()), s.Generation())
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil || ndots(s.Policy()) != 3 {
		t.Fatal("a deleted file must keep the last policy and report an error")
	}
}

// TestPolicyStoreWatch proves a file replaced the way a ConfigMap volume
// replaces it (a new file renamed over the old) is picked up by the watcher.
func TestPolicyStoreWatch(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(policyV1), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, _ := policy.LoadFile(file)
	s := NewPolicyStore(file, pol, logr.Discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	w := s.openWatcher() // watching before the file changes
	if w.events == nil {
		t.Fatal("no file-system watch on the policy directory")
	}
	go func() { done <- s.loop(ctx, w, time.Hour) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	tmp := filepath.Join(dir, ".new")
	if err := os.WriteFile(tmp, []byte(policyV2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ndots(s.Policy()) != 3 {
		if time.Now().After(deadline) {
			t.Fatal("watcher did not pick up the new policy within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNamespaceLabelsFollowInformer(t *testing.T) {
	n := &namespaceLabels{api: nil}
	h := n.handler()
	shop := namespaceMeta()
	shop.Name, shop.Labels = "shop", map[string]string{"dnstune.io/inject": "enabled"}
	h.OnAdd(shop, true)
	if l, err := n.Labels(context.Background(), "shop"); err != nil || l["dnstune.io/inject"] != "enabled" {
		t.Fatalf("after add: %v %v", l, err)
	}
	updated := namespaceMeta()
	updated.Name, updated.Labels = "shop", map[string]string{"dnstune.io/inject": "audit"}
	h.OnUpdate(shop, updated)
	if l, _ := n.Labels(context.Background(), "shop"); l["dnstune.io/inject"] != "audit" {
		t.Fatalf("after update: %v", l)
	}
	h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "shop", Obj: updated})
	if _, ok := n.m.Load("shop"); ok {
		t.Fatal("deleted namespace still cached")
	}
}
