//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/internal/report"
)

// dnstuneCLI runs the built dnstune binary against the e2e apiserver and
// returns its stdout and exit code.
func dnstuneCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(env.Dnstune, append(args, "--kubeconfig", env.Kubeconfig)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("dnstune %v: %v", args, err)
	}
	if stderr.Len() > 0 {
		t.Logf("dnstune %v stderr: %s", args, stderr.String())
	}
	return string(out), 0
}

// markReady acts as the kubelet this control plane lacks: it marks every
// pod of the namespace Running and Ready, so controllers count them
// available, until stop is closed.
func markReady(t *testing.T, ns string, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			var pods corev1.PodList
			if err := env.Client.List(ctx, &pods, client.InNamespace(ns)); err == nil {
				for i := range pods.Items {
					p := &pods.Items[i]
					if p.Status.Phase == corev1.PodRunning || p.DeletionTimestamp != nil {
						continue
					}
					now := metav1.Now()
					p.Status.Phase = corev1.PodRunning
					p.Status.Conditions = []corev1.PodCondition{
						{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
						{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
					}
					if err := env.Client.Status().Update(ctx, p); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
						t.Logf("mark %s ready: %v", p.Name, err)
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return &wg
}

// installReports applies manifests/reports.yaml (the PolicyReport CRD and the
// report writer's RBAC) as a user does, and the namespace of the leader
// election Lease.
func installReports(ctx context.Context, t *testing.T) {
	t.Helper()
	sys := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dnstune-system"}}
	if err := env.Client.Create(ctx, sys); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "manifests/reports.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(ctx, t, data, func(string) bool { return false })
	eventually(t, 30*time.Second, func() error {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "policyreports.wgpolicyk8s.io"}, &crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return errors.New("PolicyReport CRD not established yet")
	})
}

// assertPolicyReportAgrees waits until the namespace's PolicyReport, kept
// by the webhook's leader, says for every workload what dnstune report
// says: fail when out of date, pass when up to date, skip otherwise.
func assertPolicyReportAgrees(t *testing.T, ns string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		ws, _ := reportJSON(t, ns)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(report.PolicyReportGVK)
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: report.ReportName}, u); err != nil {
			return err
		}
		results, _, _ := unstructured.NestedSlice(u.Object, "results")
		got := map[string]string{}
		for _, r := range results {
			m := r.(map[string]any)
			res := m["resources"].([]any)[0].(map[string]any)
			got[res["kind"].(string)+"/"+res["name"].(string)] = m["result"].(string)
		}
		want := map[string]string{}
		fails := int64(0)
		for _, w := range ws {
			r := "pass"
			switch {
			case w.OutOfDate > 0:
				r = "fail"
				fails++
			case w.UpToDate == 0:
				r = "skip"
			}
			want[w.Kind+"/"+w.Name] = r
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("PolicyReport results %v, dnstune report says %v", got, want)
		}
		if f, _, _ := unstructured.NestedInt64(u.Object, "summary", "fail"); f != fails {
			return fmt.Errorf("PolicyReport summary.fail = %d, want %d", f, fails)
		}
		return nil
	})
}

func workload(ws []report.Workload, kind, name string) *report.Workload {
	for i := range ws {
		if ws[i].Kind == kind && ws[i].Name == name {
			return &ws[i]
		}
	}
	return nil
}

func reportJSON(t *testing.T, ns string) ([]report.Workload, int) {
	t.Helper()
	out, code := dnstuneCLI(t, "report", "-n", ns, "-o", "json", "--policy", testPolicyFile)
	var ws []report.Workload
	if err := json.Unmarshal([]byte(out), &ws); err != nil {
		t.Fatalf("report -o json: %v\n%s", err, out)
	}
	return ws, code
}

// Existing pods: created before the namespace was opted in, and while the
// webhook was down, show as out of date; rollout restarts their Deployment;
// the new pods are mutated; the report comes back clean; a bare pod is
// listed, not deleted.
func TestReportAndRollout(t *testing.T) {
	ctx := context.Background()
	installReports(ctx, t)
	ns := namespace(t, "existing", nil) // not opted in yet
	stop := make(chan struct{})
	wg := markReady(t, ns, stop)
	defer func() { close(stop); wg.Wait() }()

	dep := createWebDeployment(t, ns)
	bare, _ := create(t, newPod(ns, func(p *corev1.Pod) { p.Name, p.GenerateName = "bare", "" }))
	eventually(t, 60*time.Second, func() error {
		var d appsv1.Deployment
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dep), &d); err != nil {
			return err
		}
		if d.Status.AvailableReplicas != 2 {
			return errors.New("deployment not available yet")
		}
		return nil
	})

	// Opt in; then the webhook goes down while a second Deployment starts.
	var nsObj corev1.Namespace
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["dnstune.io/inject"] = "enabled"
	if err := env.Client.Update(ctx, &nsObj); err != nil {
		t.Fatal(err)
	}
	env.Webhook.Stop()
	down := dep.DeepCopy()
	down.ObjectMeta = metav1.ObjectMeta{Name: "while-down", Namespace: ns}
	down.Spec.Selector.MatchLabels = map[string]string{"app": "while-down"}
	down.Spec.Template.Labels = map[string]string{"app": "while-down"}
	down.Spec.Replicas = ptr(int32(1))
	if err := env.Client.Create(ctx, down); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		var pods corev1.PodList
		if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "while-down"}); err != nil {
			return err
		}
		if len(pods.Items) != 1 {
			return errors.New("pod of while-down not created yet")
		}
		return nil
	})
	if err := env.Webhook.Start(); err != nil {
		t.Fatal(err)
	}
	if err := env.WaitMutating(ctx); err != nil {
		t.Fatal(err)
	}

	ws, code := reportJSON(t, ns)
	if code != 2 {
		t.Errorf("report exit code %d with out-of-date pods, want 2", code)
	}
	for _, want := range []struct {
		kind, name string
		outOfDate  int
	}{{"Deployment", "web", 2}, {"Deployment", "while-down", 1}, {"Pod", "bare", 1}} {
		w := workload(ws, want.kind, want.name)
		if w == nil || w.OutOfDate != want.outOfDate || w.UpToDate != 0 || !strings.Contains(w.Change, "add options ndots:2") {
			t.Errorf("%s/%s: %+v, want %d out of date", want.kind, want.name, w, want.outOfDate)
		}
	}
	assertPolicyReportAgrees(t, ns)
	if v, _ := metric(t, "dnstune_pods_out_of_date", map[string]string{"profile": "resilient"}); v < 4 {
		t.Errorf("dnstune_pods_out_of_date{profile=resilient} = %v, want at least the 4 pods of this test", v)
	}
	table, _ := dnstuneCLI(t, "report", "-n", ns, "--policy", testPolicyFile)
	if !strings.Contains(table, "Deployment/web") || !strings.Contains(table, "OUT-OF-DATE") {
		t.Errorf("table:\n%s", table)
	}

	plan, code := dnstuneCLI(t, "rollout", "-n", ns, "--policy", testPolicyFile)
	if code != 0 || !strings.Contains(plan, "restart  Deployment "+ns+"/web") || !strings.Contains(plan, "dry run") {
		t.Fatalf("rollout plan (exit %d):\n%s", code, plan)
	}
	out, code := dnstuneCLI(t, "rollout", "-n", ns, "--policy", testPolicyFile, "--dry-run=false", "--timeout", "90s")
	if code != 0 {
		t.Fatalf("rollout exit %d:\n%s", code, out)
	}
	for _, want := range []string{"done     Deployment " + ns + "/web is available", "done     Deployment " + ns + "/while-down is available", "manual   Pod " + ns + "/bare"} {
		if !strings.Contains(out, want) {
			t.Errorf("rollout output lacks %q:\n%s", want, out)
		}
	}
	// Old pods go; new ones are mutated.
	eventually(t, 60*time.Second, func() error {
		ws, _ := reportJSON(t, ns)
		for _, name := range []string{"web", "while-down"} {
			if w := workload(ws, "Deployment", name); w == nil || w.OutOfDate != 0 || w.UpToDate == 0 {
				return errors.New("deployment " + name + " not up to date yet")
			}
		}
		return nil
	})
	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(dep.Spec.Selector.MatchLabels)); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil {
			assertMutated(t, p, "resilient", resilientOptions)
		}
	}
	var b corev1.Pod
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(bare), &b); err != nil || b.UID != bare.UID {
		t.Fatalf("the bare pod was deleted or replaced: %v", err)
	}
	ws, code = reportJSON(t, ns)
	if w := workload(ws, "Pod", "bare"); code != 2 || w == nil || w.OutOfDate != 1 {
		t.Errorf("the bare pod should still be reported out of date (exit %d): %+v", code, w)
	}
	assertPolicyReportAgrees(t, ns)

	// Without --policy, report reads the install's policy ConfigMap.
	sys := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dnstune-system"}}
	if err := env.Client.Create(ctx, sys); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dnstune-system", Name: "dnstune-policy"}, Data: map[string]string{"policy.yaml": testPolicy}}
	if err := env.Client.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, cm) })
	out, code = dnstuneCLI(t, "report", "-n", ns, "-o", "yaml")
	if code != 2 || !strings.Contains(out, "name: bare") || !strings.Contains(out, "outOfDate: 1") {
		t.Errorf("report from the cluster's policy (exit %d):\n%s", code, out)
	}
}

// TestReportAndRolloutEdges: a namespace that does not exist or is not
// opted in is an error naming it; rollout skips audit namespaces (audit
// changes no pod) and lists StatefulSets with updateStrategy OnDelete as
// manual steps, patching neither.
func TestReportAndRolloutEdges(t *testing.T) {
	ctx := context.Background()
	cli := func(args ...string) (string, int) {
		cmd := exec.Command(env.Dnstune, append(args, "--kubeconfig", env.Kubeconfig, "--policy", testPolicyFile)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	plain := namespace(t, "not-opted-in", nil)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "-n", "no-such-namespace"}, `namespace "no-such-namespace" not found`},
		{[]string{"rollout", "-n", "no-such-namespace"}, `namespace "no-such-namespace" not found`},
		{[]string{"report", "-n", plain}, `namespace "` + plain + `" is not opted in`},
		{[]string{"rollout", "-n", plain, "--dry-run=false"}, `namespace "` + plain + `" is not opted in`},
	} {
		out, code := cli(c.args...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("dnstune %v: exit %d, want 1 naming the namespace (%q):\n%s", c.args, code, c.want, out)
		}
	}

	// Workloads created before their namespaces were opted in: out of date.
	audit := namespace(t, "edges-audit", nil)
	ondel := namespace(t, "edges-ondelete", nil)
	stop := make(chan struct{})
	wgs := []*sync.WaitGroup{markReady(t, audit, stop), markReady(t, ondel, stop)}
	defer func() {
		close(stop)
		for _, wg := range wgs {
			wg.Wait()
		}
	}()
	labels := map[string]string{"app": "edge"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: audit},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ondel},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl,
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}}}
	for _, o := range []client.Object{dep, sts} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for ns, selector := range map[string]string{audit: "edge", ondel: "edge"} {
		eventually(t, 60*time.Second, func() error {
			var pods corev1.PodList
			if err := env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": selector}); err != nil {
				return err
			}
			if len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
				return fmt.Errorf("the pod of %s is not running yet", ns)
			}
			return nil
		})
	}
	for ns, inject := range map[string]string{audit: "audit", ondel: "enabled"} {
		var n corev1.Namespace
		if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, &n); err != nil {
			t.Fatal(err)
		}
		n.Labels["dnstune.io/inject"] = inject
		if err := env.Client.Update(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	out, code := cli("rollout", "-n", audit, "--dry-run=false", "--timeout", "20s")
	if code != 0 || !strings.Contains(out, "skip     Deployment "+audit+"/web") || !strings.Contains(out, "audit") {
		t.Errorf("rollout of an audit namespace (exit %d):\n%s", code, out)
	}
	out, code = cli("rollout", "-n", ondel, "--dry-run=false", "--timeout", "20s")
	if code != 0 || !strings.Contains(out, "manual   StatefulSet "+ondel+"/db") || !strings.Contains(out, "OnDelete") {
		t.Errorf("rollout of an OnDelete StatefulSet (exit %d):\n%s", code, out)
	}
	var d appsv1.Deployment
	var s appsv1.StatefulSet
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(dep), &d); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(sts), &s); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Spec.Template.Annotations[report.RestartedAtAnnotation]; ok {
		t.Error("rollout restarted a Deployment of an audit namespace")
	}
	if _, ok := s.Spec.Template.Annotations[report.RestartedAtAnnotation]; ok {
		t.Error("rollout patched an OnDelete StatefulSet")
	}
}
