package kubenode

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/internal/resolvconf"
)

// sh runs a shell command line from the repository root with the cluster's
// kubeconfig, as a user types it; it fails t on error.
func sh(t *testing.T, c *Cluster, line string) string {
	t.Helper()
	out, err := shErr(c, line)
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

func shErr(c *Cluster, line string) (string, error) {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", line)
	cmd.Dir = framework.RepoRoot()
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// kubectlExec runs a command in a pod's first container.
func kubectlExec(c *Cluster, ns, pod string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"exec", "-n", ns, pod, "--"}, args...)...) // #nosec G204 -- test
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl exec %s/%s %v: %w: %s", ns, pod, args, err, errb.String())
	}
	return out.String(), nil
}

// clientDeployment is one replica of the client image sleeping, so tests can
// exec into it.
func clientDeployment(ns, name, image string) *appsv1.Deployment {
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

// runningPod returns the one running pod of a Deployment (by its app label).
func runningPod(ctx context.Context, c *Cluster, ns, app string) (*corev1.Pod, error) {
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

// readResolvConf reads /etc/resolv.conf from a running container: the file
// the real kubelet wrote.
func readResolvConf(c *Cluster, pod *corev1.Pod) (resolvconf.Config, string, error) {
	out, err := kubectlExec(c, pod.Namespace, pod.Name, "cat", "/etc/resolv.conf")
	if err != nil {
		return resolvconf.Config{}, "", err
	}
	return resolvconf.Parse(out), out, nil
}

// sameResolvConf compares nameservers and searches in order and options as
// a set (kubelet merges options through a map: their order varies).
func sameResolvConf(got, want resolvconf.Config) bool {
	a, b := slices.Clone(got.Options), slices.Clone(want.Options)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(got.Nameservers, want.Nameservers) && slices.Equal(got.Searches, want.Searches) && slices.Equal(a, b)
}

func scrape(url string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// warnings collects the admission warnings a client receives.
type warnings struct {
	mu  sync.Mutex
	all []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all = append(w.all, text)
}

func (w *warnings) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.all, "\n")
}

// metric is the sum of a metric's samples with these labels in a scrape.
func metric(t *testing.T, text, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	m, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	return m.Value(name, labels)
}
