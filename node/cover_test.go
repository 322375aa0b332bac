package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
)

func TestHysteresis(t *testing.T) {
	for _, tc := range []struct {
		probes string // u: answered, d: failed
		want   string // verdict after each
	}{
		{"uu", "?U"},
		{"dd", "?D"},
		{"ud", "??"},
		{"uudu", "?UUU"},     // one lost probe changes nothing
		{"uuddd", "?UUDD"},   // two in a row do
		{"dduduu", "?DDDDU"}, // alternating never settles
	} {
		h := hysteresis{need: DefaultProbesToChange}
		var got strings.Builder
		for _, c := range tc.probes {
			v, _ := h.observe(c == 'u')
			got.WriteByte(map[Verdict]byte{VerdictUnknown: '?', VerdictUp: 'U', VerdictDown: 'D'}[v])
		}
		if got.String() != tc.want {
			t.Errorf("probes %s: verdicts %s, want %s", tc.probes, got.String(), tc.want)
		}
	}
}

func TestConditionOfStatus(t *testing.T) {
	since := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		s      CacheStatus
		status corev1.ConditionStatus
		reason string
		msg    []string
	}{
		{CacheStatus{Address: "169.254.20.10:53", Verdict: VerdictUp, Last: ProbeResult{Up: true, Detail: "NOERROR", Duration: 400 * time.Microsecond}, Answering: []string{"169.254.10.11 (AKS LocalDNS (pod traffic))", "169.254.10.10 (AKS LocalDNS (node traffic))"}},
			corev1.ConditionTrue, ReasonAnswers, []string{"169.254.20.10:53 answers (NOERROR in 400µs)", "answering: 169.254.10.11 (AKS LocalDNS (pod traffic)), 169.254.10.10"}},
		{CacheStatus{Address: "169.254.20.10:53", Verdict: VerdictDown, Failures: 3, Last: ProbeResult{Reason: ProbeTimeout, Detail: "no answer from 169.254.20.10:53 within 1s"}},
			corev1.ConditionFalse, ReasonNoAnswer, []string{"does not answer (last failure: no answer from 169.254.20.10:53 within 1s, 3 probes in a row)", "answering: none"}},
		{CacheStatus{Address: "169.254.20.10:53", Verdict: VerdictDown, Covering: true, Upstream: "10.0.0.11:53", Last: ProbeResult{Detail: "nothing listens"}},
			corev1.ConditionFalse, ReasonCovered, []string{"dnstune answers there, forwarding to kube-dns at 10.0.0.11:53"}},
		{CacheStatus{Address: "169.254.20.10:53", Last: ProbeResult{Up: true, Detail: "NOERROR"}},
			corev1.ConditionUnknown, ReasonProbing, []string{"probing"}},
		// Up, one failed probe: still up (hysteresis), and it says so.
		{CacheStatus{Address: "169.254.20.10:53", Verdict: VerdictUp, Failures: 1, Last: ProbeResult{Reason: ProbeNotLocal, Detail: "no socket of the cache is bound"}},
			corev1.ConditionTrue, ReasonAnswers, []string{"answered until the last probe, which failed (no socket of the cache is bound); probing again"}},
	} {
		c := tc.s.Condition(since, since.Add(time.Minute))
		if c.Type != ConditionType || c.Status != tc.status || c.Reason != tc.reason || !c.LastTransitionTime.Time.Equal(since) {
			t.Errorf("%+v: condition %+v, want %s %s since %s", tc.s, c, tc.status, tc.reason, since)
		}
		for _, m := range tc.msg {
			if !strings.Contains(c.Message, m) {
				t.Errorf("condition message %q lacks %q", c.Message, m)
			}
		}
		var want []string
		for _, a := range tc.s.Answering {
			want = append(want, strings.Fields(a)[0])
		}
		if got := AnsweringInCondition(c); !slices.Equal(got, want) {
			t.Errorf("AnsweringInCondition(%q) = %q, want %q", c.Message, got, want)
		}
	}
}

func TestParseProcNetUDP(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Lines as the kernel prints them: a listener on 169.254.20.10:53, one
	// on 127.0.0.53:53, and a connected socket (skipped).
	text := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0A14FEA9:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41234 2 0000000000000000 0
  200: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 1999 2 0000000000000000 0
  300: 0100007F:A1B2 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0
`
	if err := os.WriteFile(filepath.Join(root, "net", "udp"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Proc{Root: root}.udpListeners()
	if err != nil {
		t.Fatal(err)
	}
	want := []udpSocket{{netip.MustParseAddrPort("169.254.20.10:53"), 41234}, {netip.MustParseAddrPort("127.0.0.53:53"), 1999}}
	if !slices.Equal(got, want) {
		t.Errorf("listeners %v, want %v", got, want)
	}
	if _, err := parseProcAddr("0A14FEA9"); err == nil {
		t.Error("an address without a port was accepted")
	}
}

// fakeLinks is an AddressLinks that records what the cover did: other
// is an interface that is not the cover's holding the address (the
// cache's), ours the cover's lo:dnstune.
type fakeLinks struct {
	mu          sync.Mutex
	other, ours bool
	calls       []string
}

func (f *fakeLinks) HasLocal(_ netip.Addr, except string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.other || (f.ours && except != coverLabel), nil
}
func (f *fakeLinks) Add(a netip.Addr, label string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ours = true
	f.calls = append(f.calls, "add "+a.String()+" "+label)
	return nil
}
func (f *fakeLinks) Del(a netip.Addr, label string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ours = false
	f.calls = append(f.calls, "del "+a.String()+" "+label)
	return nil
}
func (f *fakeLinks) setOther(v bool) { f.mu.Lock(); f.other = v; f.mu.Unlock() }
func (f *fakeLinks) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// aRecordOf returns the first A record of a DNS answer.
func aRecordOf(t *testing.T, b []byte) string {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		t.Fatalf("answer: %v", err)
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A).String()
		}
	}
	return ""
}

// ask sends one A query for name over network (udp or tcp) to addr and
// returns the first A record of the answer.
func ask(t *testing.T, network, addr string) string {
	t.Helper()
	q, err := buildQuery(0x4242, "web.default.svc.cluster.local.")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", network, addr, err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "tcp" {
		q = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...) // #nosec G115 -- a query is short
	}
	if _, err := conn.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	if network == "tcp" {
		if _, err := io.ReadFull(conn, buf[:2]); err != nil {
			t.Fatalf("tcp answer length: %v", err)
		}
		n := binary.BigEndian.Uint16(buf)
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			t.Fatal(err)
		}
		return aRecordOf(t, buf[:n])
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("%s %s: no answer: %v", network, addr, err)
	}
	return aRecordOf(t, buf[:n])
}

// startFakeUpstream is kube-dns on loopback, over UDP and TCP, answering
// every A query with 10.0.0.2.
func startFakeUpstream(t *testing.T) string {
	t.Helper()
	reply := func(q []byte) []byte {
		return answer(t, q, dnsmessage.RCodeSuccess, func(m *dnsmessage.Message) { m.Answers[0].Body = &dnsmessage.AResource{A: [4]byte{10, 0, 0, 2}} })
	}
	u := startFakeDNS(t, reply)
	l, err := net.Listen("tcp", u.addr())
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
			go func() {
				defer func() { _ = c.Close() }()
				var n [2]byte
				if _, err := io.ReadFull(c, n[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				a := reply(q)
				_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)) // #nosec G115 -- short
			}()
		}
	}()
	return u.addr()
}

// freePort is a loopback port free for UDP and TCP.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = u.Close()
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port for UDP and TCP")
	return 0
}

// answers asks n queries over UDP and counts the answers by A record:
// 10.0.0.1 is the cache's, 10.0.0.2 kube-dns's through the cover.
func answers(t *testing.T, at string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		got[ask(t, "udp", at)]++
	}
	return got
}

func cacheReply(t *testing.T) func([]byte) []byte {
	return func(q []byte) []byte { return answer(t, q, dnsmessage.RCodeSuccess, nil) }
}

// TestCoverStandsByBesideACache: the cache is bound first (its interface
// holds the address). The cover binds beside it and every query still goes
// to the cache; the cache's socket closes and the very next query is
// answered by the cover, before any look at the port; a cache that binds
// again gets every query once the cover has looked (a leave and a join
// between two looks: it binds again, last) or at once (it looked between).
func TestCoverStandsByBesideACache(t *testing.T) {
	port := freePort(t)
	at := fmt.Sprintf("127.0.0.1:%d", port)
	cache := startFakeDNSAt(t, at, true, cacheReply(t))
	upstream := startFakeUpstream(t)
	links := &fakeLinks{other: true}
	c, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Links: links,
		Upstream: func(context.Context) (string, error) { return upstream, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	refresh := func(want bool) {
		t.Helper()
		if bound, err := c.Refresh(ctx); err != nil || bound != want {
			t.Fatalf("Refresh = %v, %v; want cache bound %v", bound, err, want)
		}
	}
	refresh(true)
	if got := answers(t, at, 40); got["10.0.0.1"] != 40 {
		t.Fatalf("standing by beside the cache: answers %v, want all 40 from the cache", got)
	}
	cache.stop()
	if got := answers(t, at, 40); got["10.0.0.2"] != 40 {
		t.Fatalf("the cache's socket closed: answers %v, want all 40 from the cover at once", got)
	}
	// A leave and a join between two looks: the cover binds again, last.
	cache = startFakeDNSAt(t, at, true, cacheReply(t))
	refresh(true)
	if got := answers(t, at, 40); got["10.0.0.1"] != 40 {
		t.Fatalf("the cache bound again (one look after): answers %v, want all 40 from the cache", got)
	}
	// A look between the leave and the join: the cache gets every query
	// from its first one.
	cache.stop()
	refresh(false)
	if got := answers(t, at, 10); got["10.0.0.2"] != 10 {
		t.Fatalf("no cache: answers %v, want the cover's", got)
	}
	startFakeDNSAt(t, at, true, cacheReply(t))
	if got := answers(t, at, 40); got["10.0.0.1"] != 40 {
		t.Fatalf("the cache bound again (no look yet): answers %v, want all 40 from the cache", got)
	}
	before := c.received.Load()
	refresh(true)
	refresh(true)
	if got := answers(t, at, 40); got["10.0.0.1"] != 40 || c.received.Load() != before {
		t.Errorf("standing by: answers %v, the cover read %d queries; want all from the cache and none at the cover", got, c.received.Load()-before)
	}
	if calls := links.take(); len(calls) != 0 {
		t.Errorf("address calls %q with the cache's interface holding it, want none", calls)
	}
}

// TestCoverWithoutACache: no interface holds the address. The cover adds it
// to lo and answers over UDP and TCP with kube-dns's answers; a cache that
// binds gets every query at once; the cover takes its address off lo once
// the cache's interface holds it, and puts it back when that goes away.
func TestCoverWithoutACache(t *testing.T) {
	port := freePort(t)
	at := fmt.Sprintf("127.0.0.1:%d", port)
	upstream := startFakeUpstream(t)
	links := &fakeLinks{}
	c, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Links: links,
		Upstream: func(context.Context) (string, error) { return upstream, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	if got := links.take(); !slices.Equal(got, []string{"add 127.0.0.1 " + coverLabel}) {
		t.Errorf("address calls %q, want the address added to lo with its label", got)
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := ask(t, network, at); got != "10.0.0.2" {
			t.Errorf("%s query answered %q, want kube-dns's 10.0.0.2 through the cover", network, got)
		}
	}
	// A server that does not share the port cannot bind beside the cover.
	if conn, err := net.ListenPacket("udp", at); err == nil {
		_ = conn.Close()
		t.Error("a bind without SO_REUSEPORT succeeded beside the cover")
	}
	startFakeDNSAt(t, at, true, cacheReply(t))
	if got := answers(t, at, 40); got["10.0.0.1"] != 40 {
		t.Errorf("a cache bound beside the cover: answers %v, want all 40 from the cache at once", got)
	}
	if bound, err := c.Refresh(ctx); !bound || err != nil {
		t.Errorf("Refresh = %v, %v with the cache bound", bound, err)
	}
	if got := links.take(); len(got) != 0 {
		t.Errorf("address calls %q while only the cover's lo holds the address, want none", got)
	}
	links.setOther(true) // the cache's interface holds it now
	if _, err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	links.setOther(false) // and goes away
	if _, err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := links.take(); !slices.Equal(got, []string{"del 127.0.0.1 " + coverLabel, "add 127.0.0.1 " + coverLabel}) {
		t.Errorf("address calls %q, want the cover's address off lo while the cache's interface held it, back after", got)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := links.take(); !slices.Equal(got, []string{"del 127.0.0.1 " + coverLabel}) {
		t.Errorf("address calls at Stop %q, want the address removed", got)
	}
	// An agent killed while covering left its address: the next one takes
	// it as its own and removes it when it is no longer needed.
	links.mu.Lock()
	links.ours = true
	links.mu.Unlock()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := links.take(); !slices.Equal(got, []string{"del 127.0.0.1 " + coverLabel}) {
		t.Errorf("address calls %q with a leftover lo:dnstune, want it adopted and removed at Stop", got)
	}
	if _, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1")}); err == nil || !strings.Contains(err.Error(), "--nodelocal-cover-upstream") {
		t.Errorf("a cover without upstream: %v", err)
	}
}

// TestCoverRefusedByACacheThatWillNotShare: a cache bound without
// SO_REUSEPORT keeps the port; the cover says so and leaves nothing behind.
func TestCoverRefusedByACacheThatWillNotShare(t *testing.T) {
	port := freePort(t)
	at := fmt.Sprintf("127.0.0.1:%d", port)
	startFakeDNSAt(t, at, false, cacheReply(t))
	links := &fakeLinks{}
	c, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Links: links,
		Upstream: func(context.Context) (string, error) { return "127.0.0.1:1", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrCacheWontShare) {
		t.Errorf("Start beside a cache that does not share: %v, want ErrCacheWontShare", err)
	}
	if c.Active() {
		t.Error("the cover is active after a failed start")
	}
	if got := links.take(); !slices.Equal(got, []string{"add 127.0.0.1 " + coverLabel, "del 127.0.0.1 " + coverLabel}) {
		t.Errorf("address calls %q, want the address it added removed again", got)
	}
}

// TestProbeWithCover follows the agent through an outage on loopback: the
// cache answers, its socket closes (the cover answers at once; two probes
// later the verdict is down and the condition says Covered), it binds
// again (the cover stands by; two probes later it is up). Events, the
// condition and the covering gauge follow.
func TestProbeWithCover(t *testing.T) {
	port := freePort(t)
	at := fmt.Sprintf("127.0.0.1:%d", port)
	cache := startFakeDNSAt(t, at, true, cacheReply(t))
	upstream := startFakeUpstream(t)
	cover, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Links: &fakeLinks{other: true},
		Upstream: func(context.Context) (string, error) { return upstream, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ev, conds := &recordedEvents{}, &recordedConditions{}
	p, err := NewCacheProbe(ProbeOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Timeout: 300 * time.Millisecond,
		Events: ev, Conditions: conds, Cover: cover, WellKnown: []WellKnownAddress{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cover.Stop() })
	ctx := context.Background()
	covering := func() float64 { return testutil.ToFloat64(p.covering.WithLabelValues("127.0.0.1")) }
	p.Probe(ctx)
	p.Probe(ctx)
	if v := p.Status().Verdict; v != VerdictUp || !cover.Active() || covering() != 0 {
		t.Fatalf("verdict %s, cover active %v, covering %v; want up, standing by", v, cover.Active(), covering())
	}
	_, _ = ev.take(), conds.take()

	cache.stop()
	if got := ask(t, "udp", at); got != "10.0.0.2" {
		t.Errorf("the cache's socket closed: answered by %q, want the cover at once", got)
	}
	p.Probe(ctx)
	if covering() != 1 {
		t.Errorf("covering = %v after the cache's socket closed", covering())
	}
	p.Probe(ctx)
	if v := p.Status().Verdict; v != VerdictDown {
		t.Errorf("verdict %s after two probes without the cache", v)
	}
	if got := ev.take(); len(got) != 2 || !strings.HasPrefix(got[0], "Normal NodeLocalDNSCovered") || !strings.Contains(got[0], upstream) || !strings.HasPrefix(got[1], "Warning NodeLocalDNSDown") {
		t.Errorf("events %q, want NodeLocalDNSCovered naming %s, then NodeLocalDNSDown", got, upstream)
	}
	if c := conds.take(); len(c) == 0 || c[len(c)-1].Reason != ReasonCovered {
		t.Errorf("conditions %+v, want the last one Covered", c)
	}

	startFakeDNSAt(t, at, true, cacheReply(t)) // back, beside the cover
	if got := ask(t, "udp", at); got != "10.0.0.1" {
		t.Errorf("the cache bound again: answered by %q, want the cache", got)
	}
	p.Probe(ctx)
	p.Probe(ctx)
	if v := p.Status().Verdict; v != VerdictUp || covering() != 0 {
		t.Errorf("verdict %s, covering %v after the cache came back", v, covering())
	}
	if got := ev.take(); len(got) != 2 || !strings.HasPrefix(got[0], "Normal NodeLocalDNSCoverEnded") || !strings.HasPrefix(got[1], "Normal NodeLocalDNSUp") {
		t.Errorf("events %q, want NodeLocalDNSCoverEnded then NodeLocalDNSUp", got)
	}
	if c := conds.take(); len(c) == 0 || c[len(c)-1].Status != corev1.ConditionTrue {
		t.Errorf("conditions %+v, want the last one True", c)
	}
}

// TestProbeAsksOnlyAddressesTheNodeHolds: an address no interface of the
// node holds is not asked (whatever answers there from the host is off the
// node, as on networks that answer DNS on any address), and counts as down
// with reason not-local; so does a well-known one.
func TestProbeAsksOnlyAddressesTheNodeHolds(t *testing.T) {
	var mu sync.Mutex
	asked := 0
	srv := startFakeDNS(t, func(q []byte) []byte {
		mu.Lock()
		asked++
		mu.Unlock()
		return answer(t, q, dnsmessage.RCodeSuccess, nil)
	})
	host, port, _ := net.SplitHostPort(srv.addr())
	pn, _ := strconv.Atoi(port)
	p, err := NewCacheProbe(ProbeOptions{Address: netip.MustParseAddr(host), Port: pn, Links: &fakeLinks{},
		WellKnown: []WellKnownAddress{{"127.0.0.2", "test"}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r := p.Probe(context.Background()); r.Up || r.Reason != ProbeNotLocal || !strings.Contains(r.Detail, "no interface of this node holds "+host) {
			t.Errorf("probe = %+v, want not-local", r)
		}
	}
	p.ProbeWellKnown(context.Background())
	if s := p.Status(); s.Verdict != VerdictDown || len(s.Answering) != 0 {
		t.Errorf("status %+v, want down and no well-known address answering", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 0 {
		t.Errorf("%d queries sent to an address the node does not hold", asked)
	}
}
