package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/internal/admissionpolicy"
	"github.com/dnstune/dnstune/policy"
)

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Work with policy files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a policy file: prints ok, or FILE:LINE:COL: field: problem per line (exit 1)",
		Args:  cobra.ExactArgs(1),
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
	var clusterDNS, output string
	cmd := &cobra.Command{
		Use:   "compile FILE",
		Short: "Compile a policy to in-tree MutatingAdmissionPolicies and bindings (admissionregistration.k8s.io/v1)",
		Long: `Writes the policy as MutatingAdmissionPolicy objects and their bindings (CEL and
JSONPatch) that kube-apiserver >= 1.36 evaluates itself: the same stored pods
as the webhook (proven on a real apiserver, case by case), and mutation goes
on while dnstune's pods are down. One policy for the options profiles, one
for nodelocal profiles, which reads the kube-dns Service as its parameter
unless the policy or --cluster-dns gives the address; and a
ValidatingAdmissionPolicy (Warn + Audit) that says, in audit namespaces,
what would change, in the webhook's words (nodelocal ones only when the
cluster DNS address is given).`,
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
			objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{})
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
	return cmd
}
