package node

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// fakeProc lays out a /proc tree with the given thresholds (nil: family
// absent) and the sample stat files of testdata/.
func fakeProc(t *testing.T, v4, v6 *Thresholds) Proc {
	t.Helper()
	root := t.TempDir()
	for f, th := range map[Family]*Thresholds{IPv4: v4, IPv6: v6} {
		if th == nil {
			continue
		}
		dir := filepath.Join(root, "sys", "net", string(f), "neigh", "default")
		mustMkdir(t, dir)
		for i, v := range th {
			writeFile(t, filepath.Join(dir, "gc_thresh"+strconv.Itoa(i+1)), itoa(v)+"\n")
		}
	}
	stat := filepath.Join(root, "net", "stat")
	mustMkdir(t, stat)
	for _, name := range []string{"arp_cache", "ndisc_cache", "nf_conntrack"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(stat, name), string(b))
	}
	return Proc{Root: root}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func itoa(v int) string { return strconv.Itoa(v) }

func kernelDefaults() *Thresholds { return &Thresholds{128, 512, 1024} }

func TestPlan(t *testing.T) {
	tests := []struct {
		name         string
		current, tgt Thresholds
		want         Thresholds
		err          string
	}{
		{"raise all", Thresholds{128, 512, 1024}, DefaultTargets, DefaultTargets, ""},
		{"keep higher values", Thresholds{10000, 40000, 80000}, DefaultTargets, Thresholds{10000, 40000, 80000}, ""},
		{"partial: only thresh3 higher", Thresholds{128, 512, 100000}, DefaultTargets, Thresholds{8192, 32768, 100000}, ""},
		{"merged out of order", Thresholds{40000, 512, 1024}, DefaultTargets, Thresholds{}, "out of order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planTune(tt.current, tt.tgt)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Plan = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseThresholds(t *testing.T) {
	if got, err := ParseThresholds("8192,32768,65536"); err != nil || got != DefaultTargets {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"1,2", "a,b,c", "3,2,1", "0,1,2", "1,2,3000000000", "2147483648,2147483648,2147483648"} {
		if _, err := ParseThresholds(bad); err == nil {
			t.Errorf("ParseThresholds(%q) accepted", bad)
		}
	}
	// INT_MAX itself is the kernel's limit and fits.
	if _, err := ParseThresholds("1,2,2147483647"); err != nil {
		t.Errorf("INT_MAX refused: %v", err)
	}
	_, err := ParseThresholds("8192,32768,3000000000")
	if err == nil || !strings.Contains(err.Error(), "gc_thresh3") || !strings.Contains(err.Error(), "2147483647") {
		t.Errorf("error should name gc_thresh3 and the limit: %v", err)
	}
}

// A target the kernel cannot hold is refused before anything is written.
func TestTuneRefusesOverIntMax(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), kernelDefaults())
	_, err := Tune(TuneOptions{Proc: p, Target: Thresholds{8192, 32768, 3000000000}})
	if err == nil || !strings.Contains(err.Error(), "INT_MAX") {
		t.Fatalf("Tune accepted a threshold over INT_MAX: %v", err)
	}
	for _, f := range []Family{IPv4, IPv6} {
		if got, _ := p.Thresholds(f); got != *kernelDefaults() {
			t.Errorf("%s thresholds written: %v", f, got)
		}
	}
}

func TestTune(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), &Thresholds{128, 512, 100000})
	res, err := Tune(TuneOptions{Proc: p})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range res.Changes {
		lines = append(lines, c.String())
	}
	want := []string{
		"net.ipv4.neigh.default.gc_thresh1: 128 -> 8192",
		"net.ipv4.neigh.default.gc_thresh2: 512 -> 32768",
		"net.ipv4.neigh.default.gc_thresh3: 1024 -> 65536",
		"net.ipv6.neigh.default.gc_thresh1: 128 -> 8192",
		"net.ipv6.neigh.default.gc_thresh2: 512 -> 32768",
		"net.ipv6.neigh.default.gc_thresh3: 100000 (kept)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got, _ := p.Thresholds(IPv6); got != (Thresholds{8192, 32768, 100000}) {
		t.Fatalf("ipv6 on disk = %v", got)
	}
	// Idempotent: a second run keeps everything.
	res, err = Tune(TuneOptions{Proc: p})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Changes {
		if c.Before != c.After {
			t.Errorf("second run changed %s", c)
		}
	}
}

func TestTuneDryRun(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), kernelDefaults())
	res, err := Tune(TuneOptions{Proc: p, DryRun: true})
	if err != nil || len(res.Changes) != 6 || res.Changes[2].After != 65536 {
		t.Fatalf("dry run plan: %v %v", res.Changes, err)
	}
	if got, _ := p.Thresholds(IPv4); got != *kernelDefaults() {
		t.Fatalf("dry run wrote: %v", got)
	}
}

func TestTuneIPv6Absent(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), nil)
	res, err := Tune(TuneOptions{Proc: p})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 3 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "ipv6") || !strings.Contains(res.Skipped[0], "skipped") {
		t.Fatalf("changes %v, skipped %q", res.Changes, res.Skipped)
	}
}

func TestTuneNotHostNetwork(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), nil)
	// A pod's own netns: neigh/default exists, gc_thresh* do not.
	for i := 1; i <= 3; i++ {
		if err := os.Remove(filepath.Join(p.Root, "sys/net/ipv4/neigh/default/gc_thresh"+string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Tune(TuneOptions{Proc: p})
	if !errors.Is(err, ErrNotHostNetwork) || !strings.Contains(err.Error(), "hostNetwork: true") {
		t.Fatalf("err = %v", err)
	}
}

func TestTuneReadOnly(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), nil)
	dir := filepath.Join(p.Root, "sys/net/ipv4/neigh/default")
	if os.Geteuid() == 0 {
		// Root ignores file modes: make the directory a read-only bind mount,
		// as /proc/sys is in an unprivileged container (EROFS).
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			t.Skipf("root but cannot bind-mount (%v); the read-only case needs a mount or a non-root user", err)
		}
		defer func() { _ = unix.Unmount(dir, unix.MNT_DETACH) }()
		if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount read-only: %v", err)
		}
	} else {
		for i := 1; i <= 3; i++ {
			if err := os.Chmod(filepath.Join(dir, "gc_thresh"+strconv.Itoa(i)), 0o444); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err := Tune(TuneOptions{Proc: p})
	if !errors.Is(err, ErrNoPrivilege) || !strings.Contains(err.Error(), "privileged: true (or CAP_NET_ADMIN with a writable /proc/sys)") {
		t.Fatalf("err = %v", err)
	}
	if got, _ := p.Thresholds(IPv4); got != *kernelDefaults() {
		t.Fatalf("read-only values changed: %v", got)
	}
}

func TestParseStat(t *testing.T) {
	f, err := os.Open("testdata/arp_cache")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	s, err := ParseStat(f)
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries != 0x402 {
		t.Errorf("entries = %d, want 1026 (not summed over CPUs)", s.Entries)
	}
	if s.Counters["table_fulls"] != 0x10 || s.Counters["forced_gc_runs"] != 0x1c || s.Counters["allocs"] != 0xa012 {
		t.Errorf("counters not summed over 4 CPUs: %v", s.Counters)
	}
	for name, in := range map[string]string{
		"empty":      "",
		"bad header": "foo bar\n1 2\n",
		"not hex":    "entries x\n1 zz\n",
		"short row":  "entries a b\n1 2\n",
		"no rows":    "entries a\n",
	} {
		if _, err := ParseStat(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAutoRaise(t *testing.T) {
	cur := Thresholds{1024, 4096, 8192}
	if _, ok := AutoRaise(cur, 6000, false, 65536); ok {
		t.Error("raised below 80%")
	}
	if got, ok := AutoRaise(cur, 7000, false, 65536); !ok || got != (Thresholds{2048, 8192, 16384}) {
		t.Errorf("past 80%%: %v %v", got, ok)
	}
	if got, ok := AutoRaise(cur, 10, true, 65536); !ok || got != (Thresholds{2048, 8192, 16384}) {
		t.Errorf("overflow: %v %v", got, ok)
	}
	if got, ok := AutoRaise(cur, 8000, false, 12288); !ok || got != (Thresholds{1536, 6144, 12288}) {
		t.Errorf("capped: %v %v", got, ok)
	}
	if _, ok := AutoRaise(Thresholds{1, 2, 65536}, 65536, true, 65536); ok {
		t.Error("raised past the cap")
	}
}

type events []string

func (e *events) Event(typ, reason, msg string) { *e = append(*e, typ+" "+reason+": "+msg) }

func scrape(t *testing.T, m *Monitor) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	srv := httptest.NewServer(m.Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestMonitorMetrics(t *testing.T) {
	p := fakeProc(t, &DefaultTargets, &DefaultTargets)
	m := NewMonitor(MonitorOptions{Proc: p, Log: logr.Discard()})
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	text := scrape(t, m)
	for _, want := range []string{
		`dnstune_node_neighbor_entries{family="ipv4"} 1026`,
		`dnstune_node_neighbor_entries{family="ipv6"} 4`,
		`dnstune_node_neighbor_gc_thresh{family="ipv4",threshold="3"} 65536`,
		`dnstune_node_neighbor_gc_thresh{family="ipv4",threshold="1"} 8192`,
		`dnstune_node_neighbor_fill_ratio{family="ipv4"} 0.015655517578125`,
		`dnstune_node_neighbor_table_fulls_total{family="ipv4"} 16`,
		`dnstune_node_neighbor_forced_gc_runs_total{family="ipv4"} 28`,
		`dnstune_node_neighbor_threshold_drift{family="ipv4"} 0`,
		`dnstune_node_conntrack_insert_failed_total 50`,
		`dnstune_node_conntrack_drop_total 3`,
		`dnstune_node_conntrack_early_drop_total 1`,
		`dnstune_node_conntrack_clash_resolved_total 9`,
		`dnstune_node_conntrack_entries 200`,
		"# TYPE dnstune_node_neighbor_table_fulls_total counter",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestMonitorDriftAndOverflow(t *testing.T) {
	p := fakeProc(t, &DefaultTargets, nil)
	ev := &events{}
	m := NewMonitor(MonitorOptions{Proc: p, Events: ev, Log: logr.Discard()})
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if len(*ev) != 0 {
		t.Fatalf("events on a healthy first check: %v", *ev)
	}
	// Someone lowers gc_thresh3, and the table overflows (table_fulls grows).
	writeFile(t, filepath.Join(p.Root, "sys/net/ipv4/neigh/default/gc_thresh3"), "1024\n")
	arp, _ := os.ReadFile(filepath.Join(p.Root, "net/stat/arp_cache"))
	writeFile(t, filepath.Join(p.Root, "net/stat/arp_cache"), strings.Replace(string(arp), "0000000f\n", "0000002f\n", 1))
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	text := scrape(t, m)
	for _, want := range []string{
		`dnstune_node_neighbor_threshold_drift{family="ipv4"} 1`,
		`dnstune_node_neighbor_overflows_detected_total{family="ipv4"} 1`,
		`dnstune_node_neighbor_table_fulls_total{family="ipv4"} 48`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	joined := strings.Join(*ev, "\n")
	if !strings.Contains(joined, "Warning NeighborTableOverflow: ipv4 neighbour table overflowed: table_fulls 16 -> 48") ||
		!strings.Contains(joined, "Warning NeighborThresholdDrift: ipv4 neighbour thresholds are 8192,32768,1024") {
		t.Fatalf("events = %v", *ev)
	}
	// Drift is reported once, not on every check.
	_ = m.Check()
	if n := strings.Count(strings.Join(*ev, "\n"), "NeighborThresholdDrift"); n != 1 {
		t.Errorf("drift reported %d times", n)
	}
}

func TestMonitorReapply(t *testing.T) {
	p := fakeProc(t, kernelDefaults(), nil)
	m := NewMonitor(MonitorOptions{Proc: p, Reapply: true, Log: logr.Discard()})
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Thresholds(IPv4); got != DefaultTargets {
		t.Fatalf("not re-applied: %v", got)
	}
	if !strings.Contains(scrape(t, m), `dnstune_node_neighbor_threshold_drift{family="ipv4"} 0`) {
		t.Error("drift still reported after re-apply")
	}
}

func TestMonitorAutoRaise(t *testing.T) {
	small := Thresholds{256, 512, 1024} // entries 1026 > 80% of 1024
	p := fakeProc(t, &small, nil)
	ev := &events{}
	m := NewMonitor(MonitorOptions{Proc: p, Target: small, AutoRaise: true, MaxGCThresh3: 4096, Events: ev, Log: logr.Discard()})
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Thresholds(IPv4); got != (Thresholds{512, 1024, 2048}) {
		t.Fatalf("after auto-raise: %v", got)
	}
	_ = m.Check() // 1026 > 80% of 2048? no: 1638 — stays
	if got, _ := p.Thresholds(IPv4); got != (Thresholds{512, 1024, 2048}) {
		t.Fatalf("raised again without pressure: %v", got)
	}
	if !strings.Contains(strings.Join(*ev, "\n"), "Normal NeighborThresholdRaised") {
		t.Fatalf("events = %v", *ev)
	}
}

// An auto-raise under IPv4 pressure raises only IPv4's target: the untouched
// IPv6 table is not reported as drifted.
func TestMonitorAutoRaiseDriftPerFamily(t *testing.T) {
	small := Thresholds{256, 512, 1024} // IPv4 entries 1026 > 80% of 1024; IPv6 has 4
	p := fakeProc(t, &small, &small)
	ev := &events{}
	m := NewMonitor(MonitorOptions{Proc: p, Target: small, AutoRaise: true, MaxGCThresh3: 4096, Events: ev, Log: logr.Discard()})
	for range 2 {
		if err := m.Check(); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := p.Thresholds(IPv4); got != (Thresholds{512, 1024, 2048}) {
		t.Fatalf("IPv4 after auto-raise: %v", got)
	}
	if got, _ := p.Thresholds(IPv6); got != small {
		t.Fatalf("IPv6 touched: %v", got)
	}
	text := scrape(t, m)
	for _, want := range []string{
		`dnstune_node_neighbor_threshold_drift{family="ipv4"} 0`,
		`dnstune_node_neighbor_threshold_drift{family="ipv6"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(strings.Join(*ev, "\n"), "NeighborThresholdDrift") {
		t.Errorf("false drift event: %v", *ev)
	}
}

func TestMonitorReadiness(t *testing.T) {
	p := fakeProc(t, &DefaultTargets, nil)
	m := NewMonitor(MonitorOptions{Proc: p, Log: logr.Discard()})
	srv := httptest.NewServer(m.Handler(prometheus.NewRegistry()))
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 503 {
		t.Fatal("before the first check: want healthz 200, readyz 503")
	}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if get("/readyz") != 200 {
		t.Fatal("readyz not 200 after a check")
	}
}
