package kubenode

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
)

// clusterAddresses are the ranges whose conntrack entries are the
// cluster's: pods and the node IP, Services, and the node-local cache.
var clusterAddresses = []string{PodSubnet, ServiceCIDR, NodeLocalIP + "/32"}

// kubeProxy starts kube-proxy in c.ProxyMode as a node process (in the
// node's mount namespace, so its xtables lock is the node's, not the
// host's) and waits until it serves its health check.
func (c *Cluster) kubeProxy(ctx context.Context) error {
	bin, err := framework.BuildTool("kube-proxy")
	if err != nil {
		return err
	}
	c.proxyBin = bin
	kubeconfig := filepath.Join(c.Dir, "kube-proxy.kubeconfig")
	if err := c.pki.kubeconfig(kubeconfig, fmt.Sprintf("https://%s:%d", NodeIP, c.apiPort), c.pki.proxy); err != nil {
		return err
	}
	healthz, err := framework.FreePort()
	if err != nil {
		return err
	}
	metrics, err := framework.FreePort()
	if err != nil {
		return err
	}
	c.loopbackPorts = append(c.loopbackPorts, healthz, metrics)
	// What keeps kube-proxy off the host's global settings:
	//   - conntrack all zero: it leaves nf_conntrack_max, the hash size and
	//     the timeouts as they are (they are the whole host's);
	//   - iptables.localhostNodePorts false: it does not set
	//     net.ipv4.conf.all.route_localnet (there are no NodePorts here);
	//   - nodePortAddresses primary: NodePort rules for the node IP only.
	c.proxyConf = filepath.Join(c.Dir, "kube-proxy.yaml")
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: %s
hostnameOverride: %s
clusterCIDR: %s
detectLocalMode: ClusterCIDR
nodePortAddresses: [primary]
metricsBindAddress: 127.0.0.1:%d
healthzBindAddress: 127.0.0.1:%d
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
`, kubeconfig, c.ProxyMode, NodeName, PodSubnet, metrics, healthz)
	if err := os.WriteFile(c.proxyConf, []byte(conf), 0o600); err != nil {
		return err
	}
	c.Logf("starting kube-proxy (%s mode) as a node process", c.ProxyMode)
	if c.proxy, err = c.inAnchor("kube-proxy", bin, "--config="+c.proxyConf, "--v=1"); err != nil {
		return err
	}
	url := "http://127.0.0.1:" + strconv.Itoa(healthz) + "/healthz"
	return framework.Eventually(time.Minute, 250*time.Millisecond, func() error {
		if exited, err := c.proxy.Exited(); exited {
			return framework.Permanent(fmt.Errorf("kube-proxy exited: %w", err))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return framework.Permanent(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("kube-proxy health: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("kube-proxy health: %s", resp.Status)
		}
		return nil
	})
}

// stopKubeProxy stops kube-proxy, removes its rules the way its users do
// (kube-proxy --cleanup, which clears every mode's), and deletes the
// iptables tables that were not on the host before and are empty now
// (iptables-nft leaves a table and its built-in chains behind once its
// first rule made them). Whatever else is left is the host check's to
// report.
func (c *Cluster) stopKubeProxy() error {
	if c.proxy == nil {
		return nil
	}
	c.proxy.Stop()
	var errs []error
	if out, err := c.AnchorCommand(c.proxyBin, "--config="+c.proxyConf, "--cleanup").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("kube-proxy --cleanup: %w: %s", err, out))
	}
	// In iptables mode kube-proxy also makes kubelet's KUBE-FIREWALL chain
	// and its jumps from INPUT and OUTPUT, and by design never deletes them
	// ("we create these on startup but do not delete them in
	// CleanupLeftovers", pkg/proxy/iptables/proxier.go): on a real node
	// kubelet owns them. This node's kubelet makes none
	// (makeIPTablesUtilChains: false), so they go here, unless the host had
	// them before.
	if !strings.Contains(c.before.Ruleset, "KUBE-FIREWALL") {
		for _, ipt := range []string{"iptables", "ip6tables"} {
			for _, hook := range []string{"INPUT", "OUTPUT"} {
				for exec.Command(ipt, "-w", "-t", "filter", "-C", hook, "-j", "KUBE-FIREWALL").Run() == nil { // #nosec G204 -- fixed arguments
					if err := run(ipt, "-w", "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL"); err != nil {
						errs = append(errs, err)
						break
					}
				}
			}
			if exec.Command(ipt, "-w", "-t", "filter", "-L", "KUBE-FIREWALL", "-n").Run() == nil { // #nosec G204 -- fixed arguments
				if err := run(ipt, "-w", "-t", "filter", "-F", "KUBE-FIREWALL"); err != nil {
					errs = append(errs, err)
				}
				if err := run(ipt, "-w", "-t", "filter", "-X", "KUBE-FIREWALL"); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("nft list tables: %w", err))...)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line) // table FAMILY NAME
		if len(f) != 3 || slices.Contains(c.before.Tables, line) {
			continue
		}
		body, err := exec.Command("nft", "list", "table", f[1], f[2]).Output()
		if err != nil || !emptyTable(string(body)) {
			continue
		}
		if err := run("nft", "delete", "table", f[1], f[2]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// emptyTable tells whether an nft table's listing holds nothing but chains
// without rules.
func emptyTable(listing string) bool {
	for _, line := range strings.Split(listing, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case l == "", l == "}", strings.HasPrefix(l, "table "), strings.HasPrefix(l, "chain "), strings.HasPrefix(l, "type "), strings.HasPrefix(l, "comment "):
		default:
			return false
		}
	}
	return true
}

// flushConntrack deletes the conntrack entries of the cluster's addresses,
// in either direction, once the links are gone (so none is made again), and
// those of its loopback ports (etcd's client connections would otherwise
// stay ESTABLISHED in the table for days); then checks none is left.
func (c *Cluster) flushConntrack() error {
	var errs []error
	for _, f := range c.conntrackFilters() {
		out, err := exec.Command("conntrack", append([]string{"-D"}, f...)...).CombinedOutput() // #nosec G204 -- fixed filters
		// conntrack exits 1 when nothing matched.
		if err != nil && !strings.Contains(string(out), " 0 flow entries") {
			errs = append(errs, fmt.Errorf("conntrack -D %s: %w: %s", strings.Join(f, " "), err, strings.TrimSpace(string(out))))
		}
	}
	left, err := listConntrack(c.conntrackFilters())
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range left {
		errs = append(errs, errors.New("conntrack entry of the cluster left behind: "+e))
	}
	return errors.Join(errs...)
}

// conntrackFilters select the cluster's conntrack entries: its address
// ranges either way, and its loopback ports.
func (c *Cluster) conntrackFilters() [][]string {
	filters := rangeFilters()
	for _, p := range c.loopbackPorts {
		filters = append(filters, []string{"-p", "tcp", "--orig-dst", "127.0.0.1", "--orig-port-dst", strconv.Itoa(p)})
	}
	return filters
}

func rangeFilters() [][]string {
	var filters [][]string
	for _, cidr := range clusterAddresses {
		filters = append(filters, []string{"--orig-src", cidr}, []string{"--orig-dst", cidr})
	}
	return filters
}

// listConntrack lists the conntrack entries the filters select (conntrack
// -L; its summary goes to stderr), each once.
func listConntrack(filters [][]string) ([]string, error) {
	var entries []string
	for _, f := range filters {
		out, err := exec.Command("conntrack", append([]string{"-L"}, f...)...).Output() // #nosec G204 -- fixed filters
		if err != nil {
			return nil, fmt.Errorf("conntrack -L %s: %w", strings.Join(f, " "), err)
		}
		for _, e := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if e != "" && !slices.Contains(entries, e) {
				entries = append(entries, e)
			}
		}
	}
	return entries, nil
}
