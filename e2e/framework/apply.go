package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Tool returns a tool make builds into bin/tools/NAME-<version>/NAME (helm,
// promtool), or $ENV when set; it fails loudly when there is none.
func Tool(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	found, _ := filepath.Glob(filepath.Join(RepoRoot(), "bin", "tools", name+"-*", name))
	if len(found) == 0 {
		return "", fmt.Errorf("%s not found: set %s or run make chart-tools", name, env)
	}
	return found[len(found)-1], nil
}

// Helm returns the helm binary: $HELM, or the one in bin/tools.
func Helm() (string, error) { return Tool("HELM", "helm") }

// Render renders the chart (manifests/dnstune) as make manifests does
// (release dnstune in dnstune-system, the namespace included), with extra
// helm template flags, e.g. "--set", "certificates.mode=cert-manager" or
// "--show-only", "templates/node.yaml".
func Render(flags ...string) ([]byte, error) {
	helm, err := Helm()
	if err != nil {
		return nil, err
	}
	args := append([]string{"template", "dnstune", filepath.Join(RepoRoot(), "manifests", "dnstune"),
		"--namespace", "dnstune-system", "--kube-version", "v1.37.1", "--set", "namespace.create=true"}, flags...)
	out, err := exec.Command(helm, args...).Output() // #nosec G204 -- fixed command.
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("helm %v: %w: %s", args, err, ee.Stderr)
		}
		return nil, fmt.Errorf("helm %v: %w", args, err)
	}
	return out, nil
}

// ShippedPolicy is the policy the install ships: the dnstune-policy
// ConfigMap of manifests/install.yaml (rendered from the chart's values).
func ShippedPolicy() (string, error) {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "manifests", "install.yaml"))
	if err != nil {
		return "", err
	}
	objs, err := Objects(data)
	if err != nil {
		return "", err
	}
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "dnstune-policy" {
			p, ok, err := unstructured.NestedString(o.Object, "data", "policy.yaml")
			if err != nil || !ok {
				return "", fmt.Errorf("manifests/install.yaml: ConfigMap dnstune-policy has no policy.yaml (%w)", err)
			}
			return p, nil
		}
	}
	return "", errors.New("manifests/install.yaml has no ConfigMap dnstune-policy")
}

// Objects decodes a multi-document YAML stream.
func Objects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// Apply server-side applies obj (a dry run when dryRun is set).
func (e *Env) Apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	opts := []client.PatchOption{client.FieldOwner("dnstune-e2e"), client.ForceOwnership}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	obj = obj.DeepCopy()
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	if err := e.Client.Patch(ctx, obj, client.Apply, opts...); err != nil { //nolint:staticcheck // client.Apply on unstructured is the simplest SSA here.
		return fmt.Errorf("apply %s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount with a fresh token (TokenRequest), as a pod would.
func (e *Env) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	tr, err := e.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to request a token for %s/%s: %w", namespace, name, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	cfg.CurrentContext = "sa"
	path := filepath.Join(e.Dir, namespace+"-"+name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

func ptrTo[T any](v T) *T { return &v }

// ReplaceSection replaces, in the document at path, the section from begin
// to end (markers included; section carries them) with section, or appends
// it when the markers are not there. make bench's commands each keep their
// own section of BENCHMARKS.md this way.
func ReplaceSection(path, begin, end, section string) error {
	old, err := os.ReadFile(path) // #nosec G304 -- a document in the repository.
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	if i, j := strings.Index(s, begin), strings.Index(s, end); i >= 0 && j > i {
		s = s[:i] + section + s[j+len(end)+1:]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + section
	}
	return os.WriteFile(path, []byte(s), 0o644) // #nosec G306 -- a document.
}
