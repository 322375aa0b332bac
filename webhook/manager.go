package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
)

// newManager builds a controller-runtime manager that serves the webhook,
// metrics and health probes, with a metadata-only namespace cache, the
// policy store (opened by the caller) and the cluster DNS discovery dns as
// runnables. The handler counts into the store's metrics. With reports on,
// it elects a leader for the report writer the caller adds.
func newManager(ctx context.Context, cfg *rest.Config, o Options, store *daemon.PolicyStore, dns *daemon.ClusterDNS, log logr.Logger) (manager.Manager, error) {
	o.setDefaults()
	reports := o.Reports != ReportsOff
	tlsOpts := []func(*tls.Config){func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		if !o.EnableHTTP2 {
			c.NextProtos = []string{"http/1.1"}
		}
	}}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 kubeclient.Scheme,
		Logger:                 log,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress: o.HealthProbeBindAddress,
		PprofBindAddress:       o.PprofBindAddress,
		WebhookServer: newServer(ServerOptions{
			Port: o.Port, CertDir: o.CertDir, TLSOpts: tlsOpts,
			HeaderTimeout: o.HeaderTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.RequestTimeout,
			IdleTimeout: o.IdleTimeout, MaxConnections: o.MaxConnections, Log: log.WithName("webhook-server"),
		}),
		LeaderElection:                reports,
		LeaderElectionID:              daemon.LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			// Namespace metadata and (for the node-local egress check)
			// NetworkPolicies are cached; nothing else is listed or watched.
			ByObject: map[client.Object]cache.ByObject{namespaceMeta(): {}, &networkingv1.NetworkPolicy{}: {}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create manager: %w", err)
	}
	server := mgr.GetWebhookServer() // also adds it to the manager's runnables
	metrics := newMetrics(crmetrics.Registry)
	dns.Reader = mgr.GetAPIReader()
	nsInformer, err := mgr.GetCache().GetInformer(ctx, namespaceMeta())
	if err != nil {
		return nil, fmt.Errorf("failed to set up the namespace cache: %w", err)
	}
	namespaces := &namespaceLabels{api: mgr.GetAPIReader()}
	if _, err := nsInformer.AddEventHandler(namespaces.handler()); err != nil {
		return nil, fmt.Errorf("failed to watch namespaces: %w", err)
	}
	handler := &Handler{
		Policy:     store.Policy,
		Namespaces: namespaces,
		ClusterDNS: dns.Addr,
		Metrics:    metrics,
		Log:        log.WithName("admission"),
	}
	if err := crmetrics.Registry.Register(namespaceGauge{namespaces: namespaces, policy: store.Policy}); err != nil {
		return nil, fmt.Errorf("failed to register the namespace gauge: %w", err)
	}
	if !o.SkipNetworkPolicies {
		if handler.NetworkPolicies, err = networkPolicies(ctx, mgr.GetCache()); err != nil {
			return nil, err
		}
	}
	server.Register(Path, withDeadline(handler, o.RequestTimeout))
	runnables := []manager.Runnable{store, dns}
	for _, r := range runnables {
		if err := mgr.Add(r); err != nil {
			return nil, fmt.Errorf("failed to add runnable: %w", err)
		}
	}
	checks := map[string]healthz.Checker{
		"webhook": server.StartedChecker(),
		"namespace-cache": func(*http.Request) error {
			if !nsInformer.HasSynced() {
				return errors.New("namespace cache not synced yet")
			}
			return nil
		},
	}
	for name, check := range checks {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return nil, fmt.Errorf("failed to add readiness check: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("failed to add liveness check: %w", err)
	}
	return mgr, nil
}

// networkPolicies reads NetworkPolicies from the manager's cache (one
// cluster-wide informer, started with the manager). Until it has synced,
// and if it never does (no RBAC), reads say "not known" at once: admission
// never waits on it.
func networkPolicies(ctx context.Context, c cache.Cache) (func(context.Context, string) ([]networkingv1.NetworkPolicy, bool), error) {
	inf, err := c.GetInformer(ctx, &networkingv1.NetworkPolicy{})
	if err != nil {
		return nil, fmt.Errorf("failed to set up the NetworkPolicy cache: %w", err)
	}
	return func(ctx context.Context, ns string) ([]networkingv1.NetworkPolicy, bool) {
		if !inf.HasSynced() {
			return nil, false
		}
		var l networkingv1.NetworkPolicyList // read only (policy.CacheEgress): no copies
		if err := c.List(ctx, &l, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
			return nil, false
		}
		return l.Items, true
	}, nil
}

func namespaceMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return m
}

// withDeadline gives the handler's context the request's deadline (the
// server's write timeout bounds the connection; this stops the work).
func withDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
