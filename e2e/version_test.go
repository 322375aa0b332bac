//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/e2e/framework"
)

// refusal is what both the binary and the chart say below 1.36.
const refusal = "needs admissionregistration.k8s.io/v1 MutatingAdmissionPolicy, which Kubernetes serves from 1.36"

// TestAdmissionPolicyBackendFloor: the admission-policy backend works from
// Kubernetes 1.36; below, on every apiserver of the version matrix that is
// older, `dnstune admission-policy` exits at once saying what is missing and
// what to do (no crash loop of retries), and helm refuses the install at
// render with the same words, from the cluster's own capabilities (as helm
// install reads them). On 1.36 and later both go ahead.
func TestAdmissionPolicyBackendFloor(t *testing.T) {
	v, err := env.Clientset.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	minor, err := strconv.Atoi(strings.TrimSuffix(v.Minor, "+"))
	if err != nil {
		t.Fatalf("server minor %q: %v", v.Minor, err)
	}
	served := admissionpolicy.CheckServed(env.Config)
	if (minor >= 36) != (served == nil) {
		t.Fatalf("kube-apiserver %s: CheckServed = %v; want it served exactly from 1.36", v.GitVersion, served)
	}
	t.Logf("kube-apiserver %s: MutatingAdmissionPolicy v1 served: %v", v.GitVersion, served == nil)

	// The chart, with the version the cluster's discovery reports (what
	// helm install reads into .Capabilities.KubeVersion; --validate would
	// also refuse the objects earlier tests installed without helm).
	helm, err := framework.Helm()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(helm, "template", "dnstune", filepath.Join(framework.RepoRoot(), "manifests", "dnstune"), // #nosec G204 -- test
		"--namespace", "dnstune-system", "--kube-version", v.GitVersion, "--set", "backend=admission-policy").CombinedOutput()
	if minor >= 36 {
		if err != nil {
			t.Errorf("helm template backend=admission-policy for %s: %v\n%s", v.GitVersion, err, out)
		}
		return
	}
	if err == nil || !strings.Contains(string(out), refusal) || !strings.Contains(string(out), "this cluster is "+v.GitVersion) || !strings.Contains(string(out), "backend=webhook") {
		t.Errorf("helm on %s: err %v, output\n%s\nwant the install refused, saying %q, the version and what to do", v.GitVersion, err, out, refusal)
	}

	// The binary: exits within seconds, saying so.
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.Dnstune, "admission-policy", "--policy="+policyFile, "--kubeconfig="+env.Kubeconfig, // #nosec G204 -- test
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0")
	out, err = cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("dnstune admission-policy on %s was still running after 30 s; want it to exit and say why:\n%s", v.GitVersion, out)
	}
	if err == nil || !strings.Contains(string(out), refusal) || !strings.Contains(string(out), v.GitVersion) || !strings.Contains(string(out), "webhook backend") {
		t.Errorf("dnstune admission-policy on %s: err %v, output\n%s\nwant exit 1 saying %q, the version and what to do", v.GitVersion, err, out, refusal)
	}
}
