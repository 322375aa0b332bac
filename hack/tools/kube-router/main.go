// Command kube-router is cloudnativelabs/kube-router v2, built from the Go
// module proxy for dnstune's real-node e2e, where only its NetworkPolicy
// controller runs (--run-firewall, without its router or service proxy):
// the enforcer the node-local egress cases are checked against. It runs
// only inside the test node and is never shipped.
//
// This is upstream's cmd/kube-router main without its pprof listener.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cloudnativelabs/kube-router/v2/pkg/cmd"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/cloudnativelabs/kube-router/v2/pkg/version"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	klog.InitFlags(nil)
	config := options.NewKubeRouterConfig()
	config.AddFlags(pflag.CommandLine)
	pflag.Parse()
	// kubernetes/kubernetes#17162, as upstream's main.
	if err := flag.CommandLine.Parse([]string{}); err != nil {
		return err
	}
	if err := flag.Set("logtostderr", "true"); err != nil {
		return err
	}
	if err := flag.Set("v", config.VLevel); err != nil {
		return err
	}
	switch {
	case config.HelpRequested:
		pflag.Usage()
		return nil
	case config.Version:
		version.PrintVersion(false)
		return nil
	case os.Geteuid() != 0:
		return fmt.Errorf("kube-router needs root to run iptables and ipset")
	case config.CleanupConfig:
		cmd.CleanupConfigAndExit()
		return nil
	}
	kr, err := cmd.NewKubeRouterDefault(config)
	if err != nil {
		return fmt.Errorf("kube-router config: %w", err)
	}
	return kr.Run()
}
