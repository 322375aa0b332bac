package app

import (
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/dnstune/dnstune/certs"
	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
	"github.com/dnstune/dnstune/internal/report"
	"github.com/dnstune/dnstune/webhook"
)

func newWebhookCommand() *cobra.Command {
	var (
		o       webhook.Options
		verbose bool
	)
	cmd := &cobra.Command{
		Use: "webhook",
		Example: `  # as manifests/install.yaml runs it (self-managed certificates)
  dnstune webhook --policy=/etc/dnstune/policy.yaml`,
		Short: "Serve the mutating admission webhook for Pod CREATE over TLS",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return o.Validate()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd.ErrOrStderr(), verbose)
			ctrllog.SetLogger(log)
			d, err := webhook.New(cmd.Context(), o, log)
			if err != nil {
				return err
			}
			if o.Reports != webhook.ReportsOff {
				// PolicyReports of running pods, when the CRD is installed:
				// a runnable of its own on the webhook's manager (leader only).
				if err := report.AddToManager(d.Manager, report.WriterOptions{
					Policy: d.Policy.Policy, Generation: d.Policy.Generation, ClusterDNS: d.ClusterDNS.Addr,
					Interval: o.ReportInterval, PolicyConfigMap: client.ObjectKey{Namespace: o.LeaderElectionNamespace, Name: policyConfigMap.Name},
					Log: log.WithName("reports"),
				}); err != nil {
					return err
				}
			}
			return d.Start(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.PolicyFile, "policy", "", "policy file (required); edits are picked up without a restart")
	f.StringVar(&o.CertDir, "cert-dir", "", "directory with tls.crt and tls.key (required); reloaded when they change")
	f.IntVar(&o.Port, "port", webhook.DefaultPort, "TLS port for /mutate-v1-pod")
	f.StringVar(&o.MetricsBindAddress, "metrics-bind-address", daemon.DefaultMetricsBindAddress, `Prometheus metrics address ("0" disables)`)
	f.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", daemon.DefaultHealthProbeBindAddress, "address of /healthz and /readyz")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", kubeclient.FlagHelp)
	f.BoolVar(&o.EnableHTTP2, "enable-http2", false, "offer HTTP/2 on the TLS port (off: avoids HTTP/2 rapid-reset attacks)")
	f.DurationVar(&o.ClusterDNSRefresh, "cluster-dns-refresh", daemon.DefaultClusterDNSRefresh, "how often to re-read the kube-dns Service's ClusterIP")
	f.DurationVar(&o.PolicyPollInterval, "policy-poll-interval", daemon.DefaultPolicyPollInterval, "how often to re-read the policy file without a file-system event")
	f.BoolVar(&o.SelfManaged, "self-managed-certs", false, "keep a CA and serving certificate in --self-managed-secret and the webhook configuration's caBundle (no cert-manager); --cert-dir receives the certificate")
	f.StringVar(&o.SelfManagedSecret, "self-managed-secret", webhook.DefaultSelfManagedSecret, "namespace/name of the Secret holding the self-managed CA and certificate")
	f.StringVar(&o.SelfManagedWebhookConfig, "self-managed-webhook-config", webhook.DefaultSelfManagedWebhookConfig, "MutatingWebhookConfiguration whose caBundle is kept right")
	f.StringSliceVar(&o.SelfManagedHosts, "self-managed-hosts", nil, "DNS names and IPs of the serving certificate (default: the dnstune-webhook Service's names)")
	f.DurationVar(&o.CertValidity, "self-managed-cert-validity", certs.DefaultCertValidity, "validity of the self-managed serving certificate (renewed at 2/3)")
	f.DurationVar(&o.CAValidity, "self-managed-ca-validity", certs.DefaultCAValidity, "validity of the self-managed CA (renewed at 2/3)")
	f.DurationVar(&o.RequestTimeout, "request-timeout", webhook.DefaultRequestTimeout, "bound on one request from its headers to the end of its answer")
	f.DurationVar(&o.HeaderTimeout, "header-timeout", webhook.DefaultHeaderTimeout, "bound on the TLS handshake and, separately, on the request headers")
	f.DurationVar(&o.ReadTimeout, "read-timeout", webhook.DefaultReadTimeout, "bound on reading one whole request, body included")
	f.DurationVar(&o.IdleTimeout, "idle-timeout", webhook.DefaultIdleTimeout, "close a kept-alive connection idle this long")
	f.IntVar(&o.MaxConnections, "max-connections", webhook.DefaultMaxConnections, "connections served at once; more wait in the listen queue")
	f.StringVar(&o.Reports, "reports", webhook.ReportsAuto, "auto: keep a PolicyReport per opted-in namespace when the PolicyReport CRD is installed (one leader writes); off: no reports, no leader election")
	f.BoolVar(&o.SkipNetworkPolicies, "skip-networkpolicy-check", false, "do not watch NetworkPolicies; by default pods pointed at the node-local cache get a warning when their NetworkPolicies block DNS to it (needs list/watch on networkpolicies)")
	f.DurationVar(&o.ReportInterval, "report-interval", report.DefaultReportInterval, "how often the report writer rescans without a policy or opt-in change")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", daemon.DefaultLeaderElectionNamespace, "namespace of the Lease the replicas elect the report writer with")
	f.StringVar(&o.PprofBindAddress, "pprof-bind-address", "", "serve net/http/pprof on this address (off by default; for profiling only)")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging (one line per skipped pod)")
	return cmd
}
