package node

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// neighbourEntries is the seeds' size: tens of thousands of neighbour
// entries on one node (IPv4 and IPv6 each).
const neighbourEntries = 30000

// withNeighbours runs f with n permanent IPv4 and n IPv6 neighbour entries
// in a network namespace of the benchmark's own (198.18.0.0/15 and
// fd00:198:18::/64 on a veth pair inside it; nothing leaves it), so the
// node's table really holds them; the namespace, and with it every entry,
// is deleted after. Root only.
func withNeighbours(b *testing.B, n int, f func()) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to create a network namespace and its neighbour entries (run make bench as root)")
	}
	ns := fmt.Sprintf("dnstune-scale-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		b.Skipf("ip netns add: %v: %s", err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	var batch strings.Builder
	batch.WriteString("link add name nbr0 type veth peer name nbr1\nlink set nbr0 up\nlink set nbr1 up\n")
	for i := range n {
		fmt.Fprintf(&batch, "neigh add 198.%d.%d.%d lladdr 02:00:00:%02x:%02x:%02x dev nbr0 nud permanent\n", 18+i>>16&1, i>>8&0xff, i&0xff, i>>16&0xff, i>>8&0xff, i&0xff)
		fmt.Fprintf(&batch, "neigh add fd00:198:18::%x lladdr 02:00:01:%02x:%02x:%02x dev nbr0 nud permanent\n", i+1, i>>16&0xff, i>>8&0xff, i&0xff)
	}
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("ip -batch (%d neighbours): %v: %s", 2*n, err, out)
	}
	st, err := Proc{}.Stat(IPv4)
	if err != nil {
		b.Fatal(err)
	}
	if st.Entries < uint64(n) {
		b.Fatalf("the ARP table holds %d entries after adding %d", st.Entries, n)
	}
	f()
}

// cpuTime is the CPU time used so far by this process (who:
// RUSAGE_SELF) or by its waited-for children (RUSAGE_CHILDREN).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScrapeAt30kNeighbours is one node-agent scrape (a Check of both
// families and conntrack, then a Collect of every metric) with 30,000 IPv4
// and 30,000 IPv6 entries in the real kernel's tables, in CPU time per
// scrape, beside what walking the entries as text (/proc/net/arp and
// ipv6's neighbour list, as a tool that counts lines does) costs. The agent
// reads the kernel's own counts (/proc/net/stat/*), whose cost does not
// grow with the table.
func BenchmarkScrapeAt30kNeighbours(b *testing.B) {
	withNeighbours(b, neighbourEntries, func() {
		b.Run("monitor", func(b *testing.B) {
			m := NewMonitor(MonitorOptions{})
			reg := prometheus.NewRegistry()
			reg.MustRegister(m)
			b.ReportAllocs()
			cpu0 := cpuTime(syscall.RUSAGE_SELF)
			for b.Loop() {
				if err := m.Check(); err != nil {
					b.Fatal(err)
				}
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime(syscall.RUSAGE_SELF)-cpu0).Microseconds())/float64(b.N), "cpu-µs/scrape")
			if got := testutil.ToFloat64(m.overflows.WithLabelValues("ipv4")); got != 0 {
				b.Errorf("the monitor saw %v overflows with permanent entries", got)
			}
		})
		b.Run("walk-entries-as-text", func(b *testing.B) {
			b.ReportAllocs()
			cpu0, child0 := cpuTime(syscall.RUSAGE_SELF), cpuTime(syscall.RUSAGE_CHILDREN)
			for b.Loop() {
				lines := 0
				for _, args := range [][]string{{"-4", "neigh", "show"}, {"-6", "neigh", "show"}} {
					cmd := exec.Command("ip", append([]string{"-n", fmt.Sprintf("dnstune-scale-%d", os.Getpid())}, args...)...)
					out, err := cmd.StdoutPipe()
					if err != nil {
						b.Fatal(err)
					}
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
					data, _ := io.ReadAll(out)
					_ = cmd.Wait()
					lines += strings.Count(string(data), "\n")
				}
				if lines < 2*neighbourEntries {
					b.Fatalf("%d entries listed, want %d", lines, 2*neighbourEntries)
				}
			}
			used := cpuTime(syscall.RUSAGE_SELF) - cpu0 + cpuTime(syscall.RUSAGE_CHILDREN) - child0
			b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/scrape")
		})
	})
}
