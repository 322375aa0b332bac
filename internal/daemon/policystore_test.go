package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dnstune/dnstune/policy"
)

const policyV1 = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 2}\n"
const policyV2 = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 3}\n"
const policyBad = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 99}\n"

func ndots(p *policy.Policy) int { return *p.Profiles["resilient"].Options.Ndots }

func writePolicy(t *testing.T, file, s string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// openStore writes policyV1 to a new policy file and opens a store on it.
func openStore(t *testing.T, m *PolicyMetrics) (string, *PolicyStore) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, file, policyV1)
	s := NewPolicyStore(file, logr.Discard(), m)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	return file, s
}

func TestPolicyStoreReload(t *testing.T) {
	m := NewPolicyMetrics(nil)
	file, s := openStore(t, m)
	write := func(s string) { writePolicy(t, file, s) }
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
	if testutil.ToFloat64(m.LastReloadOK) != 0 || testutil.ToFloat64(m.Reloads.WithLabelValues("failure")) != 1 {
		t.Fatal("failure not counted")
	}
	write(policyV2)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if ndots(s.Policy()) != 3 || s.Generation() != 2 || testutil.ToFloat64(m.Generation) != 2 || testutil.ToFloat64(m.LastReloadOK) != 1 {
		t.Fatalf("good edit not applied: ndots=%d gen=%d", ndots(s.Policy()), s.Generation())
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil || ndots(s.Policy()) != 3 {
		t.Fatal("a deleted file must keep the last policy and report an error")
	}
}

// The reload state describes the file as it is now: good -> bad -> the same
// good content -> different good content. Reverting a bad edit to the
// content in use must clear the failure (DnstunePolicyBroken stops firing).
func TestPolicyStoreStateFollowsFile(t *testing.T) {
	m := NewPolicyMetrics(nil)
	file, s := openStore(t, m)
	steps := []struct {
		content string
		wantOK  bool
		ndots   int
		gen     int64
	}{
		{policyBad, false, 2, 1},
		{policyV1, true, 2, 1}, // same as in use: not re-parsed, but the file is good again
		{policyBad, false, 2, 1},
		{policyV2, true, 3, 2},
		{policyV2, true, 3, 2},
	}
	for i, st := range steps {
		writePolicy(t, file, st.content)
		_ = s.Reload()
		ok := testutil.ToFloat64(m.LastReloadOK) == 1
		if ok != st.wantOK || s.FileOK() != st.wantOK || ndots(s.Policy()) != st.ndots || s.Generation() != st.gen {
			t.Errorf("step %d: last_reload_successful=%v FileOK=%v ndots=%d gen=%d, want ok=%v ndots=%d gen=%d",
				i, ok, s.FileOK(), ndots(s.Policy()), s.Generation(), st.wantOK, st.ndots, st.gen)
		}
	}
}

// An edit made after Open (e.g. while the webhook waits for its
// certificates) but before Start is picked up by Start, without a further edit.
func TestPolicyStoreEditBeforeStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, file, policyV1)
	s := NewPolicyStore(file, logr.Discard(), nil)
	s.PollInterval = time.Hour // only the watch or the start may see the edit
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, file, policyV2)
	defer run(t, func(ctx context.Context) error { return s.Start(ctx) })()
	waitNdots(t, s, 3, 10*time.Second, "the edit made before Start was ignored: ndots stayed 2")
}

// Watch errors are read (fsnotify blocks on an unread error), logged and
// counted, and events keep being handled after one.
func TestPolicyStoreWatchErrors(t *testing.T) {
	m := NewPolicyMetrics(nil)
	file, s := openStore(t, m)
	events, errs := make(chan fsnotify.Event), make(chan error)
	defer run(t, func(ctx context.Context) error { return s.loop(ctx, &watcher{events: events, errors: errs}, time.Hour) })()
	for i := range 3 {
		select {
		case errs <- errors.New("inotify: queue overflow"):
		case <-time.After(5 * time.Second):
			t.Fatalf("watch error %d was never read: the watcher would stall", i+1)
		}
	}
	writePolicy(t, file, policyV2)
	select {
	case events <- fsnotify.Event{Name: file, Op: fsnotify.Write}:
	case <-time.After(5 * time.Second):
		t.Fatal("events not read after watch errors")
	}
	waitNdots(t, s, 3, 5*time.Second, "event after watch errors not handled")
	if n := testutil.ToFloat64(m.WatchErrors); n != 3 {
		t.Errorf("dnstune_policy_watch_errors_total = %v, want 3", n)
	}
}

// TestPolicyStoreWatch proves a file replaced the way a ConfigMap volume
// replaces it (a new file renamed over the old) is picked up by the watcher.
func TestPolicyStoreWatch(t *testing.T) {
	file, s := openStore(t, nil) // watching before the file changes
	dir := filepath.Dir(file)
	if s.w.events == nil {
		t.Fatal("no file-system watch on the policy directory")
	}
	defer run(t, func(ctx context.Context) error { return s.loop(ctx, s.w, time.Hour) })()

	tmp := filepath.Join(dir, ".new")
	writePolicy(t, tmp, policyV2)
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	waitNdots(t, s, 3, 10*time.Second, "watcher did not pick up the new policy within 10s")
}

// run starts f with a context and returns a function that cancels it and
// waits for f to return, failing the test on its error.
func run(t *testing.T, f func(context.Context) error) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// waitNdots waits up to limit for the store to serve a policy with ndots n.
func waitNdots(t *testing.T, s *PolicyStore, n int, limit time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for ndots(s.Policy()) != n {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
