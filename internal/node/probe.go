package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/dns/dnsmessage"
)

// ProbeOptions configure a CacheProbe. Zero values take the defaults
// stated.
type ProbeOptions struct {
	// Address is the node-local DNS cache's address (the policy's
	// nodeLocalDNS, 169.254.20.10 by default). Required.
	Address netip.Addr
	// Port, default 53.
	Port int
	// Name is what the probe asks for (type A), default
	// kubernetes.default.svc.cluster.local.: a name every cluster has, so the
	// cache answers it from its cache or its upstream. NOERROR and NXDOMAIN
	// both count as an answer; SERVFAIL, REFUSED and the rest do not.
	Name string
	// Interval between probes, default 5s.
	Interval time.Duration
	// Timeout of one probe, default 1s (the nodelocal profile's timeout:1:
	// what a pod waits before its next nameserver).
	Timeout time.Duration
	// Events may be nil (not in a cluster).
	Events EventSink
	Log    logr.Logger
}

// Probe outcomes other than an answer, the reason label of
// dnstune_node_nodelocal_probe_failures_total.
const (
	ProbeTimeout  = "timeout"  // no answer within the timeout (a silent drop, or a stuck cache)
	ProbeRefused  = "refused"  // nothing listens there (ICMP port unreachable)
	ProbeRcode    = "rcode"    // it answered SERVFAIL, REFUSED or another error code
	ProbeMismatch = "mismatch" // it answered something that is not the answer to the probe
	ProbeError    = "error"    // the query could not be sent (no route, …)
)

// ProbeResult is the outcome of one probe.
type ProbeResult struct {
	// Up is true when the cache answered with NOERROR or NXDOMAIN.
	Up bool
	// Reason is empty when Up, else one of the Probe* constants.
	Reason string
	// Detail says what happened, for logs and Events.
	Detail string
	// Duration is the query's round trip (the timeout when none came back).
	Duration time.Duration
}

// CacheProbe sends a real DNS query over UDP to the node-local cache
// every Interval (a TCP connect would not see a cache that accepts but does
// not answer, nor one that only answers over TCP, while pods ask over UDP),
// exports whether it answered, and records a Node Event when it stops and
// when it answers again.
type CacheProbe struct {
	o ProbeOptions

	mu    sync.Mutex
	seen  bool // a probe has run
	wasUp bool // what the last one found

	up       *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
}

// Defaults of the node-local cache probe, for ProbeOptions left unset
// (the flags of dnstune node monitor show the same): the name asked (type
// A; NOERROR and NXDOMAIN count as answers), the time between probes and
// how long one waits.
const (
	DefaultProbeName     = "kubernetes.default.svc.cluster.local."
	DefaultProbeInterval = 5 * time.Second
	DefaultProbeTimeout  = time.Second
)

// NewCacheProbe returns a probe for o.Address; call Probe or Run.
func NewCacheProbe(o ProbeOptions) (*CacheProbe, error) {
	if !o.Address.IsValid() {
		return nil, errors.New("node-local probe: no address (set --nodelocal-address to the policy's nodeLocalDNS)")
	}
	if o.Port == 0 {
		o.Port = 53
	}
	if o.Name == "" {
		o.Name = DefaultProbeName
	}
	if o.Name[len(o.Name)-1] != '.' {
		o.Name += "."
	}
	for _, l := range strings.Split(strings.TrimSuffix(o.Name, "."), ".") {
		if l == "" || len(l) > 63 {
			return nil, fmt.Errorf("node-local probe name %q: each label must have 1 to 63 characters", o.Name)
		}
	}
	if _, err := dnsmessage.NewName(o.Name); err != nil {
		return nil, fmt.Errorf("node-local probe name %q: %w", o.Name, err)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultProbeInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultProbeTimeout
	}
	p := &CacheProbe{o: o}
	p.up = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dnstune_node_nodelocal_up",
		Help: "1 when the node-local DNS cache answered the last probe (a DNS query over UDP) with NOERROR or NXDOMAIN, else 0.",
	}, []string{"address"})
	p.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dnstune_node_nodelocal_probe_duration_seconds",
		Help:    "Round trip of the node-local DNS cache's answers to the probe.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1},
	}, []string{"address"})
	p.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnstune_node_nodelocal_probe_failures_total",
		Help: "Probes of the node-local DNS cache that got no usable answer, by reason: timeout, refused, rcode, mismatch, error.",
	}, []string{"address", "reason"})
	return p, nil
}

// Address is where the probe asks.
func (p *CacheProbe) Address() string {
	return net.JoinHostPort(p.o.Address.String(), strconv.Itoa(p.o.Port))
}

// Probe sends one query, updates the metrics, records an Event when the
// cache's state changed, and returns the result.
func (p *CacheProbe) Probe(ctx context.Context) ProbeResult {
	r := Query(ctx, p.Address(), p.o.Name, p.o.Timeout)
	addr := p.o.Address.String()
	if r.Up {
		p.up.WithLabelValues(addr).Set(1)
		p.duration.WithLabelValues(addr).Observe(r.Duration.Seconds())
	} else {
		p.up.WithLabelValues(addr).Set(0)
		p.failures.WithLabelValues(addr, r.Reason).Inc()
	}
	p.mu.Lock()
	wasUp, seen := p.wasUp, p.seen
	p.wasUp, p.seen = r.Up, true
	p.mu.Unlock()
	switch {
	case !r.Up && (!seen || wasUp):
		msg := fmt.Sprintf("node-local DNS cache %s does not answer: %s; pods pointed at it wait out their timeout before their next nameserver (musl pods: only the other nameserver answers)", p.Address(), r.Detail)
		p.o.Log.Info(msg)
		sendEvent(p.o.Events, "Warning", "NodeLocalDNSDown", msg)
	case r.Up && seen && !wasUp:
		msg := fmt.Sprintf("node-local DNS cache %s answers again (%s in %s)", p.Address(), r.Detail, r.Duration.Round(time.Microsecond))
		p.o.Log.Info(msg)
		sendEvent(p.o.Events, "Normal", "NodeLocalDNSUp", msg)
	case r.Up && !seen:
		p.o.Log.Info("node-local DNS cache answers", "address", p.Address(), "answer", r.Detail, "duration", r.Duration.String())
	}
	return r
}

// Run probes every Interval until ctx ends.
func (p *CacheProbe) Run(ctx context.Context) {
	t := time.NewTicker(p.o.Interval)
	defer t.Stop()
	for {
		p.Probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Describe implements prometheus.Collector.
func (p *CacheProbe) Describe(ch chan<- *prometheus.Desc) {
	p.up.Describe(ch)
	p.duration.Describe(ch)
	p.failures.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *CacheProbe) Collect(ch chan<- prometheus.Metric) {
	p.up.Collect(ch)
	p.duration.Collect(ch)
	p.failures.Collect(ch)
}

// Query asks addr (host:port) for name's A record over UDP, once, and says
// whether a DNS server answered it with NOERROR or NXDOMAIN within timeout.
// It is the probe's pure network step, also usable on its own.
func Query(ctx context.Context, addr, name string, timeout time.Duration) ProbeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	q, err := buildQuery(id, name)
	if err != nil {
		return ProbeResult{Reason: ProbeError, Detail: err.Error()}
	}
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return ProbeResult{Reason: ProbeError, Detail: fmt.Sprintf("cannot send to %s: %v", addr, err), Duration: time.Since(start)}
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write(q); err != nil {
		return failure(err, addr, timeout, start)
	}
	buf := make([]byte, 1232)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return failure(err, addr, timeout, start)
		}
		var h dnsmessage.Header
		var m dnsmessage.Parser
		if h, err = m.Start(buf[:n]); err != nil || !h.Response || h.ID != id {
			continue // not the answer to this query: keep waiting for it
		}
		qs, err := m.AllQuestions()
		if err != nil || len(qs) != 1 || !strings.EqualFold(qs[0].Name.String(), name) || qs[0].Type != dnsmessage.TypeA {
			return ProbeResult{Reason: ProbeMismatch, Detail: fmt.Sprintf("%s answered with another question than %s A", addr, name), Duration: time.Since(start)}
		}
		took := time.Since(start)
		switch h.RCode {
		case dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError:
			return ProbeResult{Up: true, Detail: rcodeName(h.RCode), Duration: took}
		default:
			return ProbeResult{Reason: ProbeRcode, Detail: fmt.Sprintf("%s answered %s", addr, rcodeName(h.RCode)), Duration: took}
		}
	}
}

func failure(err error, addr string, timeout time.Duration, start time.Time) ProbeResult {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ProbeResult{Reason: ProbeRefused, Detail: fmt.Sprintf("nothing listens on %s (connection refused)", addr), Duration: time.Since(start)}
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return ProbeResult{Reason: ProbeTimeout, Detail: fmt.Sprintf("no answer from %s within %s", addr, timeout), Duration: timeout}
	default:
		return ProbeResult{Reason: ProbeError, Detail: fmt.Sprintf("query to %s: %v", addr, err), Duration: time.Since(start)}
	}
}

func buildQuery(id uint16, name string) ([]byte, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("probe name %q: %w", name, err)
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// rcodeName is an RCODE as dig prints it.
func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	default:
		return "RCODE" + strconv.Itoa(int(c))
	}
}
