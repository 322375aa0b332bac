// Package app is dnstune's command tree. Each command validates its flags
// and inputs before it starts anything; streams and arguments are passed in
// so tests can run commands in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// exitError carries an exit code without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Execute runs dnstune with args and returns the process exit code.
func Execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdin, stdout, stderr) //nolint:contextcheck // ctx reaches every command through ExecuteContext and cmd.Context().
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		_, _ = fmt.Fprintln(stderr, "dnstune: "+err.Error())
		return 1
	}
}

// NewRootCommand returns the dnstune command tree.
func NewRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "dnstune",
		Short:         "Reliable pod DNS on Kubernetes: admission webhook, node agent, offline tools",
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("dnstune {{.Version}}\n")
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newWebhookCommand(), newAdmissionPolicyCommand(), newMutateCommand(), newPolicyCommand(), newNodeCommand(), newReportCommand(), newRolloutCommand(), newVersionCommand())
	return root
}

// newLogger returns a structured JSON logger at info (or debug with verbose).
func newLogger(w io.Writer, verbose bool) logr.Logger {
	level := zapcore.InfoLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	return zap.New(zap.WriteTo(w), zap.Level(level))
}
