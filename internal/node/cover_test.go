package node

import (
	"context"
	"encoding/binary"
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

// fakeLinks is an AddressLinks that records what the cover did.
type fakeLinks struct {
	mu    sync.Mutex
	local bool
	calls []string
}

func (f *fakeLinks) HasLocal(netip.Addr) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.local, nil
}
func (f *fakeLinks) Add(a netip.Addr, label string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "add "+a.String()+" "+label)
	return nil
}
func (f *fakeLinks) Del(a netip.Addr, label string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "del "+a.String()+" "+label)
	return nil
}
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

// TestCoverTakesOverAndGivesBack plays an outage on loopback: a cache (a
// fake answering 10.0.0.1, bound with SO_REUSEPORT as CoreDNS binds) dies;
// after two failed probes the agent answers at its address over UDP and
// TCP with kube-dns's answers (10.0.0.2), adding the address when no
// interface holds it; the cache comes back and binds beside the cover; the
// cover sees it, steps aside and removes the address; two probes later the
// cache counts as up. Events, the condition and the metrics follow.
func TestCoverTakesOverAndGivesBack(t *testing.T) {
	port := freePort(t)
	at := fmt.Sprintf("127.0.0.1:%d", port)
	cacheReply := func(q []byte) []byte { return answer(t, q, dnsmessage.RCodeSuccess, nil) }
	cache := startFakeDNSAt(t, at, true, cacheReply)
	upstream := startFakeUpstream(t)
	links := &fakeLinks{local: false}
	cover, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Links: links,
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
	ctx := context.Background()
	p.Probe(ctx)
	p.Probe(ctx)
	if v := p.Status().Verdict; v != VerdictUp {
		t.Fatalf("verdict %s with the cache answering", v)
	}
	if got := ask(t, "udp", at); got != "10.0.0.1" {
		t.Fatalf("the cache answered %q", got)
	}
	_, _ = ev.take(), conds.take()

	cache.stop() // the outage
	p.Probe(ctx)
	if cover.Active() {
		t.Fatal("the cover started after one failed probe")
	}
	p.Probe(ctx)
	if !cover.Active() {
		t.Fatalf("no cover after two failed probes: verdict %s, events %q", p.Status().Verdict, ev.take())
	}
	if got := links.take(); !slices.Equal(got, []string{"add 127.0.0.1 " + CoverLabel}) {
		t.Errorf("address calls %q, want the address added with its label", got)
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := ask(t, network, at); got != "10.0.0.2" {
			t.Errorf("covered %s query answered %q, want kube-dns's 10.0.0.2", network, got)
		}
	}
	if got := ev.take(); len(got) != 2 || !strings.HasPrefix(got[0], "Warning NodeLocalDNSDown") || !strings.HasPrefix(got[1], "Normal NodeLocalDNSCovered") || !strings.Contains(got[1], upstream) {
		t.Errorf("events %q, want NodeLocalDNSDown then NodeLocalDNSCovered naming %s", got, upstream)
	}
	if c := conds.take(); len(c) == 0 || c[len(c)-1].Reason != ReasonCovered {
		t.Errorf("conditions %+v, want the last one Covered", c)
	}
	if busy, err := cover.CacheListening(); err != nil || busy {
		t.Errorf("CacheListening = %v, %v with only the cover bound", busy, err)
	}
	// A server without SO_REUSEPORT cannot take the port from the cover:
	// the cover relies on the cache binding as CoreDNS does.
	if c, err := net.ListenPacket("udp", at); err == nil {
		_ = c.Close()
		t.Error("a plain bind succeeded beside the cover")
	}

	p.Probe(ctx) // covered: no probe, the cache is not back
	if !cover.Active() {
		t.Fatal("the cover stopped with no cache listening")
	}
	startFakeDNSAt(t, at, true, cacheReply) // the cache is back, beside the cover
	p.Probe(ctx)
	if cover.Active() {
		t.Fatal("the cover kept the port with the cache listening")
	}
	if got := links.take(); !slices.Equal(got, []string{"del 127.0.0.1 " + CoverLabel}) {
		t.Errorf("address calls %q, want the address removed", got)
	}
	if got := ev.take(); len(got) != 1 || !strings.HasPrefix(got[0], "Normal NodeLocalDNSCoverEnded") {
		t.Errorf("events %q, want NodeLocalDNSCoverEnded", got)
	}
	for range 2 {
		p.Probe(ctx)
	}
	if v := p.Status().Verdict; v != VerdictUp {
		t.Errorf("verdict %s after the cache came back", v)
	}
	if got := ask(t, "udp", at); got != "10.0.0.1" {
		t.Errorf("after the give-back the answer came from %q, want the cache's 10.0.0.1", got)
	}
	if c := conds.take(); len(c) == 0 || c[len(c)-1].Status != corev1.ConditionTrue {
		t.Errorf("conditions %+v, want the last one True", c)
	}
}

// TestCoverLeavesAHeldAddress: when an interface already holds the
// address (the cache's, left behind), the cover neither adds nor removes it,
// until that interface goes away.
func TestCoverLeavesAHeldAddress(t *testing.T) {
	port := freePort(t)
	links := &fakeLinks{local: true}
	up := startFakeUpstream(t)
	c, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1"), Port: port, Links: links,
		Upstream: func(context.Context) (string, error) { return up, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "udp", "127.0.0.1:"+strconv.Itoa(port)); got != "10.0.0.2" {
		t.Errorf("covered answer %q", got)
	}
	if added, err := c.Ensure(); added || err != nil {
		t.Errorf("Ensure with the address held = %v, %v, want nothing done", added, err)
	}
	if got := links.take(); len(got) != 0 {
		t.Errorf("address calls %q with the address already held, want none", got)
	}
	// The interface that held it goes away: the cover takes the address
	// onto lo, and gives it back at Stop.
	links.mu.Lock()
	links.local = false
	links.mu.Unlock()
	if added, err := c.Ensure(); !added || err != nil {
		t.Errorf("Ensure with the address gone = %v, %v, want it added", added, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := links.take(); !slices.Equal(got, []string{"add 127.0.0.1 " + CoverLabel, "del 127.0.0.1 " + CoverLabel}) {
		t.Errorf("address calls %q, want the address added when it left, removed at Stop", got)
	}
	if _, err := NewCover(CoverOptions{Address: netip.MustParseAddr("127.0.0.1")}); err == nil || !strings.Contains(err.Error(), "--nodelocal-cover-upstream") {
		t.Errorf("a cover without upstream: %v", err)
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
	p, err := NewCacheProbe(ProbeOptions{Address: netip.MustParseAddr(host), Port: pn, Links: &fakeLinks{local: false},
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
