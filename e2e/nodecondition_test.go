//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/node"
)

// testNodeCondition writes the node agent's Node condition the way the
// agent does (node.ClusterAPI.SetCondition, a strategic-merge patch of
// nodes/status) with the token a pod of the agent gets on node n-own, on
// the real apiserver with the install's RBAC and ValidatingAdmissionPolicy:
// its own Node's condition is written and kubelet's are kept; another
// Node, another condition, and a token not bound to a pod are refused.
func testNodeCondition(ctx context.Context, t *testing.T) {
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "manifests/install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := framework.Objects(data)
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, o := range objs {
		if o.GetName() == "dnstune-node-own-condition" {
			if err := env.Apply(ctx, o, false); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
			applied++
		}
	}
	if applied != 2 {
		t.Fatalf("install.yaml has %d objects named dnstune-node-own-condition, want the policy and its binding", applied)
	}
	kubeletCond := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "as kubelet writes it",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}
	for _, n := range []string{"n-own", "n-other"} {
		nd := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if err := env.Client.Create(ctx, nd); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), nd) })
		// kube-controller-manager's node controllers write new Nodes too:
		// read, set, and write again on a conflict.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nd), nd); err != nil {
				return err
			}
			nd.Status.Conditions = []corev1.NodeCondition{kubeletCond}
			return env.Client.Status().Update(ctx, nd)
		}); err != nil {
			t.Fatal(err)
		}
	}
	// A pod of the agent bound to n-own (no kubelet runs it) and the token
	// kubelet would mount in it: bound to the pod, so it carries the node.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "dnstune-node-n-own", Namespace: systemNS},
		Spec: corev1.PodSpec{NodeName: "n-own", ServiceAccountName: "dnstune-node",
			Containers: []corev1.Container{{Name: "monitor", Image: "dnstune.test/none"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	tr, err := env.Clientset.CoreV1().ServiceAccounts(systemNS).CreateToken(ctx, "dnstune-node", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr[int64](3600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podToken := tokenKubeconfig(t, "pod-bound", tr.Status.Token)
	_, unbound := saClient(ctx, t, "dnstune-node")

	cond := node.CacheStatus{Address: "169.254.20.10:53", Verdict: node.VerdictDown, Failures: 2,
		Last: node.ProbeResult{Detail: "no answer from 169.254.20.10:53 within 1s"}}.Condition(time.Now(), time.Now())
	agent := func(kubeconfig, nodeName string) *node.ClusterAPI {
		a := node.ForNode(logr.Discard(), kubeconfig, nodeName)
		if a == nil {
			t.Fatalf("no client from %s", kubeconfig)
		}
		return a
	}
	// The apiserver enforces a new policy once its informer has it: wait
	// for the first refusal.
	if err := framework.Eventually(15*time.Second, 200*time.Millisecond, func() error {
		if err := agent(podToken, "n-other").SetCondition(ctx, cond); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			return fmt.Errorf("the agent of n-own wrote n-other's condition (policy not enforced yet?): %w", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Allowed: its own Node, its own condition.
	if err := agent(podToken, "n-own").SetCondition(ctx, cond); err != nil {
		t.Fatalf("the agent on n-own could not set its condition: %v", err)
	}
	var own corev1.Node
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "n-own"}, &own); err != nil {
		t.Fatal(err)
	}
	types := []corev1.NodeConditionType{}
	for _, c := range own.Status.Conditions {
		types = append(types, c.Type)
		if c.Type == node.ConditionType && (c.Status != corev1.ConditionFalse || c.Reason != node.ReasonNoAnswer || !strings.Contains(c.Message, "within 1s")) {
			t.Errorf("stored condition %+v, want False NoAnswer naming the failure", c)
		}
	}
	if !slices.Contains(types, corev1.NodeReady) || !slices.Contains(types, node.ConditionType) {
		t.Errorf("n-own's conditions %v, want kubelet's Ready kept beside %s", types, node.ConditionType)
	}
	// Refused: another Node; another condition on its own; a token without
	// a node (not from a pod).
	forbidden := map[string]error{
		"another node's status": agent(podToken, "n-other").SetCondition(ctx, cond),
		"its node's Ready":      agent(podToken, "n-own").SetCondition(ctx, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "Forged"}),
		"a token without a pod": agent(unbound, "n-own").SetCondition(ctx, cond),
	}
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s: want the policy to refuse it, got %v", what, err)
			continue
		}
		t.Logf("%s: refused: %v", what, err)
	}
}

// tokenKubeconfig writes a kubeconfig for the e2e apiserver with token.
func tokenKubeconfig(t *testing.T, name, token string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	cfg.CurrentContext = name
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
