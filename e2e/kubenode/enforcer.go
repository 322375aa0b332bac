package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

// The NetworkPolicy enforcer of the real node: kube-router v2 with only its
// NetworkPolicy controller (--run-firewall; no router, no service proxy),
// deployed as its kube-router-firewall-daemonset.yaml deploys it (a
// privileged hostNetwork DaemonSet in kube-system, the xtables lock and
// /lib/modules from the node) with the ClusterRole of its generic
// manifests, but under a ServiceAccount instead of a kubeconfig on the
// node. Its image holds the node's own iptables (iptables-nft) and ipset:
// kube-router enforces with iptables chains and ipsets, pod egress in the
// INPUT chain too (traffic to the node itself, where the node-local cache
// listens). Why kube-router: SIG Network's kube-network-policies sends
// packets to user space with nftables' queue expression, which this kernel
// lacks (CONFIG_NFT_QUEUE is not set).
const (
	// KubeRouterHealthPort is kube-router's health check on the node.
	KubeRouterHealthPort = 20244
	// KubeRouterMetricsPort serves its Prometheus metrics on the node.
	KubeRouterMetricsPort = 20245
)

// kubeRouterImageDir lays out the kube-router image: the binary, busybox
// (sh, for the tool wrappers) and the node's iptables and ipset.
func kubeRouterImageDir(dir, kubeRouter, busybox string) error {
	for _, d := range []string{dir + "/bin", dir + "/usr/local/bin", dir + "/tmp"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(kubeRouter, filepath.Join(dir, "usr", "local", "bin", "kube-router"), 0o755); err != nil {
		return err
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin", "sh")); err != nil {
		return err
	}
	var tools []hostTool
	for _, t := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		tools = append(tools, hostTool{name: t})
	}
	return hostTools(dir, append(tools, hostTool{name: "ipset"}))
}

// InstallKubeRouter deploys the enforcer and waits until its pod is ready
// and it has synced its rules once.
func (c *Cluster) InstallKubeRouter(ctx context.Context) error {
	if err := c.importKubeRouterImage(); err != nil {
		return err
	}
	labels := map[string]string{"k8s-app": "kube-router"}
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kube-router", Namespace: "kube-system"}},
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-router"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "services", "nodes", "endpoints"}, Verbs: []string{"list", "get", "watch"}},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "get", "watch"}},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
				{APIGroups: []string{""}, Resources: []string{"services/status"}, Verbs: []string{"update"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			},
		},
		clusterRoleBinding("kube-router", "kube-system", "kube-router"),
		&appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-router", Namespace: "kube-system", Labels: labels},
			Spec: appsv1.DaemonSetSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						ServiceAccountName: "kube-router",
						HostNetwork:        true,
						PriorityClassName:  "system-node-critical",
						Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
						Containers: []corev1.Container{{
							Name: "kube-router", Image: KubeRouterImage,
							Args: []string{
								"--run-router=false", "--run-firewall=true", "--run-service-proxy=false",
								"--hostname-override=$(NODE_NAME)",
								"--service-cluster-ip-range=" + ServiceCIDR,
								fmt.Sprintf("--health-port=%d", KubeRouterHealthPort),
								fmt.Sprintf("--metrics-port=%d", KubeRouterMetricsPort),
								"--v=1",
							},
							Env:             []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
							SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
							ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/healthz", Host: NodeIP, Port: intstr.FromInt32(KubeRouterHealthPort)}}, PeriodSeconds: 1},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true},
								{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
							},
						}},
						Volumes: []corev1.Volume{
							{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules"}}},
							{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
								Path: "/run/xtables.lock", Type: ptr.To(corev1.HostPathFileOrCreate)}}},
						},
					},
				},
			},
		},
	}
	for _, o := range objs {
		if err := c.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	c.enforcer = true
	return framework.Eventually(2*time.Minute, 500*time.Millisecond, func() error {
		ds, err := c.Clientset.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-router", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.NumberReady != 1 {
			return fmt.Errorf("kube-router: %d/1 ready", ds.Status.NumberReady)
		}
		n, err := c.KubeRouterSyncs()
		if err != nil {
			return fmt.Errorf("kube-router's metrics: %w", err)
		}
		if n == 0 {
			return errors.New("kube-router has not synced its rules yet")
		}
		return nil
	})
}

// importKubeRouterImage builds the kube-router image (only the suites that
// run the enforcer need it) and imports it into the node's containerd.
func (c *Cluster) importKubeRouterImage() error {
	bin, err := framework.BuildTool("kube-router")
	if err != nil {
		return err
	}
	dir := filepath.Join(c.Dir, "images", "kube-router")
	if err := kubeRouterImageDir(dir, bin, c.busybox); err != nil {
		return err
	}
	return c.importImage(KubeRouterImage, dir, []string{"/usr/local/bin/kube-router"})
}

// KubeRouterSyncs is how many times kube-router has synced its iptables
// rules (kube_router_controller_iptables_sync_time's count).
func (c *Cluster) KubeRouterSyncs() (float64, error) {
	text, err := framework.Scrape(fmt.Sprintf("http://%s:%d/metrics", NodeIP, KubeRouterMetricsPort))
	if err != nil {
		return 0, err
	}
	m, err := framework.ParseMetrics(text)
	if err != nil {
		return 0, err
	}
	n, _ := m.Value("kube_router_controller_iptables_sync_time_count", nil)
	return n, nil
}

// RemoveKubeRouter deletes the enforcer and removes what it put on the node
// (its chains, jumps and ipsets: cleanupKubeRouter).
func (c *Cluster) RemoveKubeRouter(ctx context.Context) error {
	var errs []error
	bg := metav1.DeletePropagationBackground
	for _, o := range []client.Object{
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "kube-router", Namespace: "kube-system"}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kube-router"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kube-router"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kube-router", Namespace: "kube-system"}},
	} {
		if err := c.Client.Delete(ctx, o, &client.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := c.waitPodsGone(ctx, "kube-system", "k8s-app=kube-router", time.Minute); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, c.cleanupKubeRouter())...)
}

// cleanupKubeRouter removes what kube-router put on the node, once it
// installed: the jumps to its chains from INPUT, FORWARD and OUTPUT, its
// chains (KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*), in iptables and
// ip6tables, then the ipsets that were not on the host before. Not
// kube-router --cleanup-config: in v2.1.0 it cleans a zero-value
// NetworkPolicyController that holds no iptables handler (so it removes
// nothing), then panics in the service proxy's cleanup
// (deleteHairpinIptablesRules, a nil dereference).
func (c *Cluster) cleanupKubeRouter() error {
	if !c.enforcer {
		return nil
	}
	ours := func(chain string) bool {
		for _, p := range []string{"KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-"} {
			if strings.HasPrefix(chain, p) {
				return true
			}
		}
		return false
	}
	var errs []error
	for _, family := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(family+"-save", "-t", "filter").Output() // #nosec G204 -- fixed commands
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-save: %w", family, err))
			continue
		}
		var jumps, chains []string
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 0 && strings.HasPrefix(f[0], ":") && ours(f[0][1:]):
				chains = append(chains, f[0][1:])
			case len(f) > 2 && f[0] == "-A" && !ours(f[1]) && f[len(f)-2] == "-j" && ours(f[len(f)-1]):
				jumps = append(jumps, "-D"+strings.TrimPrefix(line, "-A"))
			}
		}
		if len(chains) == 0 && len(jumps) == 0 {
			continue
		}
		script := "*filter\n" + strings.Join(jumps, "\n") + "\n"
		for _, ch := range chains {
			script += "-F " + ch + "\n"
		}
		for _, ch := range chains {
			script += "-X " + ch + "\n"
		}
		cmd := exec.Command(family+"-restore", "--noflush") // #nosec G204 -- fixed commands
		cmd.Stdin = strings.NewReader(script + "COMMIT\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s-restore --noflush (remove kube-router's rules): %w: %s\n%s", family, err, out, script))
		}
	}
	sets, err := ipsets()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, set := range sets {
		if !slices.Contains(c.before.IPSets, set) {
			if err := run("ipset", "destroy", set); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		c.enforcer = false
	}
	return errors.Join(errs...)
}

// ipsets lists the host's ipset names.
func ipsets() ([]string, error) {
	out, err := exec.Command("ipset", "list", "-n").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ipset list -n: %w: %s", err, out)
	}
	return strings.Fields(string(out)), nil
}
