package kubenode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/e2e/resolvconf"
)

// InstallCommand and UninstallCommand are the README's, run verbatim from
// the repository root (the tests check the README still says exactly this).
const (
	InstallCommand   = `sed 's|ghcr.io/dnstune/dnstune:0.1.0|ghcr.io/dnstune/dnstune:dev|' manifests/install.yaml | kubectl apply -f -`
	UninstallCommand = `kubectl delete -f manifests/install.yaml`

	HelmInstallCommand   = `helm install dnstune manifests/dnstune --namespace dnstune-system --create-namespace --set image.tag=dev --wait --timeout 3m`
	HelmUninstallCommand = `helm uninstall dnstune --namespace dnstune-system --wait && kubectl delete namespace dnstune-system`
)

// Shell runs a command line with bash from the repository root with the
// cluster's kubeconfig, as a user types it, and returns its output.
func (c *Cluster) Shell(line string) (string, error) {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", line) // #nosec G204 -- the harness's own command lines
	cmd.Dir = framework.RepoRoot()
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	if helm, err := framework.Helm(); err == nil { // helm on PATH, as for a user
		cmd.Env = append(cmd.Env, "PATH="+filepath.Dir(helm)+":"+os.Getenv("PATH"))
	}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// Exec runs a command in a pod's first container with kubectl exec.
func (c *Cluster) Exec(ns, pod string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"exec", "-n", ns, pod, "--"}, args...)...) // #nosec G204 -- test
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl exec %s/%s %v: %w: %s", ns, pod, args, err, errb.String())
	}
	return out.String(), nil
}

// ReadResolvConf reads /etc/resolv.conf from a running container: the file
// the real kubelet wrote. It returns the parsed file and its text.
func (c *Cluster) ReadResolvConf(pod *corev1.Pod) (resolvconf.Config, string, error) {
	out, err := c.Exec(pod.Namespace, pod.Name, "cat", "/etc/resolv.conf")
	if err != nil {
		return resolvconf.Config{}, "", err
	}
	return resolvconf.Parse(out), out, nil
}

// RunningPod returns a running pod with label app=app in ns.
func (c *Cluster) RunningPod(ctx context.Context, ns, app string) (*corev1.Pod, error) {
	pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running pod with app=%s in %s", app, ns)
}

// NodeResolvConf is the node's resolv.conf as kubelet reads it
// (--resolv-conf): pods with dnsPolicy Default get it.
var NodeResolvConf = resolvconf.Config{Nameservers: []string{"192.0.2.53"}}

// ClientDeployment is one replica of image sleeping (non-root, no
// capabilities), so tests and the demo can exec into it.
func ClientDeployment(ns, name, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{
						Name: "client", Image: image, Command: []string{"/bin/sleep", "infinity"},
						SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](65534), AllowPrivilegeEscalation: ptr.To(false),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
				},
			},
		},
	}
}

// WaitDaemonSetReady waits until a DaemonSet's pod on the node is ready.
func (c *Cluster) WaitDaemonSetReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	return framework.Eventually(timeout, time.Second, func() error {
		ds, err := c.Clientset.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.DesiredNumberScheduled != 1 || ds.Status.NumberReady != 1 {
			return fmt.Errorf("DaemonSet %s/%s: %d/%d ready", ns, name, ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
		}
		return nil
	})
}

// HostBefore is the host's state as Start found it.
func (c *Cluster) HostBefore() *HostState { return c.before }

// PodNetNS returns the path of a running pod's network namespace
// (/proc/PID/ns/net of its first container's process, from containerd).
func (c *Cluster) PodNetNS(ctx context.Context, pod *corev1.Pod) (string, error) {
	if len(pod.Status.ContainerStatuses) == 0 {
		return "", fmt.Errorf("pod %s/%s has no container status yet", pod.Namespace, pod.Name)
	}
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := c.AnchorCommand("ctr", "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ctr tasks ls: %w: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			return "/proc/" + f[1] + "/ns/net", nil
		}
	}
	return "", fmt.Errorf("containerd has no task %s (pod %s/%s)", id, pod.Namespace, pod.Name)
}

// clusterRoleBinding binds the ClusterRole name to the ServiceAccount
// ns/sa, under the ClusterRole's name.
func clusterRoleBinding(name, ns, sa string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	}
}

// waitPodsGone waits until no pod of namespace ns matches selector.
func (c *Cluster) waitPodsGone(ctx context.Context, ns, selector string, timeout time.Duration) error {
	return framework.Eventually(timeout, 500*time.Millisecond, func() error {
		pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods %s left in %s", len(pods.Items), selector, ns)
		}
		return nil
	})
}
