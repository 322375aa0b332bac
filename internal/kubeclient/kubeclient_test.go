package kubeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://%s:6443"}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
users:
- name: u
  user: {token: t}
`

func writeKubeconfig(t *testing.T, host string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(strings.Replace(kubeconfig, "%s", host, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigOrder(t *testing.T) {
	flag, env := writeKubeconfig(t, "flag.example"), writeKubeconfig(t, "env.example")
	t.Setenv("KUBECONFIG", env)
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a pod
	t.Setenv("HOME", t.TempDir())

	cfg, err := Config(flag)
	if err != nil || cfg.Host != "https://flag.example:6443" || cfg.QPS != -1 {
		t.Fatalf("Config(%s): %+v, %v; want the flag's server, no client-side rate limit", flag, cfg, err)
	}
	cfg, err = Config("")
	if err != nil || cfg.Host != "https://env.example:6443" || cfg.QPS != -1 {
		t.Fatalf(`Config(""): %+v, %v; want $KUBECONFIG's server, no client-side rate limit`, cfg, err)
	}

	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Config(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Config(%s): %v, want an error naming the file", missing, err)
	}
	t.Setenv("KUBECONFIG", "")
	if _, err := Config(""); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf(`Config("") with no credentials: %v, want an error saying where it looked`, err)
	}
}

func TestSchemeKnowsTheBuiltInTypes(t *testing.T) {
	for _, gvk := range []schema.GroupVersionKind{
		corev1.SchemeGroupVersion.WithKind("Pod"),
		{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingAdmissionPolicy"},
		{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"},
	} {
		if !Scheme.Recognizes(gvk) {
			t.Errorf("Scheme does not know %s", gvk)
		}
	}
}
