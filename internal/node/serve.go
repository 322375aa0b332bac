package node

import (
	"context"
	"fmt"
	"net/http"
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
// bounded reads and writes) and runs its checks until ctx ends; it returns
// once both have stopped.
func Serve(ctx context.Context, m *Monitor, reg *prometheus.Registry, addr string, log logr.Logger) error {
	srv := &http.Server{Addr: addr, Handler: m.Handler(reg), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("node monitor serving", "address", addr)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	select {
	case err := <-errc:
		stop()
		<-done // the monitor has stopped before we return
		return fmt.Errorf("failed to serve metrics on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	<-done
	return nil
}
