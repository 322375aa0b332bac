// Command clash reproduces the conntrack insert race behind 5-second DNS
// stalls, as the kernel's own selftest does (tools/testing/selftests/net/
// netfilter, udpclash.c): for each round, a new UDP socket connected to the
// DNS Service address, and -threads OS threads that, released together,
// each send one query on it, so that packets of one new flow (one tuple)
// cross the DNAT on several CPUs at once. glibc sends the A and AAAA
// queries of a lookup the same way (-threads 2). It then waits up to
// -timeout for every answer and prints one JSON line: rounds, queries
// sent, answers received, and rounds that lost at least one answer.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type result struct {
	Rounds     int `json:"rounds"`
	Sent       int `json:"sent"`
	Received   int `json:"received"`
	LostRounds int `json:"lostRounds"`
}

func main() {
	server := flag.String("server", "10.96.0.10:53", "DNS Service address")
	name := flag.String("name", "race.test", "name asked (A and AAAA alternately)")
	rounds := flag.Int("rounds", 1000, "rounds, each a new socket (a new conntrack entry)")
	threads := flag.Int("threads", 2, "threads sending on the round's socket at once")
	timeout := flag.Duration("timeout", time.Second, "how long a round waits for its answers")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*server)
	if err != nil {
		fail(err)
	}
	var r result
	for i := 0; i < *rounds; i++ {
		got, err := round(ap, *name, *threads, *timeout)
		if err != nil {
			fail(err)
		}
		r.Rounds++
		r.Sent += *threads
		r.Received += got
		if got < *threads {
			r.LostRounds++
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "clash:", err)
	os.Exit(1)
}

// round sends threads queries on one new socket at once and counts the
// distinct answers within timeout.
func round(server netip.AddrPort, name string, threads int, timeout time.Duration) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(server.Port()), Addr: server.Addr().As4()}); err != nil {
		return 0, err
	}
	base := uint16(time.Now().UnixNano())
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, threads)
	for t := 0; t < threads; t++ {
		ready.Add(1)
		done.Add(1)
		q := query(base+uint16(t), name, t%2 == 1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			ready.Done()
			<-start
			if _, err := unix.Write(fd, q); err != nil {
				errs <- err
			}
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	close(errs)
	for err := range errs {
		return 0, fmt.Errorf("send: %w", err)
	}
	seen := map[uint16]bool{}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for len(seen) < threads {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return 0, err
		}
		n, err := unix.Read(fd, buf)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if err == unix.ECONNREFUSED {
				continue // an ICMP error for one query: that answer is lost
			}
			return 0, fmt.Errorf("receive: %w", err)
		}
		if n >= 12 {
			id := binary.BigEndian.Uint16(buf)
			if id-base < uint16(threads) {
				seen[id] = true
			}
		}
	}
	return len(seen), nil
}

// query is a DNS query for name, A or AAAA, recursion desired.
func query(id uint16, name string, aaaa bool) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD; 1 question
	for _, label := range splitLabels(name) {
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0)
	qtype := uint16(1)
	if aaaa {
		qtype = 28
	}
	b = binary.BigEndian.AppendUint16(b, qtype)
	return binary.BigEndian.AppendUint16(b, 1)
}

func splitLabels(name string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			if i > start {
				out = append(out, name[start:i])
			}
			start = i + 1
		}
	}
	return out
}
