package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
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
	// Confirm is the time to the next probe after one that disagreed with
	// the verdict, default 1s: a change is confirmed (DefaultProbesToChange
	// probes in a row) within a second or two instead of a whole Interval.
	Confirm time.Duration
	// WellKnown are other node-local addresses probed with each Interval
	// (not the Confirm probes), default DefaultWellKnown; the policy's own
	// address is left out. Set an empty, non-nil slice to probe none.
	WellKnown []WellKnownAddress
	// Cover, when set, answers at Address while the verdict is down and
	// nothing else listens there.
	Cover *Cover
	// Links tells whether the node holds an address, default Netlink{}. A
	// node-local cache holds its address on the node (node-local-dns and
	// AKS LocalDNS on a dummy interface); an address the node does not hold
	// is probed no further (ProbeNotLocal): whatever answers there from the
	// host is off the node, not a node-local cache.
	Links AddressLinks
	// Events and Conditions may be nil (not in a cluster).
	Events     EventSink
	Conditions ConditionSink
	Log        logr.Logger
}

// ConditionSink keeps the Node's ConditionType condition.
type ConditionSink interface {
	SetCondition(ctx context.Context, c corev1.NodeCondition) error
}

// Probe outcomes other than an answer, the reason label of
// dnstune_node_nodelocal_probe_failures_total.
const (
	ProbeTimeout  = "timeout"   // no answer within the timeout (a silent drop, or a stuck cache)
	ProbeRefused  = "refused"   // nothing listens there (ICMP port unreachable)
	ProbeRcode    = "rcode"     // it answered SERVFAIL, REFUSED or another error code
	ProbeMismatch = "mismatch"  // it answered something that is not the answer to the probe
	ProbeError    = "error"     // the query could not be sent (no route, …)
	ProbeNotLocal = "not-local" // no interface of the node holds the address: no node-local cache can answer there
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

	mu        sync.Mutex
	h         hysteresis
	status    CacheStatus
	since     time.Time // of the condition's status
	dirty     bool      // the condition needs writing
	coverErr  string    // the cover's last start error, logged once
	wellKnown []WellKnownAddress

	up       *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
	verdict  *prometheus.GaugeVec
	covering *prometheus.GaugeVec
	wkUp     *prometheus.GaugeVec
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
	if o.Confirm <= 0 {
		o.Confirm = time.Second
	}
	if o.WellKnown == nil {
		o.WellKnown = DefaultWellKnown
	}
	if o.Links == nil {
		o.Links = Netlink{}
	}
	p := &CacheProbe{o: o, h: hysteresis{need: DefaultProbesToChange}, since: time.Now(), dirty: true}
	for _, w := range o.WellKnown {
		if w.Address != o.Address.String() {
			p.wellKnown = append(p.wellKnown, w)
		}
	}
	p.status.Address = p.Address()
	p.verdict = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dnstune_node_nodelocal_verdict_up",
		Help: "1 while the node-local DNS cache counts as up (two probes in a row answered), 0 while it counts as down (two failed); absent until the probes agree. The Node condition " + string(ConditionType) + " says the same.",
	}, []string{"address"})
	p.covering = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dnstune_node_nodelocal_covering",
		Help: "1 while the agent answers at the node-local DNS cache's address itself (forwarding to kube-dns) because no socket of the cache is bound there; 0 while it stands by (or covering is off).",
	}, []string{"address"})
	p.covering.WithLabelValues(o.Address.String()).Set(0)
	p.wkUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dnstune_node_nodelocal_wellknown_up",
		Help: "1 when a well-known node-local DNS address (not the policy's) answered the last probe, by platform.",
	}, []string{"address", "platform"})
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
		Help: "Probes of the node-local DNS cache that got no usable answer, by reason: timeout, refused, rcode, mismatch, error, not-local (no interface of the node holds the address; not asked).",
	}, []string{"address", "reason"})
	return p, nil
}

// Address is where the probe asks.
func (p *CacheProbe) Address() string {
	return net.JoinHostPort(p.o.Address.String(), strconv.Itoa(p.o.Port))
}

// Probe sends one query to the cache (when the agent stands by on the
// cache's port, the kernel steers it to the cache's socket; with no such
// socket there is nothing to ask: the agent answers there itself), updates
// the metrics and the verdict, records an Event when the verdict changes,
// starts the cover, and keeps the Node condition. It returns the result.
func (p *CacheProbe) Probe(ctx context.Context) ProbeResult {
	var r ProbeResult
	if c := p.o.Cover; c != nil && c.Active() && !p.checkCover(ctx) {
		r = ProbeResult{Reason: ProbeRefused, Detail: fmt.Sprintf("no socket of the cache is bound at %s (dnstune answers there)", p.Address())}
	} else {
		r = p.query(ctx, p.o.Address)
	}
	addr := p.o.Address.String()
	if r.Up {
		p.up.WithLabelValues(addr).Set(1)
		p.duration.WithLabelValues(addr).Observe(r.Duration.Seconds())
	} else {
		p.up.WithLabelValues(addr).Set(0)
		p.failures.WithLabelValues(addr, r.Reason).Inc()
	}
	p.mu.Lock()
	v, changed := p.h.observe(r.Up)
	p.status.Verdict, p.status.Last = v, r
	if r.Up {
		p.status.Failures = 0
	} else {
		p.status.Failures++
	}
	if changed {
		p.since, p.dirty = time.Now(), true
		p.verdict.WithLabelValues(addr).Set(map[bool]float64{true: 1, false: 0}[v == VerdictUp])
	}
	p.mu.Unlock()
	switch {
	case changed && v == VerdictDown:
		msg := fmt.Sprintf("node-local DNS cache %s does not answer: %s", p.Address(), r.Detail)
		if p.o.Cover == nil {
			msg += "; pods pointed at it wait out their timeout before their next nameserver (musl pods: only the other nameserver answers)"
		}
		p.o.Log.Info(msg)
		sendEvent(p.o.Events, "Warning", "NodeLocalDNSDown", msg)
	case changed && v == VerdictUp:
		msg := fmt.Sprintf("node-local DNS cache %s answers (%s in %s)", p.Address(), r.Detail, r.Duration.Round(time.Microsecond))
		p.o.Log.Info(msg)
		sendEvent(p.o.Events, "Normal", "NodeLocalDNSUp", msg)
	}
	if p.o.Cover != nil && (v == VerdictDown || r.Reason != ProbeNotLocal) {
		p.startCover(ctx)
	}
	p.writeCondition(ctx)
	return r
}

// query asks addr when the node holds it.
func (p *CacheProbe) query(ctx context.Context, addr netip.Addr) ProbeResult {
	if local, err := p.o.Links.HasLocal(addr, ""); err == nil && !local {
		return ProbeResult{Reason: ProbeNotLocal, Detail: fmt.Sprintf("no interface of this node holds %s: no node-local cache runs here", addr)}
	}
	return Query(ctx, net.JoinHostPort(addr.String(), strconv.Itoa(p.o.Port)), p.o.Name, p.o.Timeout)
}

// ProbeWellKnown asks each well-known address at once and exports which
// answered; it updates the condition when that changed.
func (p *CacheProbe) ProbeWellKnown(ctx context.Context) {
	if len(p.wellKnown) == 0 {
		return
	}
	res := make([]ProbeResult, len(p.wellKnown))
	var wg sync.WaitGroup
	for i, w := range p.wellKnown {
		wg.Go(func() {
			if a, err := netip.ParseAddr(w.Address); err == nil {
				res[i] = p.query(ctx, a)
			}
		})
	}
	wg.Wait()
	var answering []string
	for i, w := range p.wellKnown {
		if res[i].Up {
			answering = append(answering, w.Address+" ("+w.Platform+")")
			p.wkUp.WithLabelValues(w.Address, w.Platform).Set(1)
		} else {
			p.wkUp.WithLabelValues(w.Address, w.Platform).Set(0)
		}
	}
	p.mu.Lock()
	if !slices.Equal(answering, p.status.Answering) {
		p.status.Answering, p.dirty = answering, true
	}
	p.mu.Unlock()
	p.writeCondition(ctx)
}

// startCover starts the cover (standing by beside the cache, or answering
// where no cache is); a failure is logged and recorded once per cause, and
// tried again at the next probe.
func (p *CacheProbe) startCover(ctx context.Context) {
	c := p.o.Cover
	if c.Active() {
		return
	}
	if err := c.Start(ctx); err != nil {
		p.mu.Lock()
		repeat := p.coverErr == err.Error()
		p.coverErr = err.Error()
		p.mu.Unlock()
		if !repeat {
			p.o.Log.Error(err, "cannot cover for the node-local DNS cache")
			sendEvent(p.o.Events, "Warning", "NodeLocalDNSCoverFailed", err.Error())
		}
		return
	}
	p.mu.Lock()
	p.coverErr = ""
	p.mu.Unlock()
	p.o.Log.Info("standing by at the node-local DNS cache's address", "address", p.Address(), "upstream", c.Upstream())
	p.checkCover(ctx)
}

// checkCover looks at the port (Cover.Refresh) and records when the agent
// starts or stops answering there; it returns whether the cache's socket is
// bound.
func (p *CacheProbe) checkCover(ctx context.Context) bool {
	c := p.o.Cover
	bound, err := c.Refresh(ctx)
	if err != nil {
		p.o.Log.Error(err, "cover: looking at the cache's port")
	}
	covering := c.Active() && !bound
	p.mu.Lock()
	was := p.status.Covering
	if covering != was {
		p.status.Covering, p.status.Upstream, p.dirty = covering, c.Upstream(), true
		p.since = time.Now() // the reason changed
	}
	p.mu.Unlock()
	if covering == was {
		return bound
	}
	g := p.covering.WithLabelValues(p.o.Address.String())
	if covering {
		g.Set(1)
		msg := fmt.Sprintf("no socket of the node-local DNS cache is bound at %s: dnstune answers there, forwarding to kube-dns at %s, until the cache binds again", p.Address(), c.Upstream())
		p.o.Log.Info(msg)
		sendEvent(p.o.Events, "Normal", "NodeLocalDNSCovered", msg)
	} else {
		g.Set(0)
		msg := fmt.Sprintf("the node-local DNS cache is bound at %s again and gets every query: dnstune stands by", p.Address())
		p.o.Log.Info(msg)
		sendEvent(p.o.Events, "Normal", "NodeLocalDNSCoverEnded", msg)
	}
	p.writeCondition(ctx)
	return bound
}

// Probed says whether a probe has run (part of the agent's readiness).
func (p *CacheProbe) Probed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.h.run > 0 || p.status.Covering
}

// Status is what the probe knows now.
func (p *CacheProbe) Status() CacheStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.status
	s.Answering = slices.Clone(s.Answering)
	return s
}

// writeCondition writes the Node condition when it changed (and again after
// a failed write).
func (p *CacheProbe) writeCondition(ctx context.Context) {
	if p.o.Conditions == nil {
		return
	}
	p.mu.Lock()
	if !p.dirty {
		p.mu.Unlock()
		return
	}
	c := p.status.Condition(p.since, time.Now())
	p.mu.Unlock()
	if err := p.o.Conditions.SetCondition(ctx, c); err != nil {
		p.o.Log.Error(err, "cannot set the Node condition", "type", string(ConditionType))
		return
	}
	p.mu.Lock()
	p.dirty = false
	p.mu.Unlock()
}

// Run probes until ctx ends: every Interval while the verdict holds, every
// Confirm while a change is being confirmed, the well-known addresses every
// Interval, and, while the cover runs, looks at the cache's port every
// CoverCheckInterval. It stops the cover (giving its address back) before
// it returns.
func (p *CacheProbe) Run(ctx context.Context) {
	check := time.NewTicker(coverCheckInterval)
	defer check.Stop()
	var lastWK time.Time
	next := time.Now()
	for {
		if now := time.Now(); !now.Before(next) {
			if now.Sub(lastWK) >= p.o.Interval {
				lastWK = now
				go p.ProbeWellKnown(ctx)
			}
			p.Probe(ctx)
			wait := p.o.Interval
			p.mu.Lock()
			if !p.h.settled() {
				wait = p.o.Confirm
			}
			p.mu.Unlock()
			next = time.Now().Add(wait)
		}
		select {
		case <-ctx.Done():
			if p.o.Cover != nil && p.o.Cover.Active() {
				if err := p.o.Cover.Stop(); err != nil {
					p.o.Log.Error(err, "giving the node-local address back at exit")
				} else {
					p.o.Log.Info("stopped covering at exit", "address", p.Address())
				}
			}
			return
		case <-check.C:
			if p.o.Cover != nil && p.o.Cover.Active() {
				p.checkCover(ctx)
			}
		case <-time.After(time.Until(next)):
		}
	}
}

// Describe implements prometheus.Collector.
func (p *CacheProbe) Describe(ch chan<- *prometheus.Desc) {
	p.up.Describe(ch)
	p.duration.Describe(ch)
	p.failures.Describe(ch)
	p.verdict.Describe(ch)
	p.covering.Describe(ch)
	p.wkUp.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *CacheProbe) Collect(ch chan<- prometheus.Metric) {
	p.up.Collect(ch)
	p.duration.Collect(ch)
	p.failures.Collect(ch)
	p.verdict.Collect(ch)
	p.covering.Collect(ch)
	p.wkUp.Collect(ch)
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
