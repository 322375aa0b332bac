package app

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

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
	return cmd
}
