package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/dnstune/dnstune/internal/kubeclient"
	"github.com/dnstune/dnstune/node"
)

func newNodeCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Node agent: neighbour-table thresholds and DNS health of this node"}
	cmd.AddCommand(newNodeTuneCommand(), newNodeMonitorCommand())
	return cmd
}

type familyFlags struct{ ipv4, ipv6 bool }

func (f *familyFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.ipv4, "ipv4", true, "tune/watch the IPv4 (ARP) table")
	cmd.Flags().BoolVar(&f.ipv6, "ipv6", true, "tune/watch the IPv6 (NDP) table")
}

func (f *familyFlags) families() ([]node.Family, error) {
	var out []node.Family
	if f.ipv4 {
		out = append(out, node.IPv4)
	}
	if f.ipv6 {
		out = append(out, node.IPv6)
	}
	if len(out) == 0 {
		return nil, errors.New("--ipv4=false and --ipv6=false leave nothing to do")
	}
	return out, nil
}

func newNodeTuneCommand() *cobra.Command {
	var (
		thresh, procRoot string
		fam              familyFlags
		dryRun           bool
		opts             node.TuneOptions
	)
	cmd := &cobra.Command{
		Use: "tune",
		Example: `  # the DaemonSet's init container (privileged, hostNetwork)
  dnstune node tune
  dnstune node tune --gc-thresh 8192,32768,65536`,
		Short: "Raise net.ipv4/ipv6.neigh.default.gc_thresh1/2/3; never lowers a value, idempotent",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			t, err := node.ParseThresholds(thresh)
			if err != nil {
				return fmt.Errorf("--gc-thresh: %w", err)
			}
			families, err := fam.families()
			if err != nil {
				return err
			}
			opts = node.TuneOptions{Proc: node.Proc{Root: procRoot}, Target: t, Families: families, DryRun: dryRun}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := node.Tune(opts)
			out := cmd.OutOrStdout()
			for _, s := range res.Skipped {
				_, _ = fmt.Fprintln(out, s)
			}
			for _, c := range res.Changes {
				prefix := ""
				if opts.DryRun && c.Before != c.After {
					prefix = "(dry run) "
				}
				_, _ = fmt.Fprintln(out, prefix+c.String())
			}
			return err
		},
	}
	cmd.Flags().StringVar(&thresh, "gc-thresh", node.DefaultTargets.String(), "target gc_thresh1,gc_thresh2,gc_thresh3")
	cmd.Flags().StringVar(&procRoot, "proc-root", "/proc", "where /proc is (for tests and chroots)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	fam.add(cmd)
	return cmd
}

func newNodeMonitorCommand() *cobra.Command {
	var (
		o                node.MonitorOptions
		thresh, procRoot string
		addr             string
		fam              familyFlags
		verbose          bool
		kubeconfig       string
		nodeName         string
		probe            node.ProbeOptions
		probeAddr        string
		cover            bool
		coverUpstream    []string
		wellKnown        bool
	)
	cmd := &cobra.Command{
		Use: "monitor",
		Example: `  # the DaemonSet's container: metrics on :9741, Events on its Node
  dnstune node monitor --nodelocal-address 169.254.20.10
  # and answer at the cache's address, forwarding to kube-dns, while it does not
  dnstune node monitor --nodelocal-address 169.254.20.10 --nodelocal-cover`,
		Short: "Export neighbour-table fill, overflows and conntrack races as Prometheus metrics; report drift",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			t, err := node.ParseThresholds(thresh)
			if err != nil {
				return fmt.Errorf("--gc-thresh: %w", err)
			}
			if o.Families, err = fam.families(); err != nil {
				return err
			}
			if o.MaxGCThresh3 < 1 || o.MaxGCThresh3 > node.MaxThreshold {
				return fmt.Errorf("--max-gc-thresh3 must be from 1 to %d (the kernel's INT_MAX), got %d", node.MaxThreshold, o.MaxGCThresh3)
			}
			if o.AutoRaise && o.MaxGCThresh3 < t[2] {
				return fmt.Errorf("--auto-raise needs --max-gc-thresh3 at least gc_thresh3 (%d), got %d", t[2], o.MaxGCThresh3)
			}
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return fmt.Errorf("--metrics-bind-address: %w", err)
			}
			o.Target, o.Proc = t, node.Proc{Root: procRoot}
			if probeAddr != "" {
				if probe.Address, err = netip.ParseAddr(probeAddr); err != nil {
					return fmt.Errorf("--nodelocal-address: %w", err)
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd.ErrOrStderr(), verbose)
			o.Log = log
			api := node.ForNode(log, kubeconfig, nodeName)
			if api != nil {
				o.Events = api
			}
			m := node.NewMonitor(o)
			reg := prometheus.NewRegistry()
			reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			var p *node.CacheProbe
			if probe.Address.IsValid() {
				probe.Events, probe.Log = o.Events, log.WithName("nodelocal")
				if api != nil {
					probe.Conditions = api
				}
				if !wellKnown {
					probe.WellKnown = []node.WellKnownAddress{}
				}
				if cover {
					var err error
					probe.Cover, err = node.NewCover(node.CoverOptions{
						Address: probe.Address, Proc: o.Proc, Log: probe.Log,
						Upstream: func(ctx context.Context) (string, error) {
							if api == nil {
								return node.ServiceAddress(ctx, nil, coverUpstream)
							}
							return api.ServiceAddress(ctx, coverUpstream)
						},
					})
					if err != nil {
						return err
					}
				}
				var err error
				if p, err = node.NewCacheProbe(probe); err != nil {
					return err
				}
				reg.MustRegister(p)
			}
			return node.Serve(cmd.Context(), m, p, reg, addr, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&procRoot, "proc-root", "/proc", "where /proc is (for tests and chroots)")
	f.DurationVar(&o.Interval, "interval", node.DefaultInterval, "time between checks")
	f.StringVar(&addr, "metrics-bind-address", node.DefaultMetricsBindAddress, "address of /metrics, /healthz and /readyz")
	f.StringVar(&thresh, "gc-thresh", node.DefaultTargets.String(), "thresholds node tune set; lower values are reported as drift")
	f.BoolVar(&o.Reapply, "reapply", false, "write --gc-thresh back on drift (needs the privilege of node tune)")
	f.BoolVar(&o.AutoRaise, "auto-raise", false, "double the thresholds when the table passes 80% of gc_thresh3 or overflows (needs privilege)")
	f.IntVar(&o.MaxGCThresh3, "max-gc-thresh3", 262144, "ceiling for --auto-raise (each entry costs ~512 B of kernel memory)")
	f.StringVar(&kubeconfig, "kubeconfig", "", kubeclient.FlagHelp)
	f.StringVar(&nodeName, "node-name", os.Getenv("NODE_NAME"), "the Node that Events are about (default $NODE_NAME, from the downward API)")
	f.StringVar(&probeAddr, "nodelocal-address", "", "node-local DNS cache to probe with a DNS query over UDP (the policy's nodeLocalDNS); empty: no probe")
	f.StringVar(&probe.Name, "nodelocal-probe-name", node.DefaultProbeName, "name the probe asks for (type A; NOERROR and NXDOMAIN count as answers)")
	f.DurationVar(&probe.Interval, "nodelocal-probe-interval", node.DefaultProbeInterval, "time between probes")
	f.DurationVar(&probe.Timeout, "nodelocal-probe-timeout", node.DefaultProbeTimeout, "how long a probe waits for the answer")
	f.BoolVar(&wellKnown, "nodelocal-wellknown", true, "also probe the well-known node-local addresses (169.254.20.10, AKS LocalDNS's 169.254.10.11 and 169.254.10.10) and say which answer")
	f.BoolVar(&cover, "nodelocal-cover", false, "while the cache does not answer (two failed probes) and nothing listens at its address, answer there, forwarding to kube-dns; give the address back as soon as the cache listens again (needs root, CAP_NET_ADMIN and CAP_NET_BIND_SERVICE)")
	f.StringSliceVar(&coverUpstream, "nodelocal-cover-upstream", []string{"kube-system/kube-dns-upstream", "kube-system/kube-dns"}, "where the cover forwards: the first of these Services (namespace/name) that exists, or host:port")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	fam.add(cmd)
	return cmd
}
