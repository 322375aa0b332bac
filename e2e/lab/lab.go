// Package lab measures what dnstune changes for a resolving application,
// with parts nobody here wrote: CoreDNS as the cluster DNS (and as the
// node-local cache), glibc's getaddrinfo as the client, resolv.conf exactly
// as kubelet renders it from the pod spec before and after `dnstune mutate`,
// and packet loss on the way to the cluster DNS (nft numgen in the server's
// input hook, as a racy conntrack or a busy node drops packets).
//
// Everything runs in network namespaces it creates (198.18.0.0/15, the
// benchmarking range, and the node-local 169.254.20.10) and removes. Root only.
package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/resolvconf"
	"github.com/dnstune/dnstune/internal/offline"
	"github.com/dnstune/dnstune/policy"
)

// The main thread stays with the main goroutine, so inNetns never moves it.
func init() { runtime.LockOSThread() }

// Addresses of the lab.
const (
	ClusterDNS   = "198.18.1.10"
	clientAddr   = "198.18.1.2"
	NodeLocalDNS = "169.254.20.10"
	Namespace    = "shop" // the pods' Kubernetes namespace
	nsPrefix     = "dnstune-dnslab-"
)

// Names are the lookups the lab makes, one of each kind.
var Names = []struct{ Kind, Name string }{
	{"short service name", "web"},
	{"svc.namespace", "web.shop"},
	{"external FQDN", "www.example.com"},
}

// Profiles compared: a plain pod, and the same pod after dnstune mutate
// with each built-in profile; "resilient-a2" is resilient with glibc's
// attempts:2, measured against the default attempts:3.
var Profiles = []string{"plain", "resilient", "resilient-a2", "nodelocal"}

// Options for Run.
type Options struct {
	// Dir for the lab's files (Corefiles, zones, logs); required.
	Dir string
	// CoreDNS is the coredns binary; Client the cgo lookup client.
	CoreDNS, Client string
	// N lookups per cell, all in flight together.
	N int
	// Loss percentages of DNS packets dropped on the way to the cluster DNS.
	Loss []int
	// Logf receives progress; may be nil.
	Logf func(string, ...any)
}

// Cell is one measurement.
type Cell struct {
	Profile, Kind, Name string
	Loss                int
	N, Failures         int
	// QueriesPerLookup is what the cluster DNS received per lookup (for
	// nodelocal: what the node-local cache received from the client).
	QueriesPerLookup float64
	// UpstreamPerLookup is, for nodelocal, what the cache sent to the cluster DNS.
	UpstreamPerLookup float64
	P50, P90, P99     float64 // milliseconds
	// MS are every lookup's latency in milliseconds, sorted.
	MS []float64
}

// Report is a lab run.
type Report struct {
	Cells      []Cell
	ResolvConf map[string]string // per profile
	// CachedWhileDown counts lookups of cached names that succeeded from the
	// nodelocal client with the cluster DNS unreachable, out of CachedTried.
	CachedWhileDown, CachedTried int
	Elapsed                      time.Duration
}

type lab struct {
	o                      Options
	srv, cli               string
	clusterProc, cacheProc *framework.Process
}

// Run builds the topology, measures every cell, and tears everything down.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, nft)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("the lab needs %s (apt-get install iproute2 nftables)", tool)
		}
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	start := time.Now()
	id := strconv.Itoa(os.Getpid() % 100000)
	l := &lab{o: o, srv: nsPrefix + id + "-srv", cli: nsPrefix + id + "-cli"}
	preClean()
	defer l.teardown()
	if err := l.setup(); err != nil {
		return nil, err
	}
	rep = &Report{ResolvConf: map[string]string{}}
	for _, p := range Profiles {
		rc, err := renderResolvConf(p)
		if err != nil {
			return nil, err
		}
		rep.ResolvConf[p] = rc
	}
	if err := l.startCluster(); err != nil {
		return nil, err
	}
	for _, loss := range o.Loss {
		if err := l.setLoss(loss, false); err != nil {
			return nil, err
		}
		for _, p := range Profiles {
			for _, n := range Names {
				c, err := l.cell(ctx, p, n.Kind, n.Name, loss, rep.ResolvConf[p])
				if err != nil {
					return nil, err
				}
				o.Logf("%-9s %-18s loss %2d%%: %5.1f queries/lookup, p50 %7.1f ms, p90 %7.1f ms, p99 %7.1f ms, %d/%d failed",
					p, n.Kind, loss, c.QueriesPerLookup, c.P50, c.P90, c.P99, c.Failures, c.N)
				rep.Cells = append(rep.Cells, c)
			}
		}
	}
	// The node-local cache keeps answering cached names when the cluster DNS is gone.
	if err := l.setLoss(0, false); err != nil {
		return nil, err
	}
	if err := l.writeResolvConf(rep.ResolvConf["nodelocal"]); err != nil {
		return nil, err
	}
	if err := l.restartCache(); err != nil {
		return nil, err
	}
	names := []string{}
	for _, n := range Names {
		names = append(names, n.Name)
	}
	if _, err := l.lookups(ctx, names, 1); err != nil { // warm the cache
		return nil, err
	}
	if err := l.setLoss(100, true); err != nil {
		return nil, err
	}
	res, err := l.lookups(ctx, names, 5)
	if err != nil {
		return nil, err
	}
	for _, r := range res {
		rep.CachedTried++
		if r.Err == "" {
			rep.CachedWhileDown++
		}
	}
	o.Logf("nodelocal with the cluster DNS unreachable: %d/%d cached lookups answered", rep.CachedWhileDown, rep.CachedTried)
	rep.Elapsed = time.Since(start)
	return rep, nil
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput() // #nosec G204 -- fixed lab commands.
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func preClean() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
			_ = os.RemoveAll(filepath.Join("/etc/netns", f[0]))
		}
	}
}

func (l *lab) setup() error {
	steps := [][]string{
		{"ip", "netns", "add", l.srv},
		{"ip", "netns", "add", l.cli},
		{"ip", "-n", l.srv, "link", "set", "lo", "up"},
		{"ip", "-n", l.cli, "link", "set", "lo", "up"},
		{"ip", "-n", l.srv, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", l.cli},
		{"ip", "-n", l.srv, "addr", "add", ClusterDNS + "/24", "dev", "eth0"},
		{"ip", "-n", l.cli, "addr", "add", clientAddr + "/24", "dev", "eth0"},
		{"ip", "-n", l.srv, "link", "set", "eth0", "up"},
		{"ip", "-n", l.cli, "link", "set", "eth0", "up"},
		// NodeLocal DNSCache listens on a local address of the node (the
		// addon uses a dummy interface; loopback serves where the kernel
		// has no dummy driver).
		{"ip", "-n", l.cli, "addr", "add", NodeLocalDNS + "/32", "dev", "lo"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join("/etc/netns", l.cli), 0o755)
}

func (l *lab) teardown() {
	if l.cacheProc != nil {
		l.cacheProc.Stop()
	}
	if l.clusterProc != nil {
		l.clusterProc.Stop()
	}
	for _, ns := range []string{l.srv, l.cli} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	_ = os.RemoveAll(filepath.Join("/etc/netns", l.cli))
}

const clusterZone = `$ORIGIN cluster.local.
@                          3600 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
web.shop.svc               30   IN A   198.18.2.10
db.shop.svc                30   IN A   198.18.2.11
kube-dns.kube-system.svc   30   IN A   198.18.1.10
`

const externalZone = `$ORIGIN example.com.
@     3600 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30
www   300  IN A   198.18.3.10
api   300  IN A   198.18.3.11
`

// The cluster DNS: authoritative for cluster.local and example.com (the
// "internet"), NXDOMAIN for everything else, as kube-dns answers.
const clusterCorefile = `cluster.local:53 {
    bind 198.18.1.10
    file {{DIR}}/cluster.local.zone
    prometheus 127.0.0.1:9153
    errors
}
example.com:53 {
    bind 198.18.1.10
    file {{DIR}}/example.com.zone
    prometheus 127.0.0.1:9153
}
.:53 {
    bind 198.18.1.10
    template ANY ANY {
        rcode NXDOMAIN
    }
    prometheus 127.0.0.1:9153
}
`

// The node-local cache, configured as the NodeLocal DNSCache addon does:
// cluster.local forwarded over TCP to the cluster DNS, the rest cached and forwarded.
const cacheCorefile = `cluster.local:53 {
    bind 169.254.20.10
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . 198.18.1.10 {
        force_tcp
    }
    prometheus 127.0.0.1:9253
}
.:53 {
    bind 169.254.20.10
    cache 30
    forward . 198.18.1.10
    prometheus 127.0.0.1:9253
}
`

func (l *lab) write(name, content string) (string, error) {
	path := filepath.Join(l.o.Dir, name)
	return path, os.WriteFile(path, []byte(strings.ReplaceAll(content, "{{DIR}}", l.o.Dir)), 0o600)
}

func (l *lab) startCoreDNS(ns, name, corefile, probe string) (*framework.Process, error) {
	conf, err := l.write(name+".Corefile", corefile)
	if err != nil {
		return nil, err
	}
	p, err := framework.StartProcess(name, filepath.Join(l.o.Dir, name+".log"), nil, "ip", "netns", "exec", ns, l.o.CoreDNS, "-conf", conf)
	if err != nil {
		return nil, err
	}
	err = framework.Eventually(10*time.Second, 50*time.Millisecond, func() error {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("coredns %s exited: %w: %s", name, err, p.Tail(10))
		}
		_, err := dnsRequests(ns, probe)
		return err
	})
	return p, err
}

func (l *lab) startCluster() error {
	for name, zone := range map[string]string{"cluster.local.zone": clusterZone, "example.com.zone": externalZone} {
		if _, err := l.write(name, zone); err != nil {
			return err
		}
	}
	p, err := l.startCoreDNS(l.srv, "cluster-dns", clusterCorefile, "127.0.0.1:9153")
	l.clusterProc = p
	return err
}

func (l *lab) restartCache() error {
	if l.cacheProc != nil {
		l.cacheProc.Stop()
	}
	p, err := l.startCoreDNS(l.cli, "nodelocal-cache", cacheCorefile, "127.0.0.1:9253")
	l.cacheProc = p
	return err
}

// setLoss drops pct% of DNS packets arriving at the cluster DNS (UDP, or
// everything from the client with all set).
func (l *lab) setLoss(pct int, all bool) error {
	_ = exec.Command("ip", "netns", "exec", l.srv, "nft", "delete", "table", "inet", "dnslab").Run()
	if pct == 0 {
		return nil
	}
	rule := fmt.Sprintf("udp dport 53 numgen random mod 100 < %d drop", pct)
	if all {
		rule = "ip saddr " + clientAddr + " drop"
	}
	ruleset := "table inet dnslab {\n chain input {\n  type filter hook input priority 0; policy accept;\n  " + rule + "\n }\n}\n"
	cmd := exec.Command("ip", "netns", "exec", l.srv, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	return nil
}

func (l *lab) writeResolvConf(content string) error {
	return os.WriteFile(filepath.Join("/etc/netns", l.cli, "resolv.conf"), []byte(content), 0o644) // #nosec G306 -- resolv.conf is world-readable.
}

type lookup struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
	Err  string  `json:"err"`
}

// lookups runs the glibc client in the client namespace.
func (l *lab) lookups(ctx context.Context, names []string, n int) ([]lookup, error) {
	return runLookups(ctx, l.cli, l.o.Client, names, n, 200)
}

// runLookups runs the glibc lookup client in namespace ns, where `ip netns
// exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf, with
// n lookups of each name, parallel in flight.
func runLookups(ctx context.Context, ns, client string, names []string, n, parallel int) ([]lookup, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, client, "-names", strings.Join(names, ","), "-n", strconv.Itoa(n), "-parallel", strconv.Itoa(parallel)) // #nosec G204
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("lookup client: %w", err)
	}
	var res []lookup
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var r lookup
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("lookup client output %q: %w", sc.Text(), err)
		}
		res = append(res, r)
	}
	return res, nil
}

func (l *lab) cell(ctx context.Context, profile, kind, name string, loss int, rc string) (Cell, error) {
	c := Cell{Profile: profile, Kind: kind, Name: name, Loss: loss, N: l.o.N}
	if err := l.writeResolvConf(rc); err != nil {
		return c, err
	}
	if profile == "nodelocal" {
		if err := l.restartCache(); err != nil { // a cold cache for every cell
			return c, err
		}
	}
	clusterBefore, err := dnsRequests(l.srv, "127.0.0.1:9153")
	if err != nil {
		return c, err
	}
	cacheBefore := 0.0
	if profile == "nodelocal" {
		if cacheBefore, err = dnsRequests(l.cli, "127.0.0.1:9253"); err != nil {
			return c, err
		}
	}
	res, err := l.lookups(ctx, []string{name}, l.o.N)
	if err != nil {
		return c, err
	}
	clusterAfter, err := dnsRequests(l.srv, "127.0.0.1:9153")
	if err != nil {
		return c, err
	}
	var ms []float64
	for _, r := range res {
		ms = append(ms, r.MS)
		if r.Err != "" {
			c.Failures++
		}
	}
	slices.Sort(ms)
	c.MS = ms
	c.P50, c.P90, c.P99 = percentile(ms, 50), percentile(ms, 90), percentile(ms, 99)
	c.QueriesPerLookup = (clusterAfter - clusterBefore) / float64(l.o.N)
	if profile == "nodelocal" {
		cacheAfter, err := dnsRequests(l.cli, "127.0.0.1:9253")
		if err != nil {
			return c, err
		}
		c.UpstreamPerLookup = c.QueriesPerLookup
		c.QueriesPerLookup = (cacheAfter - cacheBefore) / float64(l.o.N)
	}
	return c, nil
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// dnsRequests returns coredns_dns_requests_total, summed, from a CoreDNS
// metrics endpoint inside a namespace.
func dnsRequests(ns, addr string) (float64, error) {
	body, err := httpGetIn(ns, addr, "/metrics")
	if err != nil {
		return 0, err
	}
	m, err := framework.ParseMetrics(body)
	if err != nil {
		return 0, err
	}
	total, _ := m.Value("coredns_dns_requests_total", nil)
	return total, nil
}

// inNetns runs f on a thread that joined the named network namespace; the
// thread ends with the goroutine.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer func() { _ = unix.Close(fd) }()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

func httpGetIn(ns, addr, path string) (string, error) {
	var conn net.Conn
	if err := inNetns(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	s := string(b)
	if !strings.HasPrefix(s, "HTTP/1.") || !strings.Contains(s[:min(len(s), 20)], " 200") {
		return "", fmt.Errorf("GET %s: %.40q", addr, s)
	}
	_, body, _ := strings.Cut(s, "\r\n\r\n")
	return body, nil
}

// renderResolvConf is what kubelet writes for the lab's pod: plain, or
// after `dnstune mutate` with the resilient or nodelocal profile.
func renderResolvConf(profile string) (string, error) {
	manifest := `apiVersion: v1
kind: Pod
metadata: {name: app, namespace: shop}
spec:
  containers: [{name: app, image: debian:12}]
`
	pod := manifest
	pol := policy.Default()
	if profile == "resilient-a2" {
		p := *policy.ResilientProfile()
		p.Name, p.Options.Attempts = profile, ptrTo(2)
		pol.Profiles[profile] = &p
	}
	if profile != "plain" {
		ns := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {dnstune.io/inject: enabled, dnstune.io/profile: %s}\n---\n", profile)
		out, err := offline.Mutate([]byte(ns+manifest), offline.Options{Policy: pol, ClusterDNS: netip.MustParseAddr(ClusterDNS)})
		if err != nil {
			return "", err
		}
		docs := strings.Split(string(out.Data), "---\n")
		pod = docs[len(docs)-1]
	}
	var p corev1.Pod
	if err := yaml.Unmarshal([]byte(pod), &p); err != nil {
		return "", err
	}
	if profile != "plain" && p.Annotations[policy.ProfileLabel] != profile {
		return "", fmt.Errorf("dnstune mutate did not apply profile %s: %s", profile, pod)
	}
	return resolvconf.ForPod(&p, Namespace, resolvconf.Cluster{DNS: []string{ClusterDNS}, Domain: "cluster.local"}).String(), nil
}

func ptrTo[T any](v T) *T { return &v }

// Table renders the report as Markdown.
func (r *Report) Table() string {
	var b strings.Builder
	b.WriteString("| pod | lookup | DNS loss | queries / lookup | p50 ms | p90 ms | p99 ms | failed |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cells {
		q := fmt.Sprintf("%.1f", c.QueriesPerLookup)
		if c.Profile == "nodelocal" {
			q = fmt.Sprintf("%.1f (to cluster DNS: %.2f)", c.QueriesPerLookup, c.UpstreamPerLookup)
		}
		fmt.Fprintf(&b, "| %s | %s `%s` | %d%% | %s | %.1f | %.1f | %.1f | %d/%d |\n", c.Profile, c.Kind, c.Name, c.Loss, q, c.P50, c.P90, c.P99, c.Failures, c.N)
	}
	return b.String()
}

// Find returns the cell for profile, name kind and loss.
func (r *Report) Find(profile, kind string, loss int) (Cell, bool) {
	for _, c := range r.Cells {
		if c.Profile == profile && c.Kind == kind && c.Loss == loss {
			return c, true
		}
	}
	return Cell{}, false
}

// BuildClient builds the cgo lookup client into dir.
func BuildClient(dir string) (string, error) {
	out := filepath.Join(dir, "dnslab-client")
	cmd := exec.Command("go", "build", "-o", out, "./e2e/lab/client")
	cmd.Dir = framework.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build the glibc lookup client (needs gcc): %w\n%s", err, b)
	}
	return out, nil
}
