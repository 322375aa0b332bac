package node

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
)

// fakeDNS is a UDP server on loopback that answers each query with what
// reply returns (nil: no answer).
type fakeDNS struct {
	conn  net.PacketConn
	wg    sync.WaitGroup
	reply func(q []byte) []byte
}

func startFakeDNS(t *testing.T, reply func(q []byte) []byte) *fakeDNS {
	t.Helper()
	return startFakeDNSAt(t, "127.0.0.1:0", false, reply)
}

// startFakeDNSAt is startFakeDNS on addr, with SO_REUSEPORT when reuse (as
// CoreDNS binds). Its stop (also run at cleanup) closes it.
func startFakeDNSAt(t *testing.T, addr string, reuse bool, reply func(q []byte) []byte) *fakeDNS {
	t.Helper()
	var lc net.ListenConfig
	if reuse {
		lc.Control = reusePort
	}
	c, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDNS{conn: c, reply: reply}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			q := append([]byte(nil), buf[:n]...)
			go func() {
				if r := f.reply(q); r != nil {
					_, _ = c.WriteTo(r, from)
				}
			}()
		}
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeDNS) stop() { _ = f.conn.Close(); f.wg.Wait() }

func (f *fakeDNS) addr() string { return f.conn.LocalAddr().String() }

// answer returns the response to q with rcode, or with the header changed
// by edit.
func answer(t *testing.T, q []byte, rcode dnsmessage.RCode, edit func(*dnsmessage.Message)) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil {
		t.Errorf("fake server got a malformed query: %v", err)
		return nil
	}
	m.Response, m.RCode = true, rcode
	if rcode == dnsmessage.RCodeSuccess {
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
			Body:   &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}},
		}}
	}
	if edit != nil {
		edit(&m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Error(err)
	}
	return b
}

func TestQuery(t *testing.T) {
	const name = "kubernetes.default.svc.cluster.local."
	tcpOnly := func(t *testing.T) string {
		// A server that listens on TCP only: the UDP port is closed, so
		// loopback answers the query with ICMP port unreachable.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		return l.Addr().String()
	}
	cases := []struct {
		name   string
		server func(t *testing.T) string
		up     bool
		reason string
		detail string
	}{
		{"answers NOERROR", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte { return answer(t, q, dnsmessage.RCodeSuccess, nil) }).addr()
		}, true, "", "NOERROR"},
		{"answers NXDOMAIN (the cache works; the name is unknown)", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte { return answer(t, q, dnsmessage.RCodeNameError, nil) }).addr()
		}, true, "", "NXDOMAIN"},
		{"answers SERVFAIL", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte { return answer(t, q, dnsmessage.RCodeServerFailure, nil) }).addr()
		}, false, ProbeRcode, "answered SERVFAIL"},
		{"answers REFUSED", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte { return answer(t, q, dnsmessage.RCodeRefused, nil) }).addr()
		}, false, ProbeRcode, "answered REFUSED"},
		{"never answers", func(t *testing.T) string {
			return startFakeDNS(t, func([]byte) []byte { return nil }).addr()
		}, false, ProbeTimeout, "no answer from"},
		{"answers after the timeout", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte {
				time.Sleep(600 * time.Millisecond)
				return answer(t, q, dnsmessage.RCodeSuccess, nil)
			}).addr()
		}, false, ProbeTimeout, "within 300ms"},
		{"slow, within the timeout", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte {
				time.Sleep(50 * time.Millisecond)
				return answer(t, q, dnsmessage.RCodeSuccess, nil)
			}).addr()
		}, true, "", "NOERROR"},
		{"TCP only", tcpOnly, false, ProbeRefused, "connection refused"},
		{"answers with another ID only (a stray packet)", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte {
				return answer(t, q, dnsmessage.RCodeSuccess, func(m *dnsmessage.Message) { m.ID++ })
			}).addr()
		}, false, ProbeTimeout, "no answer"},
		{"answers another question", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte {
				return answer(t, q, dnsmessage.RCodeSuccess, func(m *dnsmessage.Message) {
					m.Questions[0].Name = dnsmessage.MustNewName("example.com.")
				})
			}).addr()
		}, false, ProbeMismatch, "another question"},
		{"a query, not an answer", func(t *testing.T) string {
			return startFakeDNS(t, func(q []byte) []byte { return q }).addr()
		}, false, ProbeTimeout, "no answer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.server(t)
			r := Query(context.Background(), addr, name, 300*time.Millisecond)
			if r.Up != tc.up || r.Reason != tc.reason || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("Query = %+v, want up %v, reason %q, detail containing %q", r, tc.up, tc.reason, tc.detail)
			}
			if tc.up && r.Duration <= 0 {
				t.Errorf("duration %v of an answered probe", r.Duration)
			}
		})
	}
}

type recordedEvents struct {
	mu     sync.Mutex
	events []string
}

func (r *recordedEvents) Event(eventType, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, eventType+" "+reason+": "+message)
}

func (r *recordedEvents) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// recordedConditions is a ConditionSink that keeps what was written.
type recordedConditions struct {
	mu  sync.Mutex
	got []corev1.NodeCondition
}

func (r *recordedConditions) SetCondition(_ context.Context, c corev1.NodeCondition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, c)
	return nil
}

func (r *recordedConditions) take() []corev1.NodeCondition {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.got
	r.got = nil
	return c
}

// TestNodeLocalProbe follows a cache through down, up, one lost probe,
// down and up again: the raw gauge follows each probe, answered probes land
// in the histogram, failures are counted by reason, and the verdict, its
// Events and the Node condition change only after two probes in a row
// disagree with them.
func TestNodeLocalProbe(t *testing.T) {
	var mu sync.Mutex
	rcode := dnsmessage.RCodeServerFailure
	srv := startFakeDNS(t, func(q []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		return answer(t, q, rcode, nil)
	})
	set := func(c dnsmessage.RCode) { mu.Lock(); rcode = c; mu.Unlock() }
	host, port, _ := net.SplitHostPort(srv.addr())
	pn, _ := strconv.Atoi(port)
	ev := &recordedEvents{}
	conds := &recordedConditions{}
	p, err := NewCacheProbe(ProbeOptions{Address: netip.MustParseAddr(host), Port: pn, Timeout: 300 * time.Millisecond, Events: ev, Conditions: conds, WellKnown: []WellKnownAddress{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gauge := func() float64 { return testutil.ToFloat64(p.up.WithLabelValues(host)) }
	const (
		S = dnsmessage.RCodeSuccess
		F = dnsmessage.RCodeServerFailure
	)
	steps := []struct {
		rcode   dnsmessage.RCode
		up      float64
		verdict Verdict
		events  []string
		cond    corev1.ConditionStatus // "": not written
	}{
		{F, 0, VerdictUnknown, nil, corev1.ConditionUnknown},
		{F, 0, VerdictDown, []string{"Warning NodeLocalDNSDown: node-local DNS cache " + srv.addr() + " does not answer: " + srv.addr() + " answered SERVFAIL"}, corev1.ConditionFalse},
		{F, 0, VerdictDown, nil, ""},
		{S, 1, VerdictDown, nil, ""},
		{S, 1, VerdictUp, []string{"Normal NodeLocalDNSUp: node-local DNS cache " + srv.addr() + " answers (NOERROR in"}, corev1.ConditionTrue},
		{dnsmessage.RCodeNameError, 1, VerdictUp, nil, ""},
		{F, 0, VerdictUp, nil, ""}, // one lost probe
		{S, 1, VerdictUp, nil, ""},
		{dnsmessage.RCodeRefused, 0, VerdictUp, nil, ""},
		{F, 0, VerdictDown, []string{"Warning NodeLocalDNSDown"}, corev1.ConditionFalse},
		{S, 1, VerdictDown, nil, ""},
		{S, 1, VerdictUp, []string{"Normal NodeLocalDNSUp"}, corev1.ConditionTrue},
	}
	for i, s := range steps {
		set(s.rcode)
		p.Probe(ctx)
		if g := gauge(); g != s.up {
			t.Errorf("step %d (%s): dnstune_node_nodelocal_up = %v, want %v", i, s.rcode, g, s.up)
		}
		if v := p.Status().Verdict; v != s.verdict {
			t.Errorf("step %d (%s): verdict %s, want %s", i, s.rcode, v, s.verdict)
		}
		got := ev.take()
		if len(got) != len(s.events) {
			t.Errorf("step %d (%s): events %q, want %d like %q", i, s.rcode, got, len(s.events), s.events)
		} else {
			for j := range got {
				if !strings.HasPrefix(got[j], s.events[j]) {
					t.Errorf("step %d: event %q, want it to start with %q", i, got[j], s.events[j])
				}
			}
		}
		c := conds.take()
		switch {
		case s.cond == "" && len(c) != 0:
			t.Errorf("step %d: condition written %+v, want none (nothing changed)", i, c)
		case s.cond != "" && (len(c) != 1 || c[0].Status != s.cond || c[0].Type != ConditionType):
			t.Errorf("step %d: conditions %+v, want one %s %s", i, c, ConditionType, s.cond)
		}
	}
	if n := testutil.ToFloat64(p.failures.WithLabelValues(host, ProbeRcode)); n != 6 {
		t.Errorf("rcode failures = %v, want 6", n)
	}
	if n := testutil.CollectAndCount(p.duration); n != 1 {
		t.Errorf("histogram series = %d, want 1", n)
	}
	if err := testutil.CollectAndCompare(p, strings.NewReader(`
# HELP dnstune_node_nodelocal_up 1 when the node-local DNS cache answered the last probe (a DNS query over UDP) with NOERROR or NXDOMAIN, else 0.
# TYPE dnstune_node_nodelocal_up gauge
dnstune_node_nodelocal_up{address="127.0.0.1"} 1
`), "dnstune_node_nodelocal_up"); err != nil {
		t.Error(err)
	}
}

// TestNodeLocalProbeStartsDown: a cache that never answered is reported
// once, at the second probe (a node the cache does not run on).
func TestNodeLocalProbeStartsDown(t *testing.T) {
	srv := startFakeDNS(t, func([]byte) []byte { return nil })
	host, port, _ := net.SplitHostPort(srv.addr())
	pn, _ := strconv.Atoi(port)
	ev := &recordedEvents{}
	p, err := NewCacheProbe(ProbeOptions{Address: netip.MustParseAddr(host), Port: pn, Timeout: 100 * time.Millisecond, Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if r := p.Probe(context.Background()); r.Up || r.Reason != ProbeTimeout {
			t.Errorf("probe = %+v, want a timeout", r)
		}
	}
	if got := ev.take(); len(got) != 1 || !strings.Contains(got[0], "NodeLocalDNSDown") || !strings.Contains(got[0], "within 100ms") {
		t.Errorf("events %q, want one NodeLocalDNSDown naming the timeout", got)
	}
	if !p.Probed() {
		t.Error("Probed() is false after three probes")
	}
}

func TestNewCacheProbeRefuses(t *testing.T) {
	if _, err := NewCacheProbe(ProbeOptions{}); err == nil || !strings.Contains(err.Error(), "--nodelocal-address") {
		t.Errorf("no address: %v", err)
	}
	if _, err := NewCacheProbe(ProbeOptions{Address: netip.MustParseAddr("169.254.20.10"), Name: strings.Repeat("a", 64) + ".local"}); err == nil {
		t.Error("a 64-character label was accepted as the probe name")
	}
}
