// Command racecmd is `make race-lab`: it measures the conntrack insert race
// behind 5-second DNS stalls on this machine's kernel, through the real
// kube-proxy in iptables and nftables mode (e2e/lab, RunRace), and writes
// the figures, with the node's conntrack counters, into EFFECT.md's race
// section.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/lab"
)

const (
	beginMarker = "<!-- race: written by make race-lab (go run ./e2e/lab/racecmd) -->"
	endMarker   = "<!-- /race -->"
)

func main() {
	rounds := flag.Int("rounds", 5000, "clash client rounds per shape")
	lookups := flag.Int("lookups", 1000, "glibc lookups per resolv.conf")
	out := flag.String("out", "EFFECT.md", "report to put the section into (empty: stdout only)")
	coredns := flag.String("coredns", "", "coredns binary")
	kubeProxy := flag.String("kube-proxy", "", "kube-proxy binary")
	flag.Parse()
	if err := run(*rounds, *lookups, *out, *coredns, *kubeProxy); err != nil {
		fmt.Fprintln(os.Stderr, "race lab:", err)
		os.Exit(1)
	}
}

func run(rounds, lookups int, out, coredns, kubeProxy string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "dnstune-race-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	assets, err := framework.AssetsDir()
	if err != nil {
		return err
	}
	client, err := lab.BuildClient(dir)
	if err != nil {
		return err
	}
	clash, err := lab.BuildClash(dir)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## The 5-second race on this kernel, through kube-proxy\n\n", beginMarker)
	fmt.Fprintf(&b, "Measured by `make race-lab` on %s, %s. ", time.Now().UTC().Format("2006-01-02"), framework.Machine())
	b.WriteString(`The real kube-proxy v1.37.1 (built from the Go module
proxy) DNATs the kube-dns Service to three CoreDNS endpoints, each behind a
link of its own, so that answers come back through the node's conntrack as
from another node's pod. A client in a pod namespace sends through it: the
clash client (after the kernel's udpclash selftest: N threads released
together, each sending one query on the round's new socket, so that packets
of one new flow cross the DNAT on both CPUs at once; N=2 is glibc's A and
AAAA), and glibc's getaddrinfo under each resolv.conf. The counters are the
node namespace's /proc/net/stat/nf_conntrack (what dnstune's node agent
exports as dnstune_node_conntrack_*) before and after.

`)
	for _, mode := range []string{"iptables", "nftables"} {
		fmt.Printf("· kube-proxy %s mode\n", mode)
		rep, err := lab.RunRace(ctx, lab.RaceOptions{Dir: filepath.Join(dir, mode), CoreDNS: coredns, Client: client, Clash: clash,
			Etcd: filepath.Join(assets, "etcd"), APIServer: filepath.Join(assets, "kube-apiserver"), KubeProxy: kubeProxy,
			Mode: mode, Rounds: rounds, Lookups: lookups, Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "### kube-proxy %s mode\n\n%s\n", mode, rep.Table())
		var sent, got, clashes, lost uint64
		for _, c := range rep.Clash {
			sent, got = sent+uint64(c.Sent), got+uint64(c.Received)
			clashes += c.Counters.ClashRes
			lost += c.Counters.InsertFailed + c.Counters.Drop
		}
		verdict := "every clash was resolved: no insert failed, no answer was lost"
		if lost > 0 || got < sent {
			verdict = fmt.Sprintf("%d inserts failed or packets were dropped, and %d of %d answers were lost", lost, sent-got, sent)
		}
		fmt.Fprintf(&b, "In %s mode the race happened %d times (clashres) in %d queries sent to collide, and %s.\n\n", mode, clashes, sent, verdict)
	}
	b.WriteString(`glibc's own lookups raced not once here: it sends A and AAAA with one
sendmmsg call from one thread, so both packets cross the DNAT one after the
other on one CPU; the clash needs them on two CPUs at once (the clash
client), as a multi-threaded application sharing a socket, or a busy node's
packet steering, gives them. Before Linux 5.6 the losing packet of such a
clash was dropped and the lookup waited out its 5 s timeout; 4.19
(ed07d9a021df) and 5.0 (4e35c1cb9460) had resolved clashes of identical
tuples and same-origin NAT, 5.6 ("netfilter: conntrack: allow insertion of
clashing entries", 6a757c07e51f) those of DNAT to different backends, the
kube-dns case. What still costs a lookup exactly 5 s on a current kernel is
a packet lost for any other reason (a restarting or overloaded CoreDNS, a
full conntrack table, loss on the node): the effect lab above measures
that, and timeout:1 is what shortens it.

`)
	b.WriteString(endMarker + "\n")
	fmt.Print(b.String())
	if out == "" {
		return nil
	}
	return framework.ReplaceSection(filepath.Join(framework.RepoRoot(), out), beginMarker, endMarker, b.String())
}
