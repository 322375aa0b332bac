//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

// 1. Opted-in namespace: a bare Pod gets the profile's options and annotation.
func TestOptedInNamespace(t *testing.T) {
	ns := namespace(t, "enabled", enabled())
	p, _ := create(t, newPod(ns))
	assertMutated(t, p, "resilient", resilientOptions)
}

// 2. A Deployment: the ReplicaSet controller's pods are mutated.
func TestDeploymentPods(t *testing.T) {
	ns := namespace(t, "deploy", enabled())
	ctx := context.Background()
	dep := createWebDeployment(t, ns)
	labels := dep.Spec.Selector.MatchLabels
	var pods corev1.PodList
	eventually(t, 60*time.Second, func() error {
		if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
			return err
		}
		if len(pods.Items) < 2 {
			return fmt.Errorf("%d pods created by the ReplicaSet controller, want 2", len(pods.Items))
		}
		return nil
	})
	for i := range pods.Items {
		p := &pods.Items[i]
		if len(p.OwnerReferences) == 0 || p.OwnerReferences[0].Kind != "ReplicaSet" {
			t.Errorf("pod %s not created by a ReplicaSet: %v", p.Name, p.OwnerReferences)
		}
		assertMutated(t, p, "resilient", resilientOptions)
	}
}

// 3. Namespaces without the label, and excluded ones even with it: untouched.
func TestNotOptedIn(t *testing.T) {
	t.Run("no label", func(t *testing.T) {
		p, _ := create(t, newPod(namespace(t, "plain", nil)))
		assertUntouched(t, p)
	})
	t.Run("label with another value", func(t *testing.T) {
		p, _ := create(t, newPod(namespace(t, "other", map[string]string{"dnstune.io/inject": "yes"})))
		assertUntouched(t, p)
	})
	t.Run("kube-system with the label", func(t *testing.T) {
		ctx := context.Background()
		var ns corev1.Namespace
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "kube-system"}, &ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels["dnstune.io/inject"] = "enabled"
		if err := env.Client.Update(ctx, &ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = env.Client.Get(ctx, client.ObjectKey{Name: "kube-system"}, &ns)
			delete(ns.Labels, "dnstune.io/inject")
			_ = env.Client.Update(ctx, &ns)
		})
		p, _ := create(t, newPod("kube-system"))
		t.Cleanup(func() { _ = env.Client.Delete(ctx, p) })
		assertUntouched(t, p)
	})
}

// 4. A pod labelled dnstune.io/inject=disabled is untouched.
func TestPodOptOut(t *testing.T) {
	ns := namespace(t, "optout", enabled())
	p, _ := create(t, newPod(ns, func(p *corev1.Pod) { p.Labels["dnstune.io/inject"] = "disabled" }))
	assertUntouched(t, p)
}

// 5. Profile nodelocal: dnsPolicy None, [node-local, discovered kube-dns], namespace searches.
func TestNodeLocalProfile(t *testing.T) {
	ns := namespace(t, "nodelocal", map[string]string{"dnstune.io/inject": "enabled", "dnstune.io/profile": "nodelocal"})
	p, _ := create(t, newPod(ns))
	if p.Spec.DNSPolicy != corev1.DNSNone {
		t.Errorf("dnsPolicy = %s, want None", p.Spec.DNSPolicy)
	}
	if p.Spec.DNSConfig == nil {
		t.Fatal("no dnsConfig")
	}
	if got, want := p.Spec.DNSConfig.Nameservers, []string{"169.254.20.10", framework.KubeDNSIP}; !slices.Equal(got, want) {
		t.Errorf("nameservers = %v, want %v", got, want)
	}
	if got, want := p.Spec.DNSConfig.Searches, []string{ns + ".svc.cluster.local", "svc.cluster.local", "cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("searches = %v, want %v", got, want)
	}
	assertMutated(t, p, "nodelocal", "ndots:2 timeout:1 attempts:2")
}

// 6. Audit namespace: unchanged pod, a warning to the client, an audit annotation in the audit log.
func TestAuditNamespace(t *testing.T) {
	ns := namespace(t, "audit", map[string]string{"dnstune.io/inject": "audit"})
	p, warnings := create(t, newPod(ns))
	assertUntouched(t, p)
	want := "dnstune audit: would apply profile resilient (options): add options " + resilientOptions
	if !slices.Contains(warnings, want) {
		t.Errorf("warnings = %q, want %q", warnings, want)
	}
	key := `"pods.dnstune.io/would-mutate":"profile resilient (options): add options ` + resilientOptions + `"`
	eventually(t, 10*time.Second, func() error {
		log := framework.TailFile(env.AuditLog, 5000)
		for _, line := range strings.Split(log, "\n") {
			// The pod has a generated name, so the event names only its namespace.
			if strings.Contains(line, `"objectRef":{"resource":"pods","namespace":"`+ns+`"`) && strings.Contains(line, key) {
				return nil
			}
		}
		return fmt.Errorf("no audit event for pod %s/%s with %s", ns, p.Name, key)
	})
}

// 7. hostNetwork, dnsPolicy Default and None, and the pod's own options.
func TestDNSPolicies(t *testing.T) {
	ns := namespace(t, "policies", enabled())
	t.Run("hostNetwork ClusterFirst is skipped", func(t *testing.T) {
		p, _ := create(t, newPod(ns, func(p *corev1.Pod) { p.Spec.HostNetwork = true }))
		assertUntouched(t, p)
	})
	t.Run("hostNetwork ClusterFirstWithHostNet is mutated", func(t *testing.T) {
		p, _ := create(t, newPod(ns, func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet }))
		assertMutated(t, p, "resilient", resilientOptions)
	})
	t.Run("Default is skipped", func(t *testing.T) {
		p, _ := create(t, newPod(ns, func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }))
		assertUntouched(t, p)
	})
	t.Run("None is skipped", func(t *testing.T) {
		p, _ := create(t, newPod(ns, func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
		}))
		if p.Annotations["dnstune.io/profile"] != "" || options(p) != "" || !slices.Equal(p.Spec.DNSConfig.Nameservers, []string{"1.1.1.1"}) {
			t.Errorf("dnsPolicy None pod changed: %+v %v", p.Spec.DNSConfig, p.Annotations)
		}
	})
	t.Run("the pod's own options win", func(t *testing.T) {
		p, _ := create(t, newPod(ns, func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("1")}, {Name: "edns0"}}}
		}))
		assertMutated(t, p, "resilient", "ndots:1 edns0 timeout:1 attempts:3 single-request-reopen")
	})
}

// 8. A kube-dns pod in an opted-in namespace is untouched.
func TestDNSServerPod(t *testing.T) {
	ns := namespace(t, "dnsserver", enabled())
	p, _ := create(t, newPod(ns, func(p *corev1.Pod) { p.Labels["k8s-app"] = "kube-dns" }))
	assertUntouched(t, p)
}

// 9. Server-side dry run returns the mutated pod and stores nothing.
func TestServerSideDryRun(t *testing.T) {
	ns := namespace(t, "dryrun", enabled())
	p := newPod(ns, func(p *corev1.Pod) { p.GenerateName, p.Name = "", "dry" })
	p, _ = create(t, p, client.DryRunAll)
	assertMutated(t, p, "resilient", resilientOptions)
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "dry"}, &corev1.Pod{})
	if !isNotFound(err) {
		t.Fatalf("dry-run pod was stored (get: %v)", err)
	}
}

// 13. Reinvocation: another webhook changes the pod after dnstune, the
// apiserver calls dnstune again, and nothing is added twice.
func TestReinvocation(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "reinvoke", enabled())
	startRelabelWebhook(t, ns)
	before := skippedAlreadyConfigured(t)
	var p *corev1.Pod
	// The apiserver picks up a new webhook configuration within a moment.
	eventually(t, 30*time.Second, func() error {
		p, _ = create(t, newPod(ns))
		if p.Labels["relabelled"] != "yes" {
			_ = env.Client.Delete(ctx, p)
			return fmt.Errorf("second webhook not called yet")
		}
		return nil
	})
	assertMutated(t, p, "resilient", resilientOptions)
	if after := skippedAlreadyConfigured(t); after <= before {
		t.Errorf("dnstune was not reinvoked: already-configured skips %v -> %v", before, after)
	}
}

func skippedAlreadyConfigured(t *testing.T) float64 {
	t.Helper()
	v, _ := metric(t, "dnstune_mutations_total", map[string]string{"mode": "options", "profile": "resilient", "reason": "already-configured", "result": "skipped"})
	return v
}

func ptr[T any](v T) *T { return &v }
