package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/netutil"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Bounds on a client of the TLS port. kube-apiserver calls with
// timeoutSeconds: 2, so a legitimate client never comes near them.
const (
	// DefaultHeaderTimeout bounds the TLS handshake and then the request
	// line and headers.
	DefaultHeaderTimeout = 3 * time.Second
	// DefaultReadTimeout bounds reading one whole request, body included.
	DefaultReadTimeout = 5 * time.Second
	// DefaultIdleTimeout closes a kept-alive connection with no request.
	DefaultIdleTimeout = 10 * time.Second
	// DefaultMaxConnections is how many connections are served at once;
	// more wait in the listen queue until one closes.
	DefaultMaxConnections = 1000
)

// ServerOptions configure Server. Zero values take the defaults stated.
type ServerOptions struct {
	// Host to listen on, default all addresses; Port, default 9443.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key, reloaded when they change.
	CertDir string
	// TLSOpts adjust the TLS configuration (minimum version, ALPN).
	TLSOpts []func(*tls.Config)
	// HeaderTimeout, default DefaultHeaderTimeout, bounds the TLS handshake
	// and, separately, the request headers.
	HeaderTimeout time.Duration
	// ReadTimeout, default DefaultReadTimeout, bounds a whole request.
	ReadTimeout time.Duration
	// WriteTimeout, default 10s, bounds a request from its headers to the
	// end of its answer.
	WriteTimeout time.Duration
	// IdleTimeout, default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxConnections, default DefaultMaxConnections.
	MaxConnections int
	Log            logr.Logger
}

// Server is the webhook's TLS server: controller-runtime's webhook.Server
// interface, with every phase of a connection bounded (controller-runtime's
// own server bounds only the headers, at 32 s, and not the handshake: a
// client that opens TCP and never speaks holds a connection for good).
type Server struct {
	o   ServerOptions
	mux *http.ServeMux
	// reg registers hooks on mux with controller-runtime's instrumentation
	// (controller_runtime_webhook_* metrics); it is never started.
	reg crwebhook.Server

	mu   sync.Mutex
	addr net.Addr // set once listening
}

var _ crwebhook.Server = (*Server)(nil)

// newServer returns a server; Start serves it.
func newServer(o ServerOptions) *Server {
	if o.Port == 0 {
		o.Port = 9443
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	mux := http.NewServeMux()
	return &Server{o: o, mux: mux, reg: crwebhook.NewServer(crwebhook.Options{WebhookMux: mux, Port: -1})}
}

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Register serves hook at path, instrumented as controller-runtime does
// (controller_runtime_webhook_latency_seconds, _requests_total, _requests_in_flight).
func (s *Server) Register(path string, hook http.Handler) { s.reg.Register(path, hook) }

// WebhookMux is the server's mux.
func (s *Server) WebhookMux() *http.ServeMux { return s.mux }

// Addr is the address the server listens on, nil before Start listens.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Start serves until ctx ends, then shuts down, letting requests under way
// finish for up to WriteTimeout.
func (s *Server) Start(ctx context.Context) error {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	for _, op := range s.o.TLSOpts {
		op(cfg)
	}
	if cfg.GetCertificate == nil {
		w, err := certwatcher.New(filepath.Join(s.o.CertDir, "tls.crt"), filepath.Join(s.o.CertDir, "tls.key"))
		if err != nil {
			return fmt.Errorf("failed to load the serving certificate from %s: %w", s.o.CertDir, err)
		}
		cfg.GetCertificate = w.GetCertificate
		go func() {
			if err := w.Start(ctx); err != nil {
				s.o.Log.Error(err, "certificate watcher stopped")
			}
		}()
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.o.Host, strconv.Itoa(s.o.Port)))
	if err != nil {
		return fmt.Errorf("failed to listen on port %d: %w", s.o.Port, err)
	}
	s.mu.Lock()
	s.addr = l.Addr()
	s.mu.Unlock()
	// net/http bounds the handshake of a *tls.Conn by the smallest of its
	// read, header and write timeouts: HeaderTimeout here.
	srv := &http.Server{
		Handler:           s.mux,
		TLSConfig:         cfg,
		ReadHeaderTimeout: s.o.HeaderTimeout,
		ReadTimeout:       s.o.ReadTimeout,
		WriteTimeout:      s.o.WriteTimeout,
		IdleTimeout:       s.o.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if !slices.Contains(cfg.NextProtos, "h2") {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){} // HTTP/1.1 only
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.WriteTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.o.Log.Error(err, "webhook server shutdown")
		}
	}()
	s.o.Log.Info("serving webhook", "address", l.Addr().String(), "headerTimeout", s.o.HeaderTimeout, "readTimeout", s.o.ReadTimeout,
		"writeTimeout", s.o.WriteTimeout, "idleTimeout", s.o.IdleTimeout, "maxConnections", s.o.MaxConnections)
	err = srv.Serve(tls.NewListener(netutil.LimitListener(l, s.o.MaxConnections), cfg))
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}

// StartedChecker passes once the server completes a TLS handshake with
// itself: listening, with a certificate loaded.
func (s *Server) StartedChecker() healthz.Checker {
	return func(*http.Request) error {
		addr := s.Addr()
		if addr == nil {
			return errors.New("webhook server not listening yet")
		}
		host, port, _ := net.SplitHostPort(addr.String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = "localhost"
		}
		d := &net.Dialer{Timeout: time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(host, port), &tls.Config{InsecureSkipVerify: true}) // #nosec G402 -- a liveness handshake with ourselves.
		if err != nil {
			return fmt.Errorf("webhook server not serving TLS: %w", err)
		}
		return conn.Close()
	}
}
