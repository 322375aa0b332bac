package app

import (
	"errors"
	"time"

	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
)

func newAdmissionPolicyCommand() *cobra.Command {
	var (
		o       admissionpolicy.RunOptions
		verbose bool
	)
	cmd := &cobra.Command{
		Use: "admission-policy",
		Example: `  # as manifests/install-admission-policy.yaml runs it (in the cluster)
  dnstune admission-policy --policy=/etc/dnstune/policy.yaml
  # from a laptop, against a test cluster
  dnstune admission-policy --policy=policy.yaml --kubeconfig ~/.kube/config`,
		Short: "Keep the policy compiled as in-tree admission policies in the cluster (the webhook-free backend)",
		Long: `Watches the policy file and keeps its compiled admission policies and
bindings (see dnstune policy compile) applied with server-side apply, deleting
compiled objects the policy no longer yields (and the per-mode policies
earlier versions compiled). Replicas elect one writer.
kube-apiserver then mutates pods itself, also while dnstune is down.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.PolicyFile == "" {
				return errors.New("--policy is required")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd.ErrOrStderr(), verbose)
			ctrllog.SetLogger(log)
			return admissionpolicy.Run(cmd.Context(), o, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.PolicyFile, "policy", "", "policy file (required); edits re-render")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", kubeclient.FlagHelp)
	f.StringVar(&o.MetricsBindAddress, "metrics-bind-address", daemon.DefaultMetricsBindAddress, `Prometheus metrics address ("0" disables)`)
	f.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", daemon.DefaultHealthProbeBindAddress, "address of /healthz and /readyz (ready: the policy in use is applied)")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", daemon.DefaultLeaderElectionNamespace, "namespace of the Lease the replicas elect the writer with")
	f.DurationVar(&o.Resync, "resync", time.Minute, "re-apply this often without a policy change (repairs hand edits)")
	f.BoolVar(&o.EnforcedWarnings, "enforced-warnings", true, "warn in enforced namespaces too (musl images, kube-apiserver's limits), as the webhook does; false saves every pod create there a validating policy's evaluation")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}
