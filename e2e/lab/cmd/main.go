// Command lab is `make lab`: it measures, on real CoreDNS and glibc, what
// dnstune's profiles change for a resolving application, and writes the
// table to EFFECT.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/lab"
)

func main() {
	n := flag.Int("n", 200, "lookups per cell")
	out := flag.String("out", "EFFECT.md", "where to write the report (empty: stdout only)")
	coredns := flag.String("coredns", "", "coredns binary (make lab builds it)")
	flag.Parse()
	if err := run(*n, *out, *coredns); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(n int, out, coredns string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "dnstune-lab-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	client, err := lab.BuildClient(dir)
	if err != nil {
		return err
	}
	rep, err := lab.Run(ctx, lab.Options{Dir: dir, CoreDNS: coredns, Client: client, N: n, Loss: []int{0, 10},
		Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	if err != nil {
		return err
	}
	table := rep.Table()
	fmt.Println()
	fmt.Print(table)
	fmt.Printf("\nnodelocal, cluster DNS unreachable: %d/%d lookups of cached names answered\nlab finished in %s\n", rep.CachedWhileDown, rep.CachedTried, rep.Elapsed.Round(time.Second))
	if out == "" {
		return nil
	}
	svg, err := rep.LatencyChart("external FQDN", 10)
	if err != nil {
		return err
	}
	chart := filepath.Join(framework.RepoRoot(), ChartPath)
	if err := os.MkdirAll(filepath.Dir(chart), 0o755); err != nil { // #nosec G301 -- a docs folder.
		return err
	}
	if err := os.WriteFile(chart, svg, 0o644); err != nil { // #nosec G306 -- a document.
		return err
	}
	path := filepath.Join(framework.RepoRoot(), out)
	doc := effectDoc(rep, n)
	// The real-node section comes from the real-node e2e (e2e/kubenode),
	// not from this lab: keep it.
	if old, err := os.ReadFile(path); err == nil { // #nosec G304 -- the report being rewritten.
		if i := strings.Index(string(old), realNodeMarker); i >= 0 {
			doc += "\n" + string(old[i:])
		}
	}
	return os.WriteFile(path, []byte(doc), 0o644) // #nosec G306 -- a document.
}

// realNodeMarker starts EFFECT.md's section measured on the real node.
const realNodeMarker = "<!-- on a real node: from make e2e-node (bin/node-resolvers-MODE.md, bin/node-nodelocal-MODE.md); make lab keeps it -->"

// ChartPath is the latency chart EFFECT.md and the README show.
const ChartPath = "docs/effect-latency.svg"

func machine() string {
	glibc, _ := exec.Command("ldd", "--version").Output()
	return framework.Machine() + ", " + strings.SplitN(string(glibc), "\n", 2)[0]
}

func effectDoc(rep *lab.Report, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# What dnstune changes for a resolving application

Measured by `+"`make lab`"+` (%s, %d lookups per cell, all in flight together) on
%s.

Real parts: CoreDNS v1.15 as the cluster DNS (authoritative for
`+"`cluster.local`"+` and for `+"`example.com`"+`, standing in for the internet;
NXDOMAIN elsewhere) and as the node-local cache (configured like the
NodeLocal DNSCache addon); glibc's `+"`getaddrinfo`"+` with `+"`AF_UNSPEC`"+`
(A and AAAA together) as the client; `+"`/etc/resolv.conf`"+` rendered the way
kubelet renders it from the pod spec, before and after `+"`dnstune mutate`"+`;
DNS packets dropped at random on arrival at the cluster DNS (nft `+"`numgen`"+`).

resolv.conf per pod:

`, time.Now().UTC().Format("2006-01-02"), n, machine())
	for _, p := range lab.Profiles {
		fmt.Fprintf(&b, "- **%s**:\n\n  ```\n  %s\n  ```\n", p, strings.ReplaceAll(strings.TrimSpace(rep.ResolvConf[p]), "\n", "\n  "))
	}
	b.WriteString("\n")
	b.WriteString(rep.Table())
	b.WriteString("\n![Lookup latency of www.example.com with 10% of DNS packets lost, plain vs resilient vs nodelocal](" + ChartPath + ")\n\n" +
		"Each curve is the share of the lookups done by a given time (log scale): the plain pod's steps at 5 s and 10 s are its resolver timeouts; resilient's at 1 s and 2 s are timeout:1; nodelocal's cache answers within milliseconds.\n")
	failed := func(profile string) (f, n int) {
		for _, c := range rep.Cells {
			if c.Profile == profile && c.Loss > 0 {
				f, n = f+c.Failures, n+c.N
			}
		}
		return f, n
	}
	f3, n3 := failed("resilient")
	f2, n2 := failed("resilient-a2")
	fmt.Fprintf(&b, `
**attempts:3 or 2.** Under loss, the resilient profile with attempts:3 failed
%d of %d lookups; with glibc's attempts:2 (resilient-a2) %d of %d, at the
same p50 and p90. A failed lookup is an error in the application; one more
1-second try is cheaper, so the default profile uses attempts:3.
`, f3, n3, f2, n2)
	fmt.Fprintf(&b, `
Queries per lookup are what the first DNS server the pod talks to received
(the cluster DNS; for nodelocal the node-local cache, whose own queries to
the cluster DNS are in brackets, from a cold cache). These are glibc's
figures: musl sends every query to every nameserver at once, so a musl pod
under nodelocal reaches the cluster DNS with all of them (measured on the
real node, below). With loss, dropped
packets are not counted, retries are. With the cluster DNS unreachable, the
nodelocal pod resolved %d of %d lookups of names already in the cache.

Reproduce: `+"`sudo make lab`"+` (root: network namespaces and nft; installs
nftables if missing; builds CoreDNS from the Go module proxy).
`, rep.CachedWhileDown, rep.CachedTried)
	return b.String()
}
