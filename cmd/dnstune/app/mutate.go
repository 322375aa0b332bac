package app

import (
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/internal/offline"
	"github.com/dnstune/dnstune/policy"
)

func newMutateCommand() *cobra.Command {
	var (
		file, policyFile, namespace, output, clusterDNS string
		pol                                             *policy.Policy
		dns                                             netip.Addr
	)
	cmd := &cobra.Command{
		Use: "mutate -f FILE|-",
		Example: `  dnstune mutate -f deploy.yaml > deploy.dnstune.yaml
  kustomize build overlays/prod | dnstune mutate -f - --policy policy.yaml -o diff
  dnstune mutate -f pods.json -n shop --cluster-dns 10.96.0.10   # JSON stays JSON`,
		Short: "Apply a policy to manifests offline and print the result (or a diff)",
		Long: `Applies the policy to every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
Job, CronJob and PodTemplate in a multi-document YAML stream, as the webhook
would at Pod creation. Every namespace counts as opted in unless a Namespace
object in the stream carries labels that say otherwise. Without --policy the
built-in default policy (profile "resilient") applies. Warnings go to stderr.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if file == "" {
				return fmt.Errorf("-f is required (a file, or - for standard input)")
			}
			if output != "yaml" && output != "diff" {
				return fmt.Errorf("--output must be yaml or diff, got %q", output)
			}
			if clusterDNS != "" {
				a, err := netip.ParseAddr(clusterDNS)
				if err != nil {
					return fmt.Errorf("--cluster-dns must be an IP address: %w", err)
				}
				if err := v1alpha1.CheckNameserver(a); err != nil {
					return fmt.Errorf("--cluster-dns %s: %w", clusterDNS, err)
				}
				dns = a
			}
			pol = policy.Default()
			if policyFile != "" {
				p, err := policy.LoadFile(policyFile)
				if err != nil {
					return err
				}
				pol = p
			}
			// Flags override files (as in cert-manager): --cluster-dns wins
			// over the policy's clusterDNS.
			pol = pol.WithClusterDNS(dns)
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in []byte
			var err error
			if file == "-" {
				in, err = io.ReadAll(cmd.InOrStdin())
			} else {
				in, err = os.ReadFile(file) // #nosec G304 -- the user names the file.
			}
			if err != nil {
				return fmt.Errorf("failed to read manifests: %w", err)
			}
			name := file
			if file == "-" {
				name = "<stdin>"
			}
			out, err := offline.Mutate(in, offline.Options{Policy: pol, Namespace: namespace, Filename: name})
			if err != nil {
				return fmt.Errorf("failed to mutate %s: %w", name, err)
			}
			stderr := cmd.ErrOrStderr()
			for _, n := range out.Notes {
				_, _ = fmt.Fprintln(stderr, n)
			}
			for _, r := range out.Results {
				for _, w := range r.Decision.Warnings {
					_, _ = fmt.Fprintf(stderr, "%s %s/%s: %s\n", r.Kind, r.Namespace, r.Name, w)
				}
			}
			if output == "yaml" {
				_, err = cmd.OutOrStdout().Write(out.Data)
				return err
			}
			diff, err := out.Diff(name, name+" (dnstune)")
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), diff)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "manifests to mutate (- for standard input)")
	f.StringVar(&policyFile, "policy", "", "policy file (default: the built-in policy)")
	f.StringVarP(&namespace, "namespace", "n", offline.DefaultNamespace, "namespace of objects without metadata.namespace")
	f.StringVarP(&output, "output", "o", "yaml", "yaml (the mutated stream) or diff (a unified diff)")
	f.StringVar(&clusterDNS, "cluster-dns", "", "cluster DNS address for the nodelocal profile; overrides the policy's clusterDNS")
	return cmd
}
