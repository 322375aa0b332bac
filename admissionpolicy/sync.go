package admissionpolicy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
	"github.com/dnstune/dnstune/policy"
)

// fieldManager is the server-side apply field manager of the compiled objects.
const fieldManager = "dnstune"

// RunOptions configure Run. Zero values take the defaults stated.
type RunOptions struct {
	// PolicyFile is watched; every successful reload re-renders.
	PolicyFile string
	// Kubeconfig out of cluster; empty: in-cluster (or $KUBECONFIG).
	Kubeconfig string
	// MetricsBindAddress default ":8080" ("0" off); HealthProbeBindAddress
	// default ":8081".
	MetricsBindAddress, HealthProbeBindAddress string
	// LeaderElectionNamespace, default dnstune-system: one replica applies.
	LeaderElectionNamespace string
	// Resync re-applies without a policy change (repairs hand edits), default 1m.
	Resync time.Duration
	// EnforcedWarnings compiles warnings.dnstune.io (Options.NoEnforcedWarnings
	// is its opposite). The command line's default is true; the zero value
	// leaves it out.
	EnforcedWarnings bool
}

// Run keeps the compiled admission policies in the cluster in step with
// the policy file until ctx ends: the elected leader applies them with
// server-side apply and deletes compiled objects the policy no longer
// yields. Readiness is "the objects of the policy in use are applied".
func Run(ctx context.Context, o RunOptions, log logr.Logger) error {
	if o.MetricsBindAddress == "" {
		o.MetricsBindAddress = daemon.DefaultMetricsBindAddress
	}
	if o.HealthProbeBindAddress == "" {
		o.HealthProbeBindAddress = daemon.DefaultHealthProbeBindAddress
	}
	if o.LeaderElectionNamespace == "" {
		o.LeaderElectionNamespace = daemon.DefaultLeaderElectionNamespace
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	store := daemon.NewPolicyStore(o.PolicyFile, log.WithName("policy"), daemon.NewPolicyMetrics(crmetrics.Registry))
	if err := store.Open(); err != nil {
		return fmt.Errorf("failed to load policy: %w", err)
	}
	cfg, err := kubeclient.Config(o.Kubeconfig)
	if err != nil {
		return err
	}
	if err := CheckServed(cfg); err != nil {
		return err
	}
	mgr, err := newManager(cfg, o, log)
	if err != nil {
		return err
	}
	s := &Syncer{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Policy: store.Policy, Generation: store.Generation, Resync: o.Resync, Log: log.WithName("sync"), NoEnforcedWarnings: !o.EnforcedWarnings}
	for _, r := range []manager.Runnable{store, s} {
		if err := mgr.Add(r); err != nil {
			return err
		}
	}
	if err := mgr.AddReadyzCheck("in-sync", s.Ready); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting dnstune admission-policy backend", "policy", o.PolicyFile)
	return mgr.Start(ctx)
}

func newManager(cfg *rest.Config, o RunOptions, log logr.Logger) (manager.Manager, error) {
	return ctrl.NewManager(cfg, manager.Options{
		Scheme: kubeclient.Scheme, Logger: log,
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:        o.HealthProbeBindAddress,
		LeaderElection:                true,
		LeaderElectionID:              daemon.LeaderElectionID, // the install's Lease, either backend
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
	})
}

// Syncer applies the compiled objects of the policy in use, with the
// cluster DNS address compiled in: the policy's clusterDNS, else the
// kube-system/kube-dns ClusterIP it reads (one GET every few seconds; a
// change re-renders). While neither is known, nodelocal is left out, as
// the webhook skips such pods (no-cluster-dns).
type Syncer struct {
	Client client.Client
	// Reader reads live, uncached: the kube-dns Service (RBAC: get on that
	// one Service) and the objects dnstune applied (list).
	Reader     client.Reader
	Policy     func() *policy.Policy
	Generation func() int64
	Resync     time.Duration
	Log        logr.Logger
	// NoEnforcedWarnings is Options.NoEnforcedWarnings.
	NoEnforcedWarnings bool

	synced  atomic.Int64 // generation last applied; 0 = none
	applied netip.Addr   // the cluster DNS compiled into the applied objects
}

// NeedLeaderElection is true: one replica applies.
func (s *Syncer) NeedLeaderElection() bool { return true }

// Ready passes once the policy in use is applied (on the leader; other
// replicas are ready once they could take over: they serve nothing).
func (s *Syncer) Ready(*http.Request) error {
	if s.synced.Load() == 0 {
		return errors.New("compiled admission policies not applied yet")
	}
	return nil
}

// Start applies on every policy change and every Resync until ctx ends.
func (s *Syncer) Start(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last, lastDNS time.Time
	dns := netip.Addr{}
	for {
		if time.Since(lastDNS) >= 5*time.Second {
			dns, lastDNS = s.clusterDNS(ctx), time.Now()
		}
		if gen := s.Generation(); gen != s.synced.Load() || dns != s.applied || time.Since(last) >= s.Resync {
			if err := s.sync(ctx, dns); err != nil {
				s.Log.Error(err, "failed to apply the compiled admission policies; will retry")
			} else {
				s.synced.Store(gen)
				last = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// clusterDNS reads the kube-dns ClusterIP, invalid when unknown.
func (s *Syncer) clusterDNS(ctx context.Context) netip.Addr {
	if s.Reader == nil {
		return netip.Addr{}
	}
	a, _ := daemon.LookupClusterDNS(ctx, s.Reader, daemon.DefaultClusterDNSService)
	return a
}

func (s *Syncer) sync(ctx context.Context, dns netip.Addr) error {
	pol := s.Policy()
	if !pol.ClusterDNS.IsValid() {
		pol = pol.WithClusterDNS(dns) // discovered: only when the policy sets none
	}
	objs, err := Compile(pol, Options{NoParams: true, NoEnforcedWarnings: s.NoEnforcedWarnings})
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	all := objs.All()
	for _, o := range all {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{Object: u}
		delete(obj.Object["metadata"].(map[string]any), "creationTimestamp")
		if err := s.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("failed to apply %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		keep[obj.GetKind()+"/"+obj.GetName()] = true
	}
	// What earlier policies (or versions of dnstune) yielded and this one
	// does not: bindings before the policies they name.
	for _, list := range []client.ObjectList{
		&admissionregistrationv1.MutatingAdmissionPolicyBindingList{},
		&admissionregistrationv1.ValidatingAdmissionPolicyBindingList{},
		&admissionregistrationv1.MutatingAdmissionPolicyList{},
		&admissionregistrationv1.ValidatingAdmissionPolicyList{},
	} {
		if err := s.deleteStale(ctx, list, keep); err != nil {
			return err
		}
	}
	s.applied = dns
	s.Log.Info("compiled admission policies applied", "generation", s.Generation(), "objects", len(all), "clusterDNS", pol.ClusterDNS.String())
	return nil
}

// deleteStale deletes the dnstune-managed objects of list's kind that keep
// (kind/name) does not hold.
func (s *Syncer) deleteStale(ctx context.Context, list client.ObjectList, keep map[string]bool) error {
	if err := s.Reader.List(ctx, list, client.MatchingLabels{"app.kubernetes.io/managed-by": "dnstune"}); err != nil {
		return err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	for _, item := range items {
		o := item.(client.Object)
		gvk, err := apiutil.GVKForObject(o, s.Client.Scheme())
		if err != nil {
			return err
		}
		if keep[gvk.Kind+"/"+o.GetName()] {
			continue
		}
		if err := client.IgnoreNotFound(s.Client.Delete(ctx, o)); err != nil {
			return err
		}
		s.Log.Info("deleted what the policy no longer yields", "kind", gvk.Kind, "name", o.GetName())
	}
	return nil
}
