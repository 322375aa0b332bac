package daemon

import (
	"bytes"
	"context"
	"errors"
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

// PolicyStore holds the policy in use and reloads it when its file changes.
// A file that fails to load is logged and counted; the last good policy
// stays in use. Policy() is lock-free and safe for concurrent use.
//
// Use: NewPolicyStore, then Open (watch, then load: an edit made after Open
// is never missed), then Start (as a manager runnable).
type PolicyStore struct {
	// PollInterval is how often Start re-reads the file without an event,
	// default DefaultPolicyPollInterval.
	PollInterval time.Duration

	path    string
	log     logr.Logger
	metrics *PolicyMetrics

	cur        atomic.Pointer[policy.Policy]
	generation atomic.Int64
	mu         sync.Mutex // serialises reloads and guards the fields below
	goodData   []byte     // the content of the policy in use
	fileOK     bool       // whether the file as last read loads
	w          *watcher
}

// NewPolicyStore returns an empty store for the policy file at path. m may be nil.
func NewPolicyStore(path string, log logr.Logger, m *PolicyMetrics) *PolicyStore {
	return &PolicyStore{path: path, log: log, metrics: m}
}

// Open starts watching the policy file's directory, then loads the file. It
// fails when the file does not load: the webhook does not start without a
// good policy. Edits made after Open returns are seen by Start.
func (s *PolicyStore) Open() error {
	s.mu.Lock()
	if s.w == nil {
		s.w = s.openWatcher()
	}
	s.mu.Unlock()
	return s.Reload()
}

// Policy returns the policy in use, nil before the first successful load.
func (s *PolicyStore) Policy() *policy.Policy { return s.cur.Load() }

// Generation returns the generation of the policy in use: 1 after the first
// load, one more with each successful reload of changed content.
func (s *PolicyStore) Generation() int64 { return s.generation.Load() }

// FileOK reports whether the policy file, as last read, loads. It is false
// while a bad edit is on disk (the last good policy stays in use) and true
// again as soon as the file is valid, whether or not its content changed.
func (s *PolicyStore) FileOK() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fileOK
}

// Reload re-reads the file. It returns the load error, if any; the policy in
// use then stays the same. Content equal to the policy in use is not parsed
// again, but still counts as a good file.
func (s *PolicyStore) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.failed(fmt.Errorf("failed to read policy %s: %w", s.path, err))
	}
	if s.cur.Load() != nil && bytes.Equal(data, s.goodData) {
		if !s.fileOK {
			s.log.Info("policy file is valid again (same content as the policy in use)", "path", s.path, "generation", s.generation.Load())
		}
		s.setFileOK(true)
		return nil
	}
	pol, err := policy.Load(s.path, data)
	if err != nil {
		return s.failed(err)
	}
	s.goodData = data
	s.cur.Store(pol)
	gen := s.generation.Add(1)
	if s.metrics != nil {
		s.metrics.Reloads.WithLabelValues("success").Inc()
		s.metrics.Generation.Set(float64(gen))
	}
	s.setFileOK(true)
	s.log.Info("policy loaded", "path", s.path, "generation", gen)
	return nil
}

func (s *PolicyStore) setFileOK(ok bool) {
	s.fileOK = ok
	if s.metrics != nil {
		v := 0.0
		if ok {
			v = 1
		}
		s.metrics.LastReloadOK.Set(v)
	}
}

func (s *PolicyStore) failed(err error) error {
	if s.metrics != nil {
		s.metrics.Reloads.WithLabelValues("failure").Inc()
	}
	s.setFileOK(false)
	if s.cur.Load() != nil {
		s.log.Error(err, "policy reload failed; keeping the last good policy", "path", s.path, "generation", s.generation.Load())
	}
	return err
}

// Start reloads the file on every file-system event in its directory and
// every PollInterval until ctx ends, starting with one reload (for an edit
// made between Open and Start). It implements controller-runtime's
// manager.Runnable. Without Open, it opens the watch itself.
func (s *PolicyStore) Start(ctx context.Context) error {
	interval := s.PollInterval
	if interval <= 0 {
		interval = DefaultPolicyPollInterval
	}
	s.mu.Lock()
	if s.w == nil {
		s.w = s.openWatcher()
	}
	w := s.w
	s.mu.Unlock()
	return s.loop(ctx, w, interval)
}

// NeedLeaderElection is false: every replica watches its own policy file.
func (s *PolicyStore) NeedLeaderElection() bool { return false }

// watcher is the file-system watch on the policy's directory; nil channels
// mean polling only.
type watcher struct {
	w      *fsnotify.Watcher
	events <-chan fsnotify.Event
	errors <-chan error
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
	return &watcher{w: w, events: w.Events, errors: w.Errors}
}

func (s *PolicyStore) loop(ctx context.Context, w *watcher, interval time.Duration) error {
	if w.w != nil {
		defer func() { _ = w.w.Close() }()
	}
	events, errs := w.events, w.errors
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		_ = s.Reload() // logged and counted inside
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		case err, ok := <-errs:
			// fsnotify blocks on an unread error; read it, say it, count it.
			if !ok {
				errs = nil
				continue
			}
			s.watchError(err)
		}
	}
}

func (s *PolicyStore) watchError(err error) {
	if s.metrics != nil {
		s.metrics.WatchErrors.Inc()
	}
	msg := "policy file watch error; reloads continue (events and polling)"
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		msg = "policy file watch lost events (queue overflow); reloading now"
	}
	s.log.Error(err, msg, "path", s.path)
}
