package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/policy"
)

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Work with policy files"}
	cmd.AddCommand(&cobra.Command{
		Use:     "check FILE",
		Example: `  dnstune policy check policy.yaml   # ok, or FILE:LINE:COL: field: problem`,
		Short:   "Validate a policy file: prints ok, or FILE:LINE:COL: field: problem per line (exit 1)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := policy.LoadFile(args[0])
			var list policy.ErrorList
			switch {
			case err == nil:
				_, _ = fmt.Fprintln(cmd.OutOrStdout(), "ok")
				return nil
			case errors.As(err, &list):
				for _, e := range list {
					_, _ = fmt.Fprintln(cmd.OutOrStdout(), e.Error())
				}
				return exitError{1}
			default:
				return err
			}
		},
	})
	cmd.AddCommand(newPolicyCompileCommand())
	return cmd
}

func newPolicyCompileCommand() *cobra.Command {
	var (
		clusterDNS, output string
		enforcedWarnings   bool
	)
	cmd := &cobra.Command{
		Use: "compile FILE",
		Example: `  dnstune policy compile policy.yaml | kubectl apply --dry-run=server -f -
  dnstune policy compile policy.yaml --cluster-dns 10.96.0.10 -o json`,
		Short: "Compile a policy to in-tree admission policies: one MutatingAdmissionPolicy, the ValidatingAdmissionPolicies of its warnings, their bindings",
		Long: `Writes the policy as one MutatingAdmissionPolicy and its binding (CEL and
JSONPatch) that kube-apiserver >= 1.36 evaluates itself: the same stored pods
as the webhook (proven on a real apiserver, case by case), and mutation goes
on while dnstune's pods are down. It reads the kube-dns Service as its
parameter for nodelocal profiles unless the policy or --cluster-dns gives
the address. Then the ValidatingAdmissionPolicies (Warn + Audit) that give
the webhook's warnings in its words: pods.dnstune.io in audit namespaces
(what would change; nodelocal only when the cluster DNS address is given)
and where a namespace names an unknown profile, warnings.dnstune.io beside
the mutation in enforced namespaces (--enforced-warnings).`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if output != "yaml" && output != "json" {
				return fmt.Errorf("--output must be yaml or json, got %q", output)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := policy.LoadFile(args[0])
			if err != nil {
				return err
			}
			if clusterDNS != "" {
				a, err := netip.ParseAddr(clusterDNS)
				if err == nil {
					err = v1alpha1.CheckNameserver(a)
				}
				if err != nil {
					return fmt.Errorf("--cluster-dns %s: %w", clusterDNS, err)
				}
				pol = pol.WithClusterDNS(a)
			}
			objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{NoEnforcedWarnings: !enforcedWarnings})
			if err != nil {
				return err
			}
			docs := objs.All()
			w := cmd.OutOrStdout()
			if output == "json" {
				// One document, as kubectl get -o json prints several objects.
				list := map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{}, "items": docs}
				b, err := json.MarshalIndent(list, "", "  ")
				if err != nil {
					return err
				}
				_, err = w.Write(append(b, '\n'))
				return err
			}
			for i, d := range docs {
				b, err := sigsyaml.Marshal(d)
				if err != nil {
					return err
				}
				if i > 0 {
					b = append([]byte("---\n"), b...)
				}
				if _, err := w.Write(b); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&clusterDNS, "cluster-dns", "", "cluster DNS address for nodelocal (overrides the policy's clusterDNS; default: read kube-system/kube-dns)")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "yaml (a stream of documents) or json (one v1 List)")
	cmd.Flags().BoolVar(&enforcedWarnings, "enforced-warnings", true, "compile warnings.dnstune.io: musl and limit warnings in enforced namespaces, as the webhook gives them (false saves every pod create there a validating policy's evaluation)")
	return cmd
}
