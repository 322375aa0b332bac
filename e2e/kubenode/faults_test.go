//go:build e2e

package kubenode

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
)

// createStorm creates n pods from clients goroutines in an opted-in
// namespace while disrupt runs, and returns how many creates failed and how
// many pods were admitted unmutated. The pods never run (their nodeSelector
// matches no node): what is measured is admission.
func createStorm(t *testing.T, ctx context.Context, c *Cluster, tag string, n, clients int, disrupt func()) (failed []string, unmutated int) {
	t.Helper()
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				pod := stormPod(fmt.Sprintf("%s-%03d", tag, i))
				got, err := c.Clientset.CoreV1().Pods("e2e-faults").Create(ctx, pod, metav1.CreateOptions{})
				mu.Lock()
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s: %v", pod.Name, err))
				} else if got.Annotations["dnstune.io/profile"] == "" {
					unmutated++
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // a steady stream over the disruption, not one burst
			}
		}()
	}
	disrupt()
	wg.Wait()
	return failed, unmutated
}

// stormPod is a pod of the create storms, in e2e-faults (opted in): never
// scheduled, so only admission is exercised.
func stormPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "e2e-faults"},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"dnstune.test/never": "true"},
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers:                    []corev1.Container{{Name: "c", Image: GlibcClientImage}},
		},
	}
}

func stepFaults(t *testing.T, ctx context.Context, c *Cluster) {
	if err := c.ensureNamespace(ctx, "e2e-faults"); err != nil {
		t.Fatal(err)
	}
	sh(t, c, "kubectl label ns e2e-faults dnstune.io/inject=enabled --overwrite")
	webhookPods := func() []corev1.Pod {
		pods, err := c.Clientset.CoreV1().Pods("dnstune-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=webhook"})
		if err != nil {
			t.Fatal(err)
		}
		return pods.Items
	}
	t.Run("delete-a-webhook-pod", func(t *testing.T) {
		victim := webhookPods()[0].Name
		failed, unmutated := createStorm(t, ctx, c, "del", 300, 6, func() {
			time.Sleep(time.Second)
			if err := c.Clientset.CoreV1().Pods("dnstune-system").Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		})
		if len(failed) > 0 {
			t.Errorf("%d of 300 creates failed while webhook pod %s was deleted:\n%s", len(failed), victim, strings.Join(failed, "\n"))
		}
		t.Logf("300 creates by 6 clients, webhook pod %s deleted after 1 s: %d failed, %d admitted unmutated", victim, len(failed), unmutated)
		if err := c.WaitDeploymentReady(ctx, "dnstune-system", "dnstune-webhook", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("rollout-restart", func(t *testing.T) {
		failed, unmutated := createStorm(t, ctx, c, "roll", 300, 6, func() {
			time.Sleep(time.Second)
			sh(t, c, "kubectl -n dnstune-system rollout restart deployment/dnstune-webhook")
		})
		if len(failed) > 0 {
			t.Errorf("%d of 300 creates failed during kubectl rollout restart:\n%s", len(failed), strings.Join(failed, "\n"))
		}
		t.Logf("300 creates by 6 clients during kubectl rollout restart of the webhook: %d failed, %d admitted unmutated", len(failed), unmutated)
		sh(t, c, "kubectl -n dnstune-system rollout status deployment/dnstune-webhook --timeout=180s")
	})
	t.Run("kill-the-monitor", func(t *testing.T) {
		pod, restarts := killContainer(t, ctx, c, "dnstune-system", "app.kubernetes.io/component=node", "monitor")
		if err := framework.Eventually(2*time.Minute, time.Second, func() error {
			p, err := c.Clientset.CoreV1().Pods("dnstune-system").Get(ctx, pod, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.Name == "monitor" && s.RestartCount > restarts && s.Ready {
					return nil
				}
			}
			return fmt.Errorf("monitor not restarted and ready yet: %+v", p.Status.ContainerStatuses)
		}); err != nil {
			t.Fatal(err)
		}
		checkThresholds(t, c)
		t.Log("monitor SIGKILLed: kubelet restarted it, thresholds still raised")
	})
	_ = c.Clientset.CoreV1().Pods("e2e-faults").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
}
