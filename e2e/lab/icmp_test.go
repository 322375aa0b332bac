//go:build e2e

package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
)

// A node-local cache that is gone while its address stays on the node
// ("DaemonSet deleted" in EFFECT.md's node-local fault table) is refused at
// once only while the kernel lets its refusals through: a query to a closed
// UDP port is answered with an ICMP port unreachable, and the kernel
// rate-limits those per destination (net.ipv4.icmp_ratelimit, with
// destination-unreachable in net.ipv4.icmp_ratemask). Past the burst, a
// query gets no answer and the resolver waits out its timeout, as glibc's
// timeout:1 once did on the real node. Measured between two network
// namespaces the test makes: a burst of queries to a closed port.
func TestPortUnreachableIsRateLimited(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root for network namespaces (make test as root runs it)")
	}
	a, b := fmt.Sprintf("dnstune-icmp-a-%d", os.Getpid()), fmt.Sprintf("dnstune-icmp-b-%d", os.Getpid())
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", a).Run()
		_ = exec.Command("ip", "netns", "del", b).Run()
	})
	for _, s := range [][]string{
		{"netns", "add", a}, {"netns", "add", b},
		// Both ends made inside the namespaces: nothing on the host.
		{"-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b},
		{"-n", a, "addr", "add", "10.253.0.1/24", "dev", "v0"},
		{"-n", b, "addr", "add", "10.253.0.2/24", "dev", "v1"},
		{"-n", a, "link", "set", "v0", "up"},
		{"-n", b, "link", "set", "v1", "up"},
	} {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	conn, err := dialIn(b, "10.253.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	// The link's duplicate address detection and neighbour resolution
	// first: one query until the first refusal (or 5 s).
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if query(t, conn, 200*time.Millisecond) == "refused" {
			break
		}
	}
	time.Sleep(7 * time.Second) // the per-destination bucket refills
	const n = 20
	got := map[string]int{}
	for range n {
		got[query(t, conn, 100*time.Millisecond)]++
	}
	limit, _ := os.ReadFile("/proc/sys/net/ipv4/icmp_ratelimit")
	t.Logf("%d queries in a burst to a closed port: %d refused at once, %d unanswered (net.ipv4.icmp_ratelimit=%s ms)", n, got["refused"], got["timeout"], strings.TrimSpace(string(limit)))
	if got["refused"] == 0 {
		t.Errorf("no query was refused: a closed port should answer with port unreachable")
	}
	if got["timeout"] == 0 {
		t.Errorf("every one of %d queries was refused at once: the kernel no longer rate-limits port unreachables per destination; EFFECT.md's node-local fault notes say it does", n)
	}
}

// dialIn makes a connected UDP socket in network namespace ns.
func dialIn(ns, addr string) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := framework.InNetNS("/run/netns/"+ns, func() error {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err == nil {
			conn, err = net.DialUDP("udp", nil, raddr)
		}
		return err
	})
	return conn, err
}

// query sends one datagram and says what came back: "refused" (port
// unreachable), "timeout" or "answer".
func query(t *testing.T, conn *net.UDPConn, wait time.Duration) string {
	t.Helper()
	if _, err := conn.Write([]byte("q")); err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) { // a refusal of the previous query, reported late
			return "refused"
		}
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	_, err := conn.Read(make([]byte, 64))
	var ne net.Error
	switch {
	case err == nil:
		return "answer"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		t.Fatal(err)
		return ""
	}
}
