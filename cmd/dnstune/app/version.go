package app

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is dnstune's version, stamped at build time by make build, make
// image and the Dockerfile (-ldflags "-X
// github.com/dnstune/dnstune/cmd/dnstune/app.Version=0.1.0", the chart's
// appVersion). Unstamped, it is the module version go install recorded
// (go install github.com/dnstune/dnstune/cmd/dnstune@v0.1.0), else "dev".
var Version = ""

// version returns Version, or what the build recorded.
func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print dnstune's version, and the Go toolchain and platform it was built for",
		Example: `  dnstune version
  dnstune --version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "dnstune %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
