package kubenode

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// HostSysctls are the host-global settings a node could change: the
// neighbour thresholds the node agent raises, forwarding, the kernel
// tunables kubelet sets at start, and the ones kube-proxy or CNI plugins set
// elsewhere. Teardown fails the run when any differs from before.
var HostSysctls = []string{
	"net/ipv4/neigh/default/gc_thresh1",
	"net/ipv4/neigh/default/gc_thresh2",
	"net/ipv4/neigh/default/gc_thresh3",
	"net/ipv6/neigh/default/gc_thresh1",
	"net/ipv6/neigh/default/gc_thresh2",
	"net/ipv6/neigh/default/gc_thresh3",
	"net/ipv4/ip_forward",
	"net/ipv6/conf/all/forwarding",
	"net/ipv4/conf/all/route_localnet",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	"net/netfilter/nf_conntrack_tcp_be_liberal",
	"net/netfilter/nf_conntrack_udp_timeout",
	"net/netfilter/nf_conntrack_udp_timeout_stream",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
}

// neighSysctls are the ones the node agent is expected to raise; Teardown
// writes their old values back before comparing.
var neighSysctls = HostSysctls[:6]

// HostState is what the host looked like: compared before and after.
type HostState struct {
	Sysctls map[string]string
	Links   []string
	Addrs   []string // "link address/prefix" of every link (the node agent's cover adds one to lo)
	Cgroups []string // first-level folders of every cgroup hierarchy
	Ruleset string   // nft -s list ruleset (iptables-nft rules included; no counters), and iptables-legacy's
	Tables  []string // nft list tables: "table FAMILY NAME"
	IPSets  []string // ipset list -n

	Mounts []string // mount points of the host mount namespace
}

// Snapshot reads the host's state.
func Snapshot() (*HostState, error) {
	s := &HostState{Sysctls: map[string]string{}}
	for _, k := range HostSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		switch {
		case os.IsNotExist(err):
			s.Sysctls[k] = "(absent)"
		case err != nil:
			return nil, err
		default:
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	ifaces, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, err
	}
	for _, i := range ifaces {
		s.Links = append(s.Links, i.Name())
	}
	nifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, i := range nifs {
		addrs, err := i.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", i.Name, err)
		}
		for _, a := range addrs {
			s.Addrs = append(s.Addrs, i.Name+" "+a.String())
		}
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		entries, err := os.ReadDir(h)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				s.Cgroups = append(s.Cgroups, filepath.Join(h, e.Name()))
			}
		}
	}
	out, err := exec.Command("nft", "-s", "list", "ruleset").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list ruleset: %w: %s", err, out)
	}
	s.Ruleset = string(out)
	if out, err = exec.Command("nft", "list", "tables").Output(); err != nil {
		return nil, fmt.Errorf("nft list tables: %w", err)
	}
	for _, t := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if t != "" {
			s.Tables = append(s.Tables, t)
		}
	}
	// Rules through iptables-legacy live outside nftables: compared too,
	// without counters and the save-time comments.
	for _, save := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, err := exec.Command(save).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %s", save, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "#") {
				s.Ruleset += "\n" + save + ": " + stripCounters(line)
			}
		}
	}
	if s.IPSets, err = ipsets(); err != nil {
		return nil, err
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(mi)), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			s.Mounts = append(s.Mounts, f[4])
		}
	}
	slices.Sort(s.Links)
	slices.Sort(s.Addrs)
	slices.Sort(s.Cgroups)
	slices.Sort(s.Mounts)
	return s, nil
}

// Diff lists every way now differs from s; empty when the host is as it was.
func (s *HostState) Diff(now *HostState) []string {
	var d []string
	for _, k := range HostSysctls {
		if s.Sysctls[k] != now.Sysctls[k] {
			d = append(d, fmt.Sprintf("sysctl %s: %s before, %s now", strings.ReplaceAll(k, "/", "."), s.Sysctls[k], now.Sysctls[k]))
		}
	}
	d = append(d, setDiff("link", s.Links, now.Links)...)
	d = append(d, setDiff("address", s.Addrs, now.Addrs)...)
	d = append(d, setDiff("cgroup folder", s.Cgroups, now.Cgroups)...)
	d = append(d, setDiff("mount", s.Mounts, now.Mounts)...)
	d = append(d, setDiff("ipset", s.IPSets, now.IPSets)...)
	if s.Ruleset != now.Ruleset {
		d = append(d, fmt.Sprintf("nft ruleset changed:\n--- before\n%s\n--- now\n%s", s.Ruleset, now.Ruleset))
	}
	return d
}

func setDiff(what string, before, now []string) []string {
	var d []string
	for _, x := range now {
		if !slices.Contains(before, x) {
			d = append(d, fmt.Sprintf("%s %s left behind", what, x))
		}
	}
	for _, x := range before {
		if !slices.Contains(now, x) {
			d = append(d, fmt.Sprintf("%s %s gone", what, x))
		}
	}
	return d
}

// RestoreNeighbour writes the neighbour thresholds of s back (the node agent
// raised them, as it should).
func (s *HostState) RestoreNeighbour() error {
	// Lower gc_thresh1 first and gc_thresh3 last would not matter to the
	// kernel (it does not order them), but write 3, 2, 1 so a reader never
	// sees thresh1 above thresh3 when restoring downwards.
	for i := len(neighSysctls) - 1; i >= 0; i-- {
		k := neighSysctls[i]
		if v := s.Sysctls[k]; v != "(absent)" {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return fmt.Errorf("restore %s: %w", k, err)
			}
		}
	}
	return nil
}

// SkipReason says why a real node can't run here, or "" when it can.
func SkipReason() string {
	if os.Geteuid() != 0 {
		return "not root: a real node needs root (network namespaces, cgroups, mounts, nft)"
	}
	var missing []string
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "nft", "iptables", "ip6tables", "conntrack", "ipset", "unshare", "nsenter", "ip", "musl-gcc", "gcc", "dpkg", "apt-get"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, p)); err != nil {
			missing = append(missing, CNIBinDir+"/"+p)
		}
	}
	if len(missing) > 0 {
		return "missing " + strings.Join(missing, ", ") + " (make node-deps installs them from Debian packages)"
	}
	for _, c := range []string{"cpu", "memory", "pids"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + c); err != nil {
			return "cgroup v1 controller " + c + " is not mounted at /sys/fs/cgroup/" + c + " (this harness runs kubelet with cgroupfs on a v1 hybrid host)"
		}
	}
	if _, err := os.Stat("/proc/sys/net/ipv4/neigh/default/gc_thresh3"); err != nil {
		return "not in the initial network namespace: /proc/sys/net/ipv4/neigh/default is missing, so the node agent could not run"
	}
	if _, err := os.Stat("/sys/class/net/" + Bridge); err == nil {
		return "" // Start fails loudly on a leftover bridge
	}
	return ""
}

// stripCounters drops the [packets:bytes] of an iptables-save chain line.
func stripCounters(line string) string {
	if i := strings.Index(line, " ["); i >= 0 && strings.HasPrefix(line, ":") {
		return line[:i]
	}
	return line
}
