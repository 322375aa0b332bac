package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
	"github.com/dnstune/dnstune/internal/report"
	"github.com/dnstune/dnstune/policy"
)

// policyConfigMap is where the install keeps the policy (key policy.yaml).
var policyConfigMap = client.ObjectKey{Namespace: "dnstune-system", Name: "dnstune-policy"}

// clusterFlags are how report and rollout reach the cluster and its policy.
type clusterFlags struct {
	kubeconfig, namespace, policyFile string
	all                               bool
}

func (f *clusterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", kubeclient.FlagHelp)
	fl.StringVarP(&f.namespace, "namespace", "n", "", "one namespace")
	fl.BoolVarP(&f.all, "all-namespaces", "A", false, "every opted-in and audit namespace")
	fl.StringVar(&f.policyFile, "policy", "", "policy file (default: the cluster's, ConfigMap dnstune-system/dnstune-policy)")
}

func (f *clusterFlags) validate() error {
	if (f.namespace == "") == !f.all {
		return errors.New("give exactly one of -n NAMESPACE and -A")
	}
	return nil
}

func (f *clusterFlags) client() (client.Client, error) {
	cfg, err := kubeclient.Config(f.kubeconfig)
	if err != nil {
		return nil, err
	}
	// A scan is a few paginated LISTs of the whole cluster, not one request
	// per namespace: a CLI's rate, above client-go's default 5/s.
	cfg.QPS, cfg.Burst = 50, 100
	return kubeclient.New(cfg)
}

// connectAndScan reaches the cluster and scans it.
func (f *clusterFlags) connectAndScan(ctx context.Context) (client.Client, []report.Workload, error) {
	c, err := f.client()
	if err != nil {
		return nil, nil, err
	}
	ws, err := f.scan(ctx, c)
	return c, ws, err
}

// loadPolicy loads the policy: the file, or the cluster's.
func (f *clusterFlags) loadPolicy(ctx context.Context, c client.Client) (*policy.Policy, error) {
	if f.policyFile != "" {
		return policy.LoadFile(f.policyFile)
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, policyConfigMap, &cm); err != nil {
		return nil, fmt.Errorf("failed to read the cluster's policy (ConfigMap %s; or give --policy): %w", policyConfigMap, err)
	}
	return policy.Load("configmap/"+policyConfigMap.String(), []byte(cm.Data["policy.yaml"]))
}

// coverage reads where the node-local cache answers (the node agents' Node
// conditions); nil when no profile of the policy is nodelocal.
func (f *clusterFlags) coverage(ctx context.Context, c client.Client) (*report.Coverage, error) {
	pol, err := f.loadPolicy(ctx, c)
	if err != nil {
		return nil, err
	}
	return report.ReadCoverage(ctx, c, pol)
}

// writeCoverage prints the coverage after the report's table.
func writeCoverage(w io.Writer, cov *report.Coverage, ws []report.Workload) {
	_, _ = fmt.Fprintln(w, "\n"+cov.Summary())
	if a := cov.Advice(); a != "" {
		_, _ = fmt.Fprintln(w, a)
	}
	var pods []string
	for _, x := range ws {
		for _, p := range x.OnNodesWithoutCache {
			pods = append(pods, x.Namespace+"/"+p)
		}
	}
	if len(pods) > 0 {
		_, _ = fmt.Fprintf(w, "nodelocal pods on nodes where the cache does not answer (%d): %s\n", len(pods), strings.Join(pods, ", "))
	}
}

// scan loads the policy (the file, or the cluster's) and the cluster DNS
// address, and scans.
func (f *clusterFlags) scan(ctx context.Context, c client.Client) ([]report.Workload, error) {
	pol, err := f.loadPolicy(ctx, c)
	if err != nil {
		return nil, err
	}
	dns, _ := daemon.LookupClusterDNS(ctx, c, daemon.DefaultClusterDNSService) // unknown: nodelocal pods are judged as the webhook would skip them
	ns := f.namespace
	if f.all {
		ns = ""
	}
	missing, _ := report.CacheMissing(ctx, c, pol) // unknown (no right to list nodes): the table says so after it
	return report.Scan(ctx, report.Options{Client: c, Policy: pol, ClusterDNS: dns, Namespace: ns, CacheMissing: missing})
}

func newReportCommand() *cobra.Command {
	var (
		f      clusterFlags
		output string
	)
	cmd := &cobra.Command{
		Use: "report (-n NAMESPACE | -A)",
		Example: `  dnstune report -A
  dnstune report -n shop -o json`,
		Short: "Show, per workload, how many running pods are up to date with the policy, out of date, or skipped",
		Long: `For each opted-in or audit namespace and each workload (Deployment, StatefulSet,
DaemonSet, CronJob, Job, or bare Pod), counts the running pods whose DNS
settings are what the policy gives a pod created now (up to date), those a
restart would change (out of date, with the change), and those the policy
skips (with the reason). The decision is the webhook's own. When a profile
is nodelocal, the table ends with the node-local cache's coverage: on how
many nodes it answers (the node agents' dnstune.io/NodeLocalDNS condition),
which do not and why, the nodelocal pods running there, and, when it
answers nowhere but a well-known address answers everywhere, which address
to set. Exit code 0:
nothing out of date; 2: something is (for CI gates); 1: an error.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if output != "table" && output != "json" && output != "yaml" {
				return fmt.Errorf("--output must be table, json or yaml, got %q", output)
			}
			return f.validate()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ws, err := f.connectAndScan(cmd.Context())
			if err != nil {
				return err
			}
			if err := writeReport(cmd.OutOrStdout(), ws, output); err != nil {
				return err
			}
			if output == "table" {
				cov, err := f.coverage(cmd.Context(), c)
				switch {
				case err != nil:
					_, _ = fmt.Fprintln(cmd.ErrOrStderr(), "node-local coverage unknown: "+err.Error())
				case cov != nil:
					writeCoverage(cmd.OutOrStdout(), cov, ws)
				}
			}
			if report.OutOfDateAny(ws) {
				return exitError{2}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return cmd
}

func writeReport(w io.Writer, ws []report.Workload, output string) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(ws)
	case "yaml":
		b, err := json.Marshal(ws) // the JSON names, in YAML
		if err != nil {
			return err
		}
		var v any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return err
		}
		return yaml.NewEncoder(w).Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "NAMESPACE\tWORKLOAD\tUP-TO-DATE\tOUT-OF-DATE\tSKIPPED\tNODELOCAL-EGRESS\tCHANGE")
	for _, x := range ws {
		change := x.Change
		if x.OutOfDate == 0 {
			change = ""
		}
		if x.Skipped > 0 {
			reasons := make([]string, len(x.SkipReasons))
			for i, r := range x.SkipReasons {
				reasons[i] = string(r)
			}
			change = strings.TrimSpace(change + " (skipped: " + strings.Join(reasons, ",") + ")")
		}
		if x.Audit {
			change = strings.TrimSpace("[audit] " + change)
		}
		egress := "-"
		if x.NodeLocalEgress != "" {
			egress = "blocked"
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%d\t%d\t%s\t%s\n", x.Namespace, x.Kind, x.Name, x.UpToDate, x.OutOfDate, x.Skipped, egress, change)
	}
	return tw.Flush()
}

func newRolloutCommand() *cobra.Command {
	var (
		f       clusterFlags
		dryRun  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use: "rollout (-n NAMESPACE | -A) [--dry-run=false]",
		Example: `  dnstune rollout -A                   # the plan: what would restart, in order
  dnstune rollout -n shop --dry-run=false`,
		Short: "Restart the workloads whose pods are out of date, one at a time (dry run by default)",
		Long: `Restarts each Deployment, StatefulSet and DaemonSet with out-of-date pods the way
kubectl rollout restart does (a pod-template annotation), one at a time,
waiting until it is rolled out and available before the next. Its
controller replaces the pods at the pace of its own rolling update: dnstune
deletes and evicts nothing. Bare pods, Jobs and StatefulSets with
updateStrategy OnDelete are listed as manual steps, not touched; workloads
whose own template pins dnsPolicy None, and those of audit namespaces (audit
changes no pod), are skipped. A namespace that does not exist or is not
opted in is an error. Without --dry-run=false it only prints the plan.`,
		Args:    cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return f.validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ws, err := f.connectAndScan(cmd.Context())
			if err != nil {
				return err
			}
			if !report.OutOfDateAny(ws) {
				_, _ = fmt.Fprintln(cmd.OutOrStdout(), "every pod is up to date")
				return nil
			}
			return report.Rollout(cmd.Context(), ws, report.RolloutOptions{Client: c, DryRun: dryRun, Timeout: timeout, Out: cmd.OutOrStdout()})
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", true, "print the plan only")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long one workload may take to roll out")
	return cmd
}
