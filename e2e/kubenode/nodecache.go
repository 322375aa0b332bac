package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The node-local DNS cache, run the way NodeLocal DNSCache runs it: a
// hostNetwork DaemonSet in kube-system, its address on a dummy interface of
// the node with NOTRACK rules for port 53, forwarding over TCP to a
// kube-dns-upstream Service. The upstream node-cache binary is not on the Go
// module proxy, so this is CoreDNS (the project's build, hack/tools/coredns)
// configured as node-cache configures its CoreDNS, with node-cache's network
// setup done by an init container (the node's own ip and nft).
const (
	// NodeLocalIP is the cache's address (the policy's nodeLocalDNS default).
	NodeLocalIP = "169.254.20.10"
	// NodeLocalLink is the dummy interface that holds it, as node-cache names it.
	NodeLocalLink = "nodelocaldns"
	// KubeDNSUpstreamIP is the kube-dns-upstream Service: kube-dns's pods
	// under a second ClusterIP, so the cache's own queries reach them.
	KubeDNSUpstreamIP = "10.0.0.11"
	// NodeLocalMetrics is the cache's Prometheus endpoint.
	NodeLocalMetrics = "http://" + NodeLocalIP + ":9253/metrics"
	// NodeCacheImage holds CoreDNS at /coredns, busybox, and the node's ip
	// and nft (run through their own loader and libraries, /opt/hosttools).
	NodeCacheImage = "dnstune.test/node-cache:1"

	nodeLocalTable = "nodelocaldns"
)

// nodeLocalCorefile is node-local-dns's Corefile (kubernetes/dns,
// cmd/node-cache) with its placeholders filled: the cluster domain and the
// reverse zones forward to kube-dns-upstream over TCP; "." forwards there
// too, since kube-dns answers this cluster's external test zone and the
// node's own resolver (what node-cache puts there) is not reachable here.
// The cluster domain caches longer and serves the health endpoint.
func nodeLocalCorefile(ip string) string {
	return nodeLocalServer(ip, "cluster.local", "cache {\n        success 9984 30\n        denial 9984 5\n    }", "\n    health "+ip+":8080") +
		nodeLocalServer(ip, "in-addr.arpa", "cache 30", "") + nodeLocalServer(ip, "ip6.arpa", "cache 30", "") + nodeLocalServer(ip, ".", "cache 30", "")
}

func nodeLocalServer(ip, zone, cache, extra string) string {
	return zone + `:53 {
    errors
    ` + cache + `
    reload
    loop
    bind ` + ip + `
    forward . ` + KubeDNSUpstreamIP + ` {
        force_tcp
    }
    prometheus ` + ip + `:9253` + extra + `
}
`
}

// nodeCache is one node-local cache: its DaemonSet and ConfigMap name, its
// address, the link that holds it and its NOTRACK table.
type nodeCache struct{ name, ip, link, table string }

// theNodeCache is NodeLocal DNSCache at the policy's address.
var theNodeCache = nodeCache{name: "node-local-dns", ip: NodeLocalIP, link: NodeLocalLink, table: nodeLocalTable}

// OtherNodeCache is a node-local cache at AKS LocalDNS's pod address,
// 169.254.10.11 (the same CoreDNS setup): a platform whose cache is not
// where the policy says.
var OtherNodeCache = nodeCache{name: "localdns", ip: "169.254.10.11", link: "localdns", table: "localdns"}

// nodeLocalNotrack is node-cache's raw-table rules (iptables -t raw …
// -j NOTRACK for port 53 to and from its address), as one nft table that
// replaces itself when the init container runs again.
func (n nodeCache) notrack() string {
	return `add table ip ` + n.table + `
delete table ip ` + n.table + `
table ip ` + n.table + ` {
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    ip daddr ` + n.ip + ` udp dport 53 notrack
    ip daddr ` + n.ip + ` tcp dport 53 notrack
  }
  chain output {
    type filter hook output priority raw; policy accept;
    ip saddr ` + n.ip + ` udp sport 53 notrack
    ip saddr ` + n.ip + ` tcp sport 53 notrack
    ip daddr ` + n.ip + ` udp dport 53 notrack
    ip daddr ` + n.ip + ` tcp dport 53 notrack
  }
}
`
}

// nodeLocalSetup is the init container's script: what node-cache does at
// start (the dummy interface, its address, the NOTRACK rules); idempotent.
// The tools are named by path: busybox's shell runs its own applets (its ip
// has no dummy links) before anything on PATH. A kernel built without the
// dummy driver (CONFIG_DUMMY, as on the VMs this suite runs on) gets an
// empty bridge instead: it holds a local address the same way.
func (n nodeCache) setup() string {
	return `set -e
ip=/usr/local/bin/ip nft=/usr/local/bin/nft
$ip link show ` + n.link + ` > /dev/null 2>&1 ||
  $ip link add ` + n.link + ` type dummy 2> /dev/null ||
  $ip link add ` + n.link + ` type bridge
$ip addr replace ` + n.ip + `/32 dev ` + n.link + `
$ip link set ` + n.link + ` up
$nft -f /etc/coredns/notrack.nft
echo "` + n.link + ` holds ` + n.ip + `; NOTRACK rules in table ip ` + n.table + `"
`
}

// InstallNodeCache creates the node-local cache's ConfigMap and DaemonSet
// (again, after DeleteNodeCache) and waits until it is ready on the node.
func (c *Cluster) InstallNodeCache(ctx context.Context) error {
	return c.installCache(ctx, theNodeCache)
}

// InstallOtherNodeCache runs OtherNodeCache beside (or instead of) the
// policy's.
func (c *Cluster) InstallOtherNodeCache(ctx context.Context) error {
	return c.installCache(ctx, OtherNodeCache)
}

// DeleteOtherNodeCache deletes OtherNodeCache and what it added to the host.
func (c *Cluster) DeleteOtherNodeCache(ctx context.Context) error {
	if err := c.deleteCache(ctx, OtherNodeCache); err != nil {
		return err
	}
	return removeCacheFromHost(OtherNodeCache)
}

func (c *Cluster) installCache(ctx context.Context, n nodeCache) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: "kube-system"},
		Data:       map[string]string{"Corefile": nodeLocalCorefile(n.ip), "notrack.nft": n.notrack()},
	}
	if err := c.Client.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	labels := map[string]string{"k8s-app": n.name}
	health := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Host: n.ip, Port: intstr.FromInt32(8080), Path: "/health"}}, PeriodSeconds: 1}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   true,
					DNSPolicy:                     corev1.DNSDefault,
					PriorityClassName:             "system-node-critical",
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					InitContainers: []corev1.Container{{
						Name: "setup", Image: NodeCacheImage, Command: []string{"/bin/sh", "-c", n.setup()},
						SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns"}},
					}},
					Containers: []corev1.Container{{
						Name: "node-cache", Image: NodeCacheImage, Args: []string{"-conf", "/etc/coredns/Corefile"},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 9253, Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: health, LivenessProbe: health,
						SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns"}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: n.name}}}}},
				},
			},
		},
	}
	if err := c.Client.Create(ctx, ds); err != nil {
		return fmt.Errorf("create DaemonSet kube-system/%s: %w", n.name, err)
	}
	return c.WaitDaemonSetReady(ctx, "kube-system", n.name, 2*time.Minute)
}

// DeleteNodeCache deletes the DaemonSet and waits until its pod is gone.
// Like node-cache killed without its teardown, it leaves the interface and
// the NOTRACK rules behind: the address stays local, and a query to it is
// refused at once (ICMP port unreachable).
func (c *Cluster) DeleteNodeCache(ctx context.Context) error { return c.deleteCache(ctx, theNodeCache) }

func (c *Cluster) deleteCache(ctx context.Context, n nodeCache) error {
	err := c.Clientset.AppsV1().DaemonSets("kube-system").Delete(ctx, n.name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return c.waitPodsGone(ctx, "kube-system", "k8s-app="+n.name, 90*time.Second)
}

// RemoveNodeCacheFromHost removes what the cache's init container added to
// the node (the interface and the NOTRACK table), as on a node the cache
// never ran on. Missing parts are not an error.
func (c *Cluster) RemoveNodeCacheFromHost() error {
	return errors.Join(removeCacheFromHost(theNodeCache), removeCacheFromHost(OtherNodeCache))
}

func removeCacheFromHost(n nodeCache) error {
	var errs []error
	if _, err := os.Stat("/sys/class/net/" + n.link); err == nil {
		if err := run("ip", "link", "del", n.link); err != nil {
			errs = append(errs, err)
		}
	}
	if exec.Command("nft", "list", "table", "ip", n.table).Run() == nil {
		if err := run("nft", "delete", "table", "ip", n.table); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// nodeCacheImageDir lays out the node-cache image: CoreDNS, busybox (sh),
// and the node's ip and nft (hostTools).
func nodeCacheImageDir(dir, coredns, busybox string) error {
	if err := os.MkdirAll(dir+"/bin", 0o755); err != nil {
		return err
	}
	if err := copyFile(coredns, filepath.Join(dir, "coredns"), 0o755); err != nil {
		return err
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return fmt.Errorf("busybox for the node-cache image (from the client image's busybox-static): %w", err)
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin", "sh")); err != nil {
		return err
	}
	return hostTools(dir, []hostTool{{name: "ip"}, {name: "nft"}})
}
