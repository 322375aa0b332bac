// Package kubeclient is how every dnstune command reaches the cluster: one
// way to find credentials, the same on every command, and one scheme.
package kubeclient

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FlagHelp is the --kubeconfig flag's help on every command: the order
// Config looks in.
const FlagHelp = "kubeconfig file (default: $KUBECONFIG, else the in-cluster service account, else ~/.kube/config)"

// Scheme holds the types dnstune reads and writes: Kubernetes' built-in
// ones (PolicyReports go as unstructured). Every client and manager uses it.
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	return s
}

// Config is the client configuration: the kubeconfig file when given, else
// controller-runtime's order ($KUBECONFIG, the in-cluster service account,
// ~/.kube/config). As controller-runtime's, it has no client-side rate
// limit (QPS -1: kube-apiserver's priority and fairness governs) unless the
// kubeconfig or the caller sets one.
func Config(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("failed to load kubeconfig %s: %w", kubeconfig, err)
		}
		if cfg.QPS == 0 {
			cfg.QPS = -1
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to find cluster credentials (give --kubeconfig, set $KUBECONFIG, or run in a pod with a service account): %w", err)
	}
	return cfg, nil
}

// New is a client of cfg with Scheme.
func New(cfg *rest.Config) (client.Client, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, fmt.Errorf("failed to create a Kubernetes client: %w", err)
	}
	return c, nil
}
