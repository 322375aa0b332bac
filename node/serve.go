package node

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMetricsBindAddress is where the node monitor serves /metrics,
// /healthz and /readyz unless told otherwise: 9741, a port of its own
// (the agent runs in the host's network namespace, where 9090 is
// Prometheus' and 8080 many a node daemon's).
const DefaultMetricsBindAddress = ":9741"

// Serve serves the monitor's /metrics, /healthz and /readyz on addr (with
// bounded reads and writes) and runs its checks, and the node-local cache
// probe p when not nil, until ctx ends; it returns once all have stopped
// (the probe gives back an address it covers). /readyz is ok once a check
// succeeded and, with a probe, once the probe ran.
func Serve(ctx context.Context, m *Monitor, p *CacheProbe, reg *prometheus.Registry, addr string, log logr.Logger) error {
	ready := []func() bool{m.Ready}
	if p != nil {
		ready = append(ready, p.Probed)
	}
	srv := &http.Server{Addr: addr, Handler: handler(reg, ready...), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("node monitor serving", "address", addr)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	if p != nil {
		wg.Go(func() { p.Run(ctx) })
	}
	select {
	case err := <-errc:
		stop()
		wg.Wait() // the monitor and the probe have stopped before we return
		return fmt.Errorf("failed to serve metrics on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	wg.Wait()
	return nil
}
