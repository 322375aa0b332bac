package webhook

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/dnstune/dnstune/policy"
)

// DefaultPolicyPollInterval is how often the policy file is re-read even
// without a file-system event (ConfigMap volumes swap a symlink, which some
// file systems do not report).
const DefaultPolicyPollInterval = 10 * time.Second

// PolicyStore holds the policy in use and reloads it when its file changes.
// A file that fails to load is logged and counted; the last good policy
// stays in use. Policy() is lock-free and safe for concurrent use.
type PolicyStore struct {
	// PollInterval is how often Start re-reads the file without an event,
	// default DefaultPolicyPollInterval.
	PollInterval time.Duration

	path    string
	log     logr.Logger
	metrics *Metrics

	cur        atomic.Pointer[policy.Policy]
	generation atomic.Int64
	mu         sync.Mutex // serialises reloads
	lastData   []byte
}

// NewPolicyStore returns a store serving pol, whose file is path. Start
// watches the file.
func NewPolicyStore(path string, pol *policy.Policy, log logr.Logger, m *Metrics) *PolicyStore {
	s := &PolicyStore{path: path, log: log, metrics: m}
	s.cur.Store(pol)
	s.generation.Store(1)
	if m != nil {
		m.PolicyGeneration.Set(1)
		m.PolicyLastReloadOK.Set(1)
		m.PolicyReloads.WithLabelValues("success").Inc()
	}
	if data, err := os.ReadFile(path); err == nil { // #nosec G304 -- the operator names the file.
		s.lastData = data
	}
	return s
}

// Policy returns the policy in use.
func (s *PolicyStore) Policy() *policy.Policy { return s.cur.Load() }

// Generation returns the generation of the policy in use (1 at start).
func (s *PolicyStore) Generation() int64 { return s.generation.Load() }

// Reload re-reads the file. It returns the load error, if any; the policy in
// use then stays the same. An unchanged file is not parsed again.
func (s *PolicyStore) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.failed(fmt.Errorf("failed to read policy %s: %w", s.path, err))
	}
	if bytes.Equal(data, s.lastData) {
		return nil
	}
	pol, err := policy.Load(s.path, data)
	if err != nil {
		return s.failed(err)
	}
	s.lastData = data
	s.cur.Store(pol)
	gen := s.generation.Add(1)
	if s.metrics != nil {
		s.metrics.PolicyReloads.WithLabelValues("success").Inc()
		s.metrics.PolicyGeneration.Set(float64(gen))
		s.metrics.PolicyLastReloadOK.Set(1)
	}
	s.log.Info("policy reloaded", "path", s.path, "generation", gen)
	return nil
}

func (s *PolicyStore) failed(err error) error {
	if s.metrics != nil {
		s.metrics.PolicyReloads.WithLabelValues("failure").Inc()
		s.metrics.PolicyLastReloadOK.Set(0)
	}
	s.log.Error(err, "policy reload failed; keeping the last good policy", "path", s.path, "generation", s.generation.Load())
	return err
}

// Start watches the policy file's directory and polls every PollInterval
// until ctx ends. It implements
// controller-runtime's manager.Runnable.
func (s *PolicyStore) Start(ctx context.Context) error {
	interval := s.PollInterval
	if interval <= 0 {
		interval = DefaultPolicyPollInterval
	}
	return s.watch(ctx, interval)
}

// watcher is the file-system watch on the policy's directory; nil events
// means polling only.
type watcher struct {
	w      *fsnotify.Watcher
	events <-chan fsnotify.Event
}

func (s *PolicyStore) openWatcher() *watcher {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Info("cannot create a file watcher; polling only", "error", err.Error())
		return &watcher{}
	}
	// Watch the directory: editors and ConfigMap updates replace the file.
	if err := w.Add(filepath.Dir(s.path)); err != nil {
		s.log.Info("cannot watch the policy directory; polling only", "path", s.path, "error", err.Error())
		_ = w.Close()
		return &watcher{}
	}
	return &watcher{w: w, events: w.Events}
}

func (s *PolicyStore) watch(ctx context.Context, interval time.Duration) error {
	return s.loop(ctx, s.openWatcher(), interval)
}

func (s *PolicyStore) loop(ctx context.Context, w *watcher, interval time.Duration) error {
	if w.w != nil {
		defer func() { _ = w.w.Close() }()
	}
	events := w.events
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
		}
		_ = s.Reload() // logged and counted inside
	}
}
