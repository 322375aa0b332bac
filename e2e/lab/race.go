package lab

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/node"
)

// The race lab measures the conntrack insert race behind 5-second DNS
// stalls on this machine's kernel, through the real kube-proxy's DNAT:
//
//   - a "node" network namespace (forwarding on, in that namespace only)
//     runs etcd, kube-apiserver and kube-proxy (iptables or nftables mode),
//     with the kube-dns and kube-dns-upstream Services and an EndpointSlice
//     of three CoreDNS endpoints, each in a namespace of its own on a
//     point-to-point link to the node (so that replies come back through the
//     node's conntrack, as from a pod on another node);
//   - a "pod" namespace on its own link sends through the DNAT: the clash
//     client (e2e/lab/clash, after the kernel's udpclash selftest) and
//     glibc's resolver (the lab client), under several resolv.conf;
//   - a node-local cache (CoreDNS on 169.254.20.10 in the node namespace,
//     with node-cache's NOTRACK rules) for the nodelocal variant.
//
// The node namespace's /proc/net/stat/nf_conntrack is read before and after
// each measurement (what dnstune's node agent exports). Everything is in
// namespaces the lab makes and deletes; the host's netfilter, sysctls and
// conntrack table are never touched (kube-proxy's conntrack sysctls are
// turned off in its configuration).
const (
	raceServiceCIDR = "10.96.0.0/24"
	raceKubeDNS     = "10.96.0.10"
	raceUpstream    = "10.96.0.11"
	raceName        = "race.test"
	raceBackends    = 3
)

// RaceOptions configure RunRace.
type RaceOptions struct {
	// Dir for the lab's files; required.
	Dir string
	// Binaries: CoreDNS, the glibc lookup client (BuildClient), the clash
	// client (BuildClash), etcd, kube-apiserver and kube-proxy.
	CoreDNS, Client, Clash, Etcd, APIServer, KubeProxy string
	// Mode is kube-proxy's: iptables or nftables.
	Mode string
	// Rounds of the clash client per shape; Lookups per resolv.conf variant.
	Rounds, Lookups int
	// Logf receives progress; may be nil.
	Logf func(string, ...any)
}

// Counters are the node's conntrack statistics that tell the race: a lost
// insert (insert_failed, and the packet dropped: drop), and a clash the
// kernel resolved instead (clashres, Linux 5.6+).
type Counters struct {
	InsertFailed, Drop, ClashRes, EarlyDrop uint64
}

func (c Counters) sub(b Counters) Counters {
	return Counters{c.InsertFailed - b.InsertFailed, c.Drop - b.Drop, c.ClashRes - b.ClashRes, c.EarlyDrop - b.EarlyDrop}
}

// ClashRow is one shape of the clash client.
type ClashRow struct {
	Threads                          int
	Rounds, Sent, Received, LostRuns int
	Counters                         Counters
}

// ResolverRow is glibc's resolver under one resolv.conf.
type ResolverRow struct {
	Variant, ResolvConf string
	N, Failures, Over1s int
	P50, P99, Max       float64 // ms
	Counters            Counters
}

// RaceReport is one run of the race lab.
type RaceReport struct {
	Mode, Kernel string
	// Answered is, per CoreDNS endpoint, the queries it answered: kube-proxy
	// spread the load over all of them.
	Answered []float64
	Clash    []ClashRow
	Resolver []ResolverRow
	Elapsed  time.Duration
}

type race struct {
	o                  RaceOptions
	node, pod          string
	dns                []string
	procs              []*framework.Process
	kubeconfig, tokens string
}

// RunRace builds the topology, measures, and tears everything down.
func RunRace(ctx context.Context, o RaceOptions) (rep *RaceReport, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the race lab needs root (network namespaces)")
	}
	tool := map[string]string{"iptables": "iptables", "nftables": "nft"}[o.Mode]
	if tool == "" {
		return nil, fmt.Errorf("kube-proxy mode %q: want iptables or nftables", o.Mode)
	}
	for _, t := range []string{"ip", "nft", tool} {
		if _, err := exec.LookPath(t); err != nil {
			return nil, fmt.Errorf("the race lab needs %s (apt-get install iptables nftables; make lab-deps does)", t)
		}
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	start := time.Now()
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	preClean()
	r := &race{o: o, node: nsPrefix + "race-node", pod: nsPrefix + "race-pod"}
	for i := 1; i <= raceBackends; i++ {
		r.dns = append(r.dns, nsPrefix+"race-dns"+strconv.Itoa(i))
	}
	defer r.teardown()
	if err := r.network(); err != nil {
		return nil, err
	}
	o.Logf("race lab (%s): control plane and kube-proxy in %s", o.Mode, r.node)
	if err := r.controlPlane(ctx); err != nil {
		return nil, err
	}
	if err := r.backends(); err != nil {
		return nil, err
	}
	if err := r.kubeProxy(ctx); err != nil {
		return nil, err
	}
	rep = &RaceReport{Mode: o.Mode}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		rep.Kernel = strings.TrimSpace(string(b))
	}
	for _, threads := range []int{2, 16} {
		row, err := r.clash(ctx, threads)
		if err != nil {
			return nil, err
		}
		o.Logf("clash, %d threads per socket: %d/%d answered, %d rounds lost an answer; %+v", threads, row.Received, row.Sent, row.LostRuns, row.Counters)
		rep.Clash = append(rep.Clash, row)
	}
	if err := r.cache(); err != nil {
		return nil, err
	}
	for _, v := range raceVariants {
		row, err := r.resolver(ctx, v.name, v.resolvConf)
		if err != nil {
			return nil, err
		}
		o.Logf("glibc %s: %d lookups, %d failed, %d over 1 s, p50 %.1f ms, max %.0f ms; %+v", v.name, row.N, row.Failures, row.Over1s, row.P50, row.Max, row.Counters)
		rep.Resolver = append(rep.Resolver, row)
	}
	for _, ns := range r.dns {
		n, err := dnsRequests(ns, "127.0.0.1:9153")
		if err != nil {
			return nil, err
		}
		rep.Answered = append(rep.Answered, n)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// raceVariants are the resolv.conf compared: a plain pod's (glibc's 5 s
// timeout), single-request-reopen, use-vc (TCP: no UDP clash possible),
// dnstune's resilient options, and a node-local cache first.
var raceVariants = []struct{ name, resolvConf string }{
	{"plain", "nameserver " + raceKubeDNS + "\n"},
	{"single-request-reopen", "nameserver " + raceKubeDNS + "\noptions single-request-reopen\n"},
	{"use-vc", "nameserver " + raceKubeDNS + "\noptions use-vc\n"},
	{"resilient", "nameserver " + raceKubeDNS + "\noptions ndots:2 timeout:1 attempts:3 single-request-reopen\n"},
	{"nodelocal", "nameserver " + NodeLocalDNS + "\nnameserver " + raceKubeDNS + "\noptions ndots:2 timeout:1 attempts:2\n"},
}

func (r *race) network() error {
	steps := [][]string{{"ip", "netns", "add", r.node}, {"ip", "-n", r.node, "link", "set", "lo", "up"}}
	link := func(ns, name string, subnet int) {
		peer := fmt.Sprintf("10.252.%d.1/24", subnet)
		addr := fmt.Sprintf("10.252.%d.2/24", subnet)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", r.node, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", r.node, "addr", "add", peer, "dev", name},
			[]string{"ip", "-n", ns, "addr", "add", addr, "dev", "eth0"},
			[]string{"ip", "-n", r.node, "link", "set", name, "up"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", ns, "route", "add", "default", "via", strings.TrimSuffix(peer, "/24")},
		)
	}
	link(r.pod, "pod0", 1)
	for i, ns := range r.dns {
		link(ns, "dns"+strconv.Itoa(i+1), 11+i)
	}
	steps = append(steps,
		// Forwarding in the node namespace only (it is per namespace).
		[]string{"ip", "netns", "exec", r.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		[]string{"ip", "-n", r.node, "addr", "add", NodeLocalDNS + "/32", "dev", "lo"},
	)
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join("/etc/netns", r.pod), 0o755)
}

func (r *race) teardown() {
	for _, p := range slices.Backward(r.procs) {
		p.Stop()
	}
	for _, ns := range append([]string{r.pod, r.node}, r.dns...) {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	_ = os.RemoveAll(filepath.Join("/etc/netns", r.pod))
}

func (r *race) start(name, ns, bin string, args ...string) (*framework.Process, error) {
	p, err := framework.StartProcess(name, filepath.Join(r.o.Dir, name+".log"), nil, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	return p, nil
}

// kubectl runs kubectl in the node namespace.
func (r *race) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r.node, "kubectl", "--kubeconfig", r.kubeconfig}, args...)...) // #nosec G204 -- lab
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

func (r *race) controlPlane(ctx context.Context) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saKey := filepath.Join(r.o.Dir, "sa.key")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	r.tokens = filepath.Join(r.o.Dir, "tokens.csv")
	if err := os.WriteFile(r.tokens, []byte("race-lab-token,admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	r.kubeconfig = filepath.Join(r.o.Dir, "kubeconfig")
	if err := os.WriteFile(r.kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: race-lab-token}}]
contexts: [{name: lab, context: {cluster: lab, user: admin}}]
current-context: lab
`), 0o600); err != nil {
		return err
	}
	if _, err := r.start("race-etcd", r.node, r.o.Etcd, "--data-dir="+filepath.Join(r.o.Dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=default=http://127.0.0.1:2380", "--unsafe-no-fsync"); err != nil {
		return err
	}
	api, err := r.start("race-kube-apiserver", r.node, r.o.APIServer, "--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=127.0.0.1", "--advertise-address=10.252.1.1", "--secure-port=6443", "--cert-dir="+filepath.Join(r.o.Dir, "apiserver"),
		"--service-account-key-file="+saKey, "--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range="+raceServiceCIDR,
		"--token-auth-file="+r.tokens, "--authorization-mode=RBAC", "--profiling=false")
	if err != nil {
		return err
	}
	if err := framework.Eventually(90*time.Second, 250*time.Millisecond, func() error {
		if exited, err := api.Exited(); exited {
			return framework.Permanent(fmt.Errorf("kube-apiserver exited: %w: %s", err, api.Tail(20)))
		}
		_, err := r.kubectl(ctx, "get", "--raw", "/readyz")
		return err
	}); err != nil {
		return err
	}
	var eps []string
	for i := range r.dns {
		eps = append(eps, fmt.Sprintf("{addresses: [\"10.252.%d.2\"], conditions: {ready: true}}", 11+i))
	}
	var objs strings.Builder
	objs.WriteString("apiVersion: v1\nkind: Node\nmetadata: {name: race-node}\nstatus: {addresses: [{type: InternalIP, address: 10.252.1.1}]}\n")
	for svc, ip := range map[string]string{"kube-dns": raceKubeDNS, "kube-dns-upstream": raceUpstream} {
		fmt.Fprintf(&objs, `---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: kube-system}
spec: {clusterIP: %[2]s, ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-lab, namespace: kube-system, labels: {kubernetes.io/service-name: %[1]s, endpointslice.kubernetes.io/managed-by: dnstune-race-lab}}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
endpoints: [%[3]s]
`, svc, ip, strings.Join(eps, ", "))
	}
	path := filepath.Join(r.o.Dir, "objects.yaml")
	if err := os.WriteFile(path, []byte(objs.String()), 0o600); err != nil {
		return err
	}
	_, err = r.kubectl(ctx, "apply", "-f", path)
	return err
}

// raceCorefile answers race.test A and AAAA, as a cluster DNS answers a
// Service name.
const raceCorefile = `race.test:53 {
    bind {{ADDR}}
    template IN A race.test {
        answer "{{ .Name }} 30 IN A 198.18.9.9"
    }
    template IN AAAA race.test {
        answer "{{ .Name }} 30 IN AAAA 2001:db8::9"
    }
    prometheus 127.0.0.1:9153
}
`

func (r *race) backends() error {
	for i, ns := range r.dns {
		conf := filepath.Join(r.o.Dir, ns+".Corefile")
		if err := os.WriteFile(conf, []byte(strings.ReplaceAll(raceCorefile, "{{ADDR}}", fmt.Sprintf("10.252.%d.2", 11+i))), 0o600); err != nil {
			return err
		}
		p, err := r.start("race-"+ns, ns, r.o.CoreDNS, "-conf", conf)
		if err != nil {
			return err
		}
		if err := framework.Eventually(10*time.Second, 50*time.Millisecond, func() error {
			if exited, err := p.Exited(); exited {
				return framework.Permanent(fmt.Errorf("coredns in %s exited: %w: %s", ns, err, p.Tail(10)))
			}
			_, err := dnsRequests(ns, "127.0.0.1:9153")
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

func (r *race) kubeProxy(ctx context.Context) error {
	cfg := filepath.Join(r.o.Dir, "kube-proxy.yaml")
	// conntrack: all zero leaves the kernel's conntrack settings alone
	// (nf_conntrack_max is global to the host).
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: %s
hostnameOverride: race-node
clusterCIDR: 10.252.0.0/16
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
`, r.kubeconfig, r.o.Mode), 0o600); err != nil {
		return err
	}
	p, err := r.start("race-kube-proxy-"+r.o.Mode, r.node, r.o.KubeProxy, "--config="+cfg)
	if err != nil {
		return err
	}
	// Ready when a query through the Service is answered.
	return framework.Eventually(60*time.Second, 500*time.Millisecond, func() error {
		if exited, err := p.Exited(); exited {
			return framework.Permanent(fmt.Errorf("kube-proxy exited: %w: %s", err, p.Tail(20)))
		}
		out, err := r.runClash(ctx, 1, 1)
		if err != nil {
			return err
		}
		if out.Received != 1 {
			return errors.New("no answer through the kube-dns Service yet")
		}
		return nil
	})
}

type clashOut struct {
	Rounds, Sent, Received, LostRounds int
}

func (r *race) runClash(ctx context.Context, rounds, threads int) (clashOut, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", r.pod, r.o.Clash, "-server", raceKubeDNS+":53", "-name", raceName, // #nosec G204 -- lab
		"-rounds", strconv.Itoa(rounds), "-threads", strconv.Itoa(threads), "-timeout", "1s")
	b, err := cmd.Output()
	if err != nil {
		return clashOut{}, fmt.Errorf("clash client: %w", err)
	}
	var out clashOut
	return out, json.Unmarshal(b, &out)
}

func (r *race) counters() (Counters, error) {
	b, err := exec.Command("ip", "netns", "exec", r.node, "cat", "/proc/net/stat/nf_conntrack").Output()
	if err != nil {
		return Counters{}, fmt.Errorf("read the node's /proc/net/stat/nf_conntrack: %w", err)
	}
	st, err := node.ParseStat(strings.NewReader(string(b)))
	if err != nil {
		return Counters{}, err
	}
	if _, ok := st.Counters["clashres"]; !ok {
		return Counters{}, errors.New("this kernel's nf_conntrack statistics have no clashres column (Linux < 5.6?)")
	}
	c := st.Counters
	return Counters{InsertFailed: c["insert_failed"], Drop: c["drop"], ClashRes: c["clashres"], EarlyDrop: c["early_drop"]}, nil
}

func (r *race) clash(ctx context.Context, threads int) (ClashRow, error) {
	before, err := r.counters()
	if err != nil {
		return ClashRow{}, err
	}
	out, err := r.runClash(ctx, r.o.Rounds, threads)
	if err != nil {
		return ClashRow{}, err
	}
	after, err := r.counters()
	if err != nil {
		return ClashRow{}, err
	}
	return ClashRow{Threads: threads, Rounds: out.Rounds, Sent: out.Sent, Received: out.Received, LostRuns: out.LostRounds, Counters: after.sub(before)}, nil
}

// cache runs the node-local cache in the node namespace, with the NOTRACK
// rules node-cache installs (no conntrack entry for a pod's queries to it).
func (r *race) cache() error {
	ruleset := fmt.Sprintf(`table ip dnstune-race-nodecache {
  chain prerouting { type filter hook prerouting priority raw; policy accept;
    ip daddr %[1]s udp dport 53 notrack
    ip daddr %[1]s tcp dport 53 notrack
  }
  chain output { type filter hook output priority raw; policy accept;
    ip saddr %[1]s udp sport 53 notrack
    ip saddr %[1]s tcp sport 53 notrack
  }
}
`, NodeLocalDNS)
	cmd := exec.Command("ip", "netns", "exec", r.node, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	conf := filepath.Join(r.o.Dir, "race-cache.Corefile")
	if err := os.WriteFile(conf, []byte(`.:53 {
    bind `+NodeLocalDNS+`
    cache 30
    forward . `+raceUpstream+` {
        force_tcp
    }
    prometheus 127.0.0.1:9253
}
`), 0o600); err != nil {
		return err
	}
	p, err := r.start("race-nodelocal-cache", r.node, r.o.CoreDNS, "-conf", conf)
	if err != nil {
		return err
	}
	return framework.Eventually(10*time.Second, 50*time.Millisecond, func() error {
		if exited, err := p.Exited(); exited {
			return framework.Permanent(fmt.Errorf("the node-local cache exited: %w: %s", err, p.Tail(10)))
		}
		_, err := dnsRequests(r.node, "127.0.0.1:9253")
		return err
	})
}

func (r *race) resolver(ctx context.Context, name, rc string) (ResolverRow, error) {
	row := ResolverRow{Variant: name, ResolvConf: rc, N: r.o.Lookups}
	if err := os.WriteFile(filepath.Join("/etc/netns", r.pod, "resolv.conf"), []byte(rc), 0o644); err != nil { // #nosec G306 -- resolv.conf is world-readable.
		return row, err
	}
	before, err := r.counters()
	if err != nil {
		return row, err
	}
	res, err := runLookups(ctx, r.pod, r.o.Client, []string{raceName}, r.o.Lookups, 50)
	if err != nil {
		return row, err
	}
	after, err := r.counters()
	if err != nil {
		return row, err
	}
	row.Counters = after.sub(before)
	var ms []float64
	for _, l := range res {
		if l.Err != "" {
			row.Failures++
		}
		if l.MS > 1000 {
			row.Over1s++
		}
		ms = append(ms, l.MS)
	}
	slices.Sort(ms)
	if len(ms) > 0 {
		row.P50, row.P99, row.Max = percentile(ms, 50), percentile(ms, 99), ms[len(ms)-1]
	}
	return row, nil
}

// BuildClash builds the clash client into dir.
func BuildClash(dir string) (string, error) {
	out := filepath.Join(dir, "clash")
	cmd := exec.Command("go", "build", "-o", out, "./e2e/lab/clash")
	cmd.Dir = framework.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build the clash client: %w\n%s", err, b)
	}
	return out, nil
}

// Table renders the report as markdown.
func (rep *RaceReport) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Linux %s; queries answered by each CoreDNS endpoint: %v (%s).\n\n", rep.Kernel, rep.Answered, rep.Elapsed.Round(time.Second))
	b.WriteString("| sender | rounds | queries sent | answered | rounds that lost an answer | insert_failed | drop | clashres |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range rep.Clash {
		fmt.Fprintf(&b, "| clash client, %d threads on one new socket per round | %d | %d | %d | %d | %d | %d | %d |\n",
			c.Threads, c.Rounds, c.Sent, c.Received, c.LostRuns, c.Counters.InsertFailed, c.Counters.Drop, c.Counters.ClashRes)
	}
	b.WriteString("\n| glibc getaddrinfo (A+AAAA), resolv.conf | lookups | failed | over 1 s | p50 ms | p99 ms | max ms | insert_failed | drop | clashres |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Resolver {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f | %.1f | %.0f | %d | %d | %d |\n",
			r.Variant, r.N, r.Failures, r.Over1s, r.P50, r.P99, r.Max, r.Counters.InsertFailed, r.Counters.Drop, r.Counters.ClashRes)
	}
	return b.String()
}
