// Package kubenode runs a real one-node Kubernetes cluster on this machine
// for dnstune's node e2e suite: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler (built from the Go module proxy
// into bin/tools), and a kubelet v1.37.1 with containerd, runc and the
// bridge CNI plugin from Debian packages, laid out per ../shared/NODE.md so
// that the host is left exactly as it was: Stop checks that, and fails when
// anything is left behind.
//
// Layout:
//
//   - Host network namespace (containerd must be there, so that hostNetwork
//     pods, the node agent among them, are in the initial namespace where
//     net.ipv4.neigh.default.* lives): a bridge of the harness's own,
//     dnstune-e2e0, holding the node IP 10.251.0.1/24; pods get 10.251.0.10
//     and up and a default route through the node IP, as on a real cluster
//     (nothing from the bridge is ever forwarded: what is not for the node
//     is silently lost); the control plane and kubelet listen on the node
//     IP (etcd on loopback).
//   - Services are kube-proxy's: the real kube-proxy v1.37.1 (built from
//     k8s.io/kubernetes, cmd/kube-proxy, like kubelet) runs as a node
//     process in iptables or nftables mode (Options.ProxyMode), with its own
//     client certificate (system:kube-proxy), the way kubeadm-less installs
//     (kubernetes-the-hard-way, k3s) run it. Not a DaemonSet: its iptables
//     mode shells out to the node's iptables-restore and its nftables mode
//     to nft, and an image holding Debian's iptables and nft with their
//     libraries would be a second copy of the node's tools. CoreDNS runs as
//     two ordinary pods behind the kube-dns Service (and kube-dns-upstream,
//     the node-local cache's). Pod-to-Service traffic is routed by the node
//     and its replies bridged back through conntrack, so the node needs
//     net.bridge.bridge-nf-call-iptables=1 (kubeadm's prerequisite; Start
//     checks it and never writes it) and forwarding on the bridge: set on
//     dnstune-e2e0 alone (net.ipv4.conf.dnstune-e2e0.forwarding, gone with
//     the link), never the host's ip_forward. One nft table of the harness's
//     own, ip dnstune_e2e, drops whatever the bridge would forward elsewhere,
//     so a pod's packet to an address nobody serves on the node is silently
//     lost, as on a real network. The apiserver reaches the webhook through
//     its Service's endpoints (--enable-aggregator-routing), as on clusters
//     without a route to ClusterIPs from the control plane. At teardown
//     kube-proxy --cleanup removes its rules, the empty iptables tables it
//     made are deleted, and the conntrack entries of the cluster's addresses
//     are flushed; the host check covers all three.
//   - A private mount namespace (an anchor process) for containerd, its
//     shims and kubelet: tmpfs over /run, /var/lib and /var/log, and
//     kubelet's kernel tunables (vm.overcommit_memory, kernel.panic,
//     kernel.panic_on_oops, …) bind-mounted over by files already holding
//     the values kubelet wants, so the host's are never written.
package kubenode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

// Addresses of the cluster.
const (
	Bridge       = "dnstune-e2e0"
	NodeIP       = "10.251.0.1"
	PodSubnet    = "10.251.0.0/24"
	ServiceCIDR  = "10.0.0.0/24"
	KubernetesIP = "10.0.0.1"
	KubeDNSIP    = "10.0.0.10"
	NodeName     = "dnstune-node"
	CNIBinDir    = "/usr/lib/cni"
	nftTable     = "dnstune_e2e"
	// CoreDNSMetricsPort is CoreDNS's Prometheus port on each kube-dns pod.
	CoreDNSMetricsPort = "9153"
	// CoreDNSReplicas is how many CoreDNS pods serve kube-dns.
	CoreDNSReplicas = 2
)

// Proxy modes of kube-proxy the suite runs under.
const (
	ProxyIPTables = "iptables"
	ProxyNFTables = "nftables"
)

// DNS names CoreDNS answers (besides NXDOMAIN for the rest): a Service in the
// cluster zone and an external name.
const (
	ServiceName      = "web"
	ServiceNamespace = "dns-target"
	ServiceIP        = "10.0.0.50"
	ExternalName     = "www.example.com"
	ExternalIP       = "198.18.3.10"
)

// Cluster is a running control plane and node.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	Clientset  *kubernetes.Clientset
	Dnstune    string // static dnstune binary, the one in the image
	Logf       func(format string, args ...any)

	before  *HostState
	pki     *pkiDir
	apiPort int
	anchor  *framework.Process
	procs   []*framework.Process // control plane, in start order
	ctrd    *framework.Process
	kubelet *framework.Process
	proxy   *framework.Process
	// enforcer is true while kube-router's rules may be on the node.
	enforcer bool
	busybox  string // busybox-static, for images built later
	// ProxyMode is kube-proxy's mode: ProxyIPTables or ProxyNFTables.
	ProxyMode string
	proxyConf string
	proxyBin  string         // kube-proxy, for its --cleanup at teardown
	undo      []func() error // network, LIFO
	// loopbackPorts are the ports the cluster listens on at 127.0.0.1:
	// teardown flushes their conntrack entries.
	loopbackPorts []int
	assets        string

	serviceNamespaces []string
}

// Options for Start.
type Options struct {
	Dir  string
	Logf func(format string, args ...any)
	// ServiceNamespaces are namespaces, besides ServiceNamespace, where
	// CoreDNS answers for a Service named ServiceName (so pods there can
	// look it up by its short name).
	ServiceNamespaces []string
	// ProxyMode is kube-proxy's --proxy-mode: ProxyIPTables (the default)
	// or ProxyNFTables.
	ProxyMode string
}

// Start brings the cluster up and returns once the node is Ready and CoreDNS
// answers. Call SkipReason first. On error, everything started is stopped
// and the host restored.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	c = &Cluster{Dir: o.Dir, Logf: o.Logf, ProxyMode: o.ProxyMode, serviceNamespaces: append([]string{ServiceNamespace}, o.ServiceNamespaces...)}
	switch c.ProxyMode {
	case "":
		c.ProxyMode = ProxyIPTables
	case ProxyIPTables, ProxyNFTables:
	default:
		return nil, fmt.Errorf("kube-proxy mode %q: want %s or %s", o.ProxyMode, ProxyIPTables, ProxyNFTables)
	}
	const brnf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if b, err := os.ReadFile(brnf); err != nil {
		return nil, fmt.Errorf("read %s: %w: kube-proxy's DNAT to pods on the node's bridge needs br_netfilter (modprobe br_netfilter) with bridge-nf-call-iptables=1, as kubeadm's preflight says", brnf, err)
	} else if v := strings.TrimSpace(string(b)); v != "1" {
		return nil, fmt.Errorf("net.bridge.bridge-nf-call-iptables is %s: kube-proxy's DNAT to pods on the node's bridge needs 1, as kubeadm's preflight says; set it (sysctl -w net.bridge.bridge-nf-call-iptables=1) and run again", v)
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "dnstune-node-"); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat("/sys/class/net/" + Bridge); err == nil {
		return nil, fmt.Errorf("link %s already exists: a previous run was killed before its teardown; remove it (ip link del %s; nft delete table ip %s) and check the host", Bridge, Bridge, nftTable)
	}
	if c.before, err = Snapshot(); err != nil {
		return nil, fmt.Errorf("snapshot the host: %w", err)
	}
	defer func() { //nolint:contextcheck // teardown runs on its own clock, also after ctx is done
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.Tails(40))
			if serr := c.Stop(); serr != nil {
				err = fmt.Errorf("%w\nteardown: %w", err, serr)
			}
			c = nil
		}
	}()
	if c.assets, err = framework.AssetsDir(); err != nil {
		return c, err
	}
	for _, b := range []string{"kubelet", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(c.assets, b)); err != nil {
			return c, fmt.Errorf("%s is not in %s: run make e2e-tools", b, c.assets)
		}
	}
	c.Logf("building dnstune (static, as make build)")
	if c.Dnstune, err = buildStatic(c.Dir); err != nil {
		return c, err
	}
	if err := c.network(); err != nil {
		return c, err
	}
	if c.pki, err = newPKI(filepath.Join(c.Dir, "pki")); err != nil {
		return c, err
	}
	if err := c.controlPlane(ctx); err != nil {
		return c, err
	}
	if err := c.node(ctx); err != nil {
		return c, err
	}
	if err := c.kubeProxy(ctx); err != nil {
		return c, err
	}
	if err := c.coreDNS(ctx); err != nil {
		return c, err
	}
	return c, nil
}

func buildStatic(dir string) (string, error) {
	out := filepath.Join(dir, "dnstune")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", out, "./cmd/dnstune")
	cmd.Dir = framework.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off") // the shipped module, as go install builds it
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dnstune: %w\n%s", err, b)
	}
	return out, nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// network makes the bridge, its route to the Service range (so the node's
// own queries to a ClusterIP meet kube-proxy's output rules), forwarding on
// the bridge alone, and the table that keeps forwarded packets on it; undo
// removes them.
func (c *Cluster) network() error {
	if err := run("ip", "link", "add", Bridge, "type", "bridge"); err != nil {
		return err
	}
	c.undo = append(c.undo, func() error { return run("ip", "link", "del", Bridge) })
	for _, a := range [][]string{
		{"addr", "add", NodeIP + "/24", "dev", Bridge},
		{"link", "set", Bridge, "up"},
		{"route", "add", ServiceCIDR, "dev", Bridge, "src", NodeIP},
	} {
		if err := run("ip", a...); err != nil {
			return err
		}
	}
	// IPv4 forwarding is decided by the input device's setting: a pod's
	// packet to a ClusterIP, DNATed to another pod, is forwarded from the
	// bridge to the bridge. The host's ip_forward is left alone.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+Bridge+"/forwarding", []byte("1"), 0o644); err != nil { // #nosec G306 -- a sysctl.
		return fmt.Errorf("enable forwarding on %s: %w", Bridge, err)
	}
	var err error
	if c.apiPort, err = framework.FreePort(); err != nil {
		return err
	}
	// Pods have a default route through the node, as on a real cluster, so
	// a packet to an address nobody serves on the node (a node-local cache
	// that is not there) leaves the pod and is silently lost, as it is on a
	// real network: nothing from the bridge is forwarded anywhere else.
	rules := fmt.Sprintf(`table ip %s {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname %q oifname != %q drop
  }
}
`, nftTable, Bridge, Bridge)
	path := filepath.Join(c.Dir, "forward.nft")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		return err
	}
	if err := run("nft", "-f", path); err != nil {
		return err
	}
	c.undo = append(c.undo, func() error { return run("nft", "delete", "table", "ip", nftTable) })
	// What the node-local cache's init container adds to the host.
	c.undo = append(c.undo, c.RemoveNodeCacheFromHost)
	return nil
}

func (c *Cluster) start(name string, bin string, args ...string) (*framework.Process, error) {
	p, err := framework.StartProcess(name, filepath.Join(c.Dir, name+".log"), nil, bin, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// inAnchor runs bin in the anchor's mount namespace (nsenter execs it, so
// the process is bin itself).
func (c *Cluster) inAnchor(name, bin string, args ...string) (*framework.Process, error) {
	return framework.StartProcess(name, filepath.Join(c.Dir, name+".log"), nil, "nsenter",
		append([]string{"-t", strconv.Itoa(c.anchor.Pid()), "-m", "--", bin}, args...)...)
}

// AnchorCommand is a command run in the node's mount namespace (ctr).
func (c *Cluster) AnchorCommand(bin string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.anchor.Pid()), "-m", "--", bin}, args...)...) // #nosec G204 -- test harness
}

func (c *Cluster) controlPlane(ctx context.Context) error {
	etcdPort, err := framework.FreePort()
	if err != nil {
		return err
	}
	peerPort, err := framework.FreePort()
	if err != nil {
		return err
	}
	c.loopbackPorts = append(c.loopbackPorts, etcdPort, peerPort)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.Logf("starting etcd, kube-apiserver on %s:%d, kube-controller-manager, kube-scheduler", NodeIP, c.apiPort)
	if _, err := c.start("etcd", filepath.Join(c.assets, "etcd"),
		"--data-dir="+filepath.Join(c.Dir, "etcd"), "--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL, "--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync"); err != nil {
		return err
	}
	p := c.pki
	api, err := c.start("kube-apiserver", filepath.Join(c.assets, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address="+NodeIP, "--advertise-address="+NodeIP, "--secure-port="+strconv.Itoa(c.apiPort),
		"--cert-dir="+filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file="+p.serve.certFile, "--tls-private-key-file="+p.serve.keyFile,
		"--client-ca-file="+p.ca.certFile,
		"--service-account-key-file="+p.saKey, "--service-account-signing-key-file="+p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--enable-aggregator-routing=true",
		"--kubelet-client-certificate="+p.admin.certFile, "--kubelet-client-key="+p.admin.keyFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := p.kubeconfig(c.Kubeconfig, fmt.Sprintf("https://%s:%d", NodeIP, c.apiPort), p.admin); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	if c.Clientset, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: framework.Scheme}); err != nil {
		return err
	}
	if err := framework.Eventually(90*time.Second, 250*time.Millisecond, func() error {
		if exited, err := api.Exited(); exited {
			return framework.Permanent(fmt.Errorf("kube-apiserver exited: %w", err))
		}
		b, err := c.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("apiserver not ready: %w %s", err, b)
		}
		return nil
	}); err != nil {
		return err
	}
	if _, err := c.start("kube-controller-manager", filepath.Join(c.assets, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig, "--root-ca-file="+p.ca.certFile, "--service-account-private-key-file="+p.saKey,
		"--controllers=*", "--leader-elect=false", "--secure-port=0"); err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", filepath.Join(c.assets, "kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0"); err != nil {
		return err
	}
	// The Services kube-proxy serves, and the name CoreDNS answers.
	for _, svc := range []*corev1.Service{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
			Spec: corev1.ServiceSpec{ClusterIP: KubeDNSIP, Selector: map[string]string{"k8s-app": "kube-dns"}, Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}}},
		},
		{
			// node-local-dns's second Service for kube-dns's pods: the
			// cache forwards here (its own address may take over kube-dns's).
			ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-upstream", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
			Spec: corev1.ServiceSpec{ClusterIP: KubeDNSUpstreamIP, Selector: map[string]string{"k8s-app": "kube-dns"}, Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: ServiceName, Namespace: ServiceNamespace},
			Spec:       corev1.ServiceSpec{ClusterIP: ServiceIP, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		},
	} {
		if err := c.ensureNamespace(ctx, svc.Namespace); err != nil {
			return err
		}
		if err := c.Client.Create(ctx, svc); err != nil {
			return fmt.Errorf("create Service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
	}
	return nil
}

func (c *Cluster) ensureNamespace(ctx context.Context, name string) error {
	err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// kubeletTunables are the kernel settings kubelet sets at start, with the
// values it wants (k8s.io/component-helpers/node/util/sysctl).
var kubeletTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func (c *Cluster) node(ctx context.Context) error {
	var err error
	c.Logf("starting containerd and kubelet in a private mount namespace")
	if c.anchor, err = framework.StartProcess("anchor", filepath.Join(c.Dir, "anchor.log"), nil,
		"unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"); err != nil {
		return err
	}
	if err := framework.Eventually(5*time.Second, 20*time.Millisecond, func() error {
		self, _ := os.Readlink("/proc/self/ns/mnt")
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", c.anchor.Pid()))
		if err != nil || ns == self {
			return errors.New("anchor not in its own mount namespace yet")
		}
		return nil
	}); err != nil {
		return err
	}
	script := []string{"set -e", "mount -t tmpfs tmpfs /run", "mount -t tmpfs tmpfs /var/lib", "mount -t tmpfs tmpfs /var/log"}
	sysctlDir := filepath.Join(c.Dir, "sysctl")
	if err := os.MkdirAll(sysctlDir, 0o755); err != nil {
		return err
	}
	for k, want := range kubeletTunables {
		f := filepath.Join(sysctlDir, strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(want+"\n"), 0o644); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %s /proc/sys/%s", f, k))
	}
	if out, err := c.AnchorCommand("sh", "-c", strings.Join(script, "\n")).CombinedOutput(); err != nil {
		return fmt.Errorf("prepare the node's mount namespace: %w: %s", err, out)
	}
	if err := c.startContainerd(ctx); err != nil {
		return err
	}
	coredns, err := framework.BuildTool("coredns")
	if err != nil {
		return err
	}
	c.Logf("building and importing the images")
	tarPath, err := c.buildImages(coredns)
	if err != nil {
		return err
	}
	if out, err := c.AnchorCommand("ctr", "-n", "k8s.io", "images", "import", tarPath).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import: %w: %s", err, out)
	}
	return c.startKubelet(ctx)
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	cniDir := filepath.Join(c.Dir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "dnstune-e2e",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": false, "ipMasq": false,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q, "rangeStart": "10.251.0.10", "gateway": %q}]],
      "routes": [{"dst": "0.0.0.0/0", "gw": %q}]
    }
  }]
}
`, Bridge, PodSubnet, NodeIP, NodeIP)
	if err := os.WriteFile(filepath.Join(cniDir, "10-dnstune-e2e.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, PauseImage, CNIBinDir, cniDir)
	path := filepath.Join(c.Dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	var err error
	if c.ctrd, err = c.inAnchor("containerd", "containerd", "--config", path); err != nil {
		return err
	}
	return framework.Eventually(30*time.Second, 200*time.Millisecond, func() error {
		if exited, err := c.ctrd.Exited(); exited {
			return framework.Permanent(fmt.Errorf("containerd exited: %w", err))
		}
		if out, err := c.AnchorCommand("ctr", "version").CombinedOutput(); err != nil {
			return fmt.Errorf("containerd not answering: %s", out)
		}
		return nil
	})
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	port, err := framework.FreePort()
	if err != nil {
		return err
	}
	healthz, err := framework.FreePort()
	if err != nil {
		return err
	}
	c.loopbackPorts = append(c.loopbackPorts, healthz)
	resolv := filepath.Join(c.Dir, "node-resolv.conf")
	// The node's own resolver: a documentation address, never asked (pods
	// with dnsPolicy Default are only CoreDNS, which does not forward).
	if err := os.WriteFile(resolv, []byte(NodeResolvConf.String()), 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
failSwapOn: false
protectKernelDefaults: false
evictionHard: {memory.available: "1%%", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 200
serializeImagePulls: false
# kubelet would add its canary and KUBE-FIREWALL chains to the host's
# iptables (this node shares the host network namespace; see the package doc).
makeIPTablesUtilChains: false
`, NodeIP, port, healthz, c.pki.ca.certFile, KubeDNSIP, resolv)
	path := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	if c.kubelet, err = c.inAnchor("kubelet", filepath.Join(c.assets, "kubelet"),
		"--config="+path, "--kubeconfig="+c.Kubeconfig, "--hostname-override="+NodeName, "--node-ip="+NodeIP, "--v=1"); err != nil {
		return err
	}
	c.Logf("waiting for node %s to be Ready", NodeName)
	return framework.Eventually(2*time.Minute, 500*time.Millisecond, func() error {
		if exited, err := c.kubelet.Exited(); exited {
			return framework.Permanent(fmt.Errorf("kubelet exited: %w", err))
		}
		n, err := c.Clientset.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready: %v", NodeName, n.Status.Conditions)
	})
}

// corefile is kube-dns's: each CoreDNS pod answers on its own address.
const corefile = `cluster.local:53 {
    file /etc/coredns/cluster.local.zone
    prometheus :` + CoreDNSMetricsPort + `
    errors
}
example.com:53 {
    file /etc/coredns/example.com.zone
    prometheus :` + CoreDNSMetricsPort + `
}
.:53 {
    template ANY ANY {
        rcode NXDOMAIN
    }
    prometheus :` + CoreDNSMetricsPort + `
}
`

// clusterZone holds what kube-dns would answer for the Service the resolver
// tests look up (the project's CoreDNS build has no kubernetes plugin; the
// names and answers are the same).
func (c *Cluster) clusterZone() string {
	z := "$ORIGIN cluster.local.\n@ 3600 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n" +
		"kube-dns.kube-system.svc 5 IN A " + KubeDNSIP + "\n"
	for _, ns := range c.serviceNamespaces {
		z += ServiceName + "." + ns + ".svc 5 IN A " + ServiceIP + "\n"
	}
	return z
}

const externalZone = `$ORIGIN example.com.
@ 3600 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30
www 300 IN A ` + ExternalIP + `
`

// coreDNS runs CoreDNS as CoreDNSReplicas ordinary pods behind the kube-dns
// Service, and returns once a query to the Service, through kube-proxy's
// rules, is answered.
func (c *Cluster) coreDNS(ctx context.Context) error {
	c.Logf("starting CoreDNS: %d pods behind kube-dns", CoreDNSReplicas)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Data:       map[string]string{"Corefile": corefile, "cluster.local.zone": c.clusterZone(), "example.com.zone": externalZone},
	}
	if err := c.Client.Create(ctx, cm); err != nil {
		return err
	}
	labels := map[string]string{"k8s-app": "kube-dns"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](CoreDNSReplicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					DNSPolicy: corev1.DNSDefault,
					Containers: []corev1.Container{{
						Name: "coredns", Image: CoreDNSImage, Args: []string{"-conf", "/etc/coredns/Corefile"},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns"}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(53)}}, PeriodSeconds: 1},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}}}}},
				},
			},
		},
	}
	if err := c.Client.Create(ctx, dep); err != nil {
		return err
	}
	if err := c.WaitDeploymentReady(ctx, "kube-system", "coredns", 2*time.Minute); err != nil {
		return err
	}
	return framework.Eventually(time.Minute, 250*time.Millisecond, func() error {
		if exited, err := c.proxy.Exited(); exited {
			return framework.Permanent(fmt.Errorf("kube-proxy exited: %w", err))
		}
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, net.JoinHostPort(KubeDNSIP, "53"))
		}}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err := r.LookupHost(qctx, "kube-dns.kube-system.svc.cluster.local")
		if err != nil {
			return fmt.Errorf("kube-dns through kube-proxy (%s mode): %w", c.ProxyMode, err)
		}
		if !slices.Contains(addrs, KubeDNSIP) {
			return fmt.Errorf("kube-dns through kube-proxy answered %v, want %s", addrs, KubeDNSIP)
		}
		return nil
	})
}

// KubeDNSMetrics scrapes every CoreDNS pod behind kube-dns: one text per
// pod, in the Prometheus text format.
func (c *Cluster) KubeDNSMetrics(ctx context.Context) ([]string, error) {
	pods, err := c.Clientset.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
	if err != nil {
		return nil, err
	}
	var texts []string
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		text, err := framework.Scrape("http://" + net.JoinHostPort(p.Status.PodIP, CoreDNSMetricsPort) + "/metrics")
		if err != nil {
			return nil, fmt.Errorf("CoreDNS pod %s: %w", p.Name, err)
		}
		texts = append(texts, text)
	}
	if len(texts) != CoreDNSReplicas {
		return nil, fmt.Errorf("scraped %d CoreDNS pods, want %d", len(texts), CoreDNSReplicas)
	}
	return texts, nil
}

// WaitDeploymentReady waits until every replica of a Deployment is updated
// and ready.
func (c *Cluster) WaitDeploymentReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	return framework.Eventually(timeout, 500*time.Millisecond, func() error {
		d, err := c.Clientset.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want || d.Status.ReadyReplicas != want || d.Status.Replicas != want {
			return fmt.Errorf("deployment %s/%s: %d/%d ready, %d updated, %d in all", ns, name, d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas, d.Status.Replicas)
		}
		return nil
	})
}

// Tails returns the last n lines of every log, for failure reports.
func (c *Cluster) Tails(n int) string {
	var b strings.Builder
	for _, p := range append(append([]*framework.Process{}, c.procs...), c.ctrd, c.kubelet, c.proxy) {
		if p != nil {
			fmt.Fprintf(&b, "--- %s (last %d lines) ---\n%s\n", p.Name, n, p.Tail(n))
		}
	}
	return b.String()
}

// Stop tears everything down and checks the host is as Start found it:
// an error lists whatever is left or changed.
func (c *Cluster) Stop() error {
	var errs []error
	if c.kubelet != nil && c.Clientset != nil {
		c.drain()
	}
	c.kubelet.Stop()
	if c.anchor != nil {
		if c.ctrd != nil {
			c.killTasks()
		}
		c.ctrd.Stop()
		if err := c.cleanupKubeRouter(); err != nil {
			errs = append(errs, err)
		}
		if err := c.stopKubeProxy(); err != nil {
			errs = append(errs, err)
		}
		// Whatever still runs in the node's mount namespace (shims,
		// containers): killed, then the anchor, and the namespace is gone.
		c.killMountNamespace()
		c.anchor.Stop()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].Stop()
	}
	for i := len(c.undo) - 1; i >= 0; i-- {
		if err := c.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	if c.before == nil {
		return errors.Join(errs...)
	}
	if err := c.flushConntrack(); err != nil {
		errs = append(errs, err)
	}
	if err := c.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	if err := c.before.RestoreNeighbour(); err != nil {
		errs = append(errs, err)
	}
	now, err := Snapshot()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if d := c.before.Diff(now); len(d) > 0 {
		errs = append(errs, fmt.Errorf("the host is not as it was:\n  %s", strings.Join(d, "\n  ")))
	}
	return errors.Join(errs...)
}

// drain deletes every workload and pod and waits (bounded) for kubelet to
// stop their containers and tear down their sandboxes through CNI.
func (c *Cluster) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nss, err := c.Clientset.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, ns := range nss.Items {
		a := c.Clientset.AppsV1()
		_ = a.DaemonSets(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = a.Deployments(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = a.ReplicaSets(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		_ = c.Clientset.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)}, metav1.ListOptions{})
	}
	_ = framework.Eventually(90*time.Second, time.Second, func() error {
		out, err := c.AnchorCommand("ctr", "-n", "k8s.io", "tasks", "ls", "-q").Output()
		if err != nil {
			return nil
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			return fmt.Errorf("tasks still running: %s", s)
		}
		return nil
	})
}

// killTasks kills and deletes every container containerd still has.
func (c *Cluster) killTasks() {
	out, _ := c.AnchorCommand("ctr", "-n", "k8s.io", "tasks", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = c.AnchorCommand("ctr", "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).Run()
	}
	time.Sleep(500 * time.Millisecond)
	for _, id := range strings.Fields(string(out)) {
		_ = c.AnchorCommand("ctr", "-n", "k8s.io", "tasks", "rm", "-f", id).Run()
	}
}

// killMountNamespace SIGKILLs every process in the anchor's mount namespace
// but the anchor.
func (c *Cluster) killMountNamespace() {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", c.anchor.Pid()))
	if err != nil {
		return
	}
	for range 3 {
		procs, _ := filepath.Glob("/proc/[0-9]*")
		found := false
		for _, p := range procs {
			pid, _ := strconv.Atoi(filepath.Base(p))
			if pid == c.anchor.Pid() {
				continue
			}
			if l, err := os.Readlink(p + "/ns/mnt"); err == nil && l == ns {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// removeCgroups removes the cgroup folders kubelet and runc made (kubepods
// and below), deepest first; they are empty once every container is gone.
func (c *Cluster) removeCgroups() error {
	now, err := Snapshot()
	if err != nil {
		return err
	}
	var left []string
	for _, d := range now.Cgroups {
		if slices.Contains(c.before.Cgroups, d) {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var rerr error
			for range 20 {
				if rerr = syscall.Rmdir(dirs[i]); rerr == nil || errors.Is(rerr, syscall.ENOENT) {
					rerr = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if rerr != nil {
				left = append(left, fmt.Sprintf("%s: %v", dirs[i], rerr))
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("cgroup folders not removed: %s", strings.Join(left, "; "))
	}
	return nil
}
