package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel lab: network namespaces on a bridge, as a bridge CNI puts pods
// on a node. It lowers the node-wide neighbour thresholds, makes every
// namespace talk to every other until the kernel refuses new entries
// (table_fulls grows, traffic fails: the field reports' failure, for real),
// then runs Tune and shows the same traffic succeed.
//
// Addresses are 198.18.0.0/24 (RFC 2544 benchmarking range) inside
// namespaces the test creates; nothing leaves them. Every sysctl it changes
// is restored, and everything it creates is deleted, even on failure; a run
// that was killed is cleaned up by the next one (labStateFile).

const (
	labPrefix = "dnstune-lab-"
	labHosts  = 8
	labPort   = 7777
)

var labStateFile = filepath.Join(os.TempDir(), "dnstune-lab-sysctls.json")

// The main thread stays with the main goroutine, so inNetns never moves it
// into a lab namespace: /proc/net (= /proc/self/net) follows the main thread.
func init() { runtime.LockOSThread() }

func TestKernelNeighbourOverflow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel lab skipped: needs root to create network namespaces and write /proc/sys (run make test as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("kernel lab skipped: the ip command (iproute2) is not installed")
	}
	proc := Proc{}
	if _, err := proc.Thresholds(IPv4); err != nil {
		t.Skipf("kernel lab skipped: %v", err)
	}
	labPreClean(t)

	orig, err := proc.Thresholds(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(orig)
	if err := os.WriteFile(labStateFile, state, 0o600); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	names := labNames(id)
	t.Cleanup(func() {
		restoreThresholds(t, proc, orig)
		for _, ns := range names {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		_ = os.Remove(labStateFile)
	})
	labSetup(t, names)

	small := Thresholds{4, 8, 16}
	writeThresholds(t, proc, small)
	before := labRound(t, proc, names)
	t.Logf("gc_thresh %s: %d/%d probes answered, %d failed; table_fulls +%d; entries peaked at %d",
		small, before.ok, before.total, before.total-before.ok, before.fullsDelta, before.peakEntries)

	res, err := Tune(TuneOptions{Proc: proc, Families: []Family{IPv4}})
	if err != nil {
		t.Fatalf("Tune: %v", err)
	}
	for _, c := range res.Changes {
		t.Log("node tune: " + c.String())
	}
	after := labRound(t, proc, names)
	t.Logf("gc_thresh %s: %d/%d probes answered, %d failed; table_fulls +%d; entries peaked at %d",
		DefaultTargets, after.ok, after.total, after.total-after.ok, after.fullsDelta, after.peakEntries)

	if before.fullsDelta == 0 || before.ok == before.total {
		t.Errorf("with gc_thresh %s the table should overflow and traffic fail; got table_fulls +%d, %d/%d answered", small, before.fullsDelta, before.ok, before.total)
	}
	if after.ok != after.total || after.fullsDelta != 0 {
		t.Errorf("after node tune every probe should be answered and table_fulls stay put; got %d/%d, table_fulls +%d", after.ok, after.total, after.fullsDelta)
	}
}

func labNames(id string) []string {
	names := []string{labPrefix + id + "-br"}
	for i := range labHosts {
		names = append(names, fmt.Sprintf("%s%s-%d", labPrefix, id, i))
	}
	return names
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func labSetup(t *testing.T, names []string) {
	br := names[0]
	for _, ns := range names {
		ipCmd(t, "netns", "add", ns)
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", br, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", br, "link", "set", "br0", "up")
	for i, ns := range names[1:] {
		peer := fmt.Sprintf("p%d", i)
		ipCmd(t, "-n", br, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", br, "link", "set", peer, "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", fmt.Sprintf("198.18.0.%d/24", i+1), "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
	}
}

// labPreClean removes what an interrupted run left: its namespaces and its
// lowered thresholds.
func labPreClean(t *testing.T) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], labPrefix) {
			t.Logf("pre-clean: deleting leftover netns %s", f[0])
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	if b, err := os.ReadFile(labStateFile); err == nil {
		var orig Thresholds
		if json.Unmarshal(b, &orig) == nil && orig.Validate() == nil && orig[0] > 0 {
			t.Logf("pre-clean: restoring gc_thresh %s left lowered by an interrupted run", orig)
			restoreThresholds(t, Proc{}, orig)
		}
		_ = os.Remove(labStateFile)
	}
}

// writeThresholds sets exact values (lowering included, which Tune never does).
func writeThresholds(t *testing.T, p Proc, v Thresholds) {
	t.Helper()
	cur, err := p.Thresholds(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	order := []int{0, 1, 2} // lowering: smallest first keeps them ordered
	if v[2] > cur[2] {
		order = []int{2, 1, 0}
	}
	for _, i := range order {
		if err := p.SetThreshold(IPv4, i, v[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func restoreThresholds(t *testing.T, p Proc, v Thresholds) {
	t.Helper()
	writeThresholds(t, p, v)
	if got, _ := p.Thresholds(IPv4); got != v {
		t.Errorf("failed to restore gc_thresh: have %s, want %s", got, v)
	}
}

type labResult struct {
	ok, total   int
	fullsDelta  uint64
	peakEntries uint64
}

// labRound flushes every namespace's neighbours, then sends one UDP probe
// from every namespace to every other, each answered by an echo server.
func labRound(t *testing.T, p Proc, names []string) labResult {
	hosts := names[1:]
	for _, ns := range hosts {
		ipCmd(t, "-n", ns, "neigh", "flush", "all")
	}
	time.Sleep(200 * time.Millisecond)
	statBefore, err := p.Stat(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	var servers []net.PacketConn
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	for i, ns := range hosts {
		conn, err := listenIn(ns, fmt.Sprintf("198.18.0.%d:%d", i+1, labPort))
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, conn)
		go echo(conn)
	}
	var (
		mu   sync.Mutex
		res  labResult
		wg   sync.WaitGroup
		peak uint64
	)
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() { // sample the table size while traffic runs
		defer close(sampled)
		for {
			if s, err := p.Stat(IPv4); err == nil {
				mu.Lock()
				peak = max(peak, s.Entries)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	for i, ns := range hosts {
		for j := range hosts {
			if i == j {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := probe(ns, fmt.Sprintf("198.18.0.%d", i+1), fmt.Sprintf("198.18.0.%d:%d", j+1, labPort))
				mu.Lock()
				res.total++
				if ok {
					res.ok++
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(stop)
	<-sampled // the sampler has stopped writing peak
	statAfter, err := p.Stat(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	res.fullsDelta = statAfter.Counters["table_fulls"] - statBefore.Counters["table_fulls"]
	res.peakEntries = max(peak, statAfter.Entries)
	return res
}

// inNetns runs f on a thread that has joined the named network namespace.
// The thread is never returned to the scheduler (it ends with the goroutine).
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer func() { _ = unix.Close(fd) }()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func listenIn(ns, addr string) (net.PacketConn, error) {
	var conn net.PacketConn
	err := inNetns(ns, func() (err error) {
		conn, err = net.ListenPacket("udp4", addr)
		return err
	})
	return conn, err
}

func echo(c net.PacketConn) {
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteTo(buf[:n], from)
	}
}

// probe sends a datagram from ns (bound to src) to dst and waits up to 3s
// for the echo, resending every second as a resolver would.
func probe(ns, src, dst string) bool {
	c, err := listenIn(ns, src+":0")
	if err != nil {
		return false
	}
	defer func() { _ = c.Close() }()
	to, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		return false
	}
	buf := make([]byte, 64)
	for range 3 {
		_, _ = c.WriteTo([]byte("dnstune"), to) // ENOBUFS etc. count as a lost datagram
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := c.ReadFrom(buf); err == nil {
			return true
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			time.Sleep(time.Second)
		}
	}
	return false
}
