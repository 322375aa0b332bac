package webhook

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/dnstune/dnstune/certs"
	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
)

// Daemon is the webhook ready to start: its manager (the TLS server, the
// namespace cache, metrics and probes), the policy in use and the cluster
// DNS address. More runnables (the report writer) may be added to Manager
// before Start.
type Daemon struct {
	Manager    manager.Manager
	Policy     *daemon.PolicyStore
	ClusterDNS *daemon.ClusterDNS
	log        logr.Logger
	o          Options
}

// New loads the policy and, with self-managed certificates, waits until
// the CA and serving certificate are ready, then builds the manager. The
// policy file is watched from before its first load, so an edit made while
// the webhook waits for its certificates is not missed.
func New(ctx context.Context, o Options, log logr.Logger) (*Daemon, error) {
	o.setDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	store := daemon.NewPolicyStore(o.PolicyFile, log.WithName("policy"), daemon.NewPolicyMetrics(crmetrics.Registry))
	store.PollInterval = o.PolicyPollInterval
	if err := store.Open(); err != nil {
		return nil, fmt.Errorf("failed to load policy: %w", err)
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return nil, err
	}
	var sm *certs.SelfManaged
	if o.SelfManaged {
		if sm, err = selfManaged(cfg, o, log.WithName("certs")); err != nil {
			return nil, err
		}
		log.Info("self-managed certificates: waiting for the CA and serving certificate", "secret", o.SelfManagedSecret)
		if err := sm.SyncUntilReady(ctx); err != nil {
			return nil, err
		}
	}
	dns := &daemon.ClusterDNS{Key: o.ClusterDNSService, Every: o.ClusterDNSRefresh, Log: log.WithName("cluster-dns")}
	mgr, err := newManager(ctx, cfg, o, store, dns, log)
	if err != nil {
		return nil, err
	}
	if sm != nil {
		if err := mgr.Add(sm); err != nil {
			return nil, fmt.Errorf("failed to add certificate manager: %w", err)
		}
	}
	return &Daemon{Manager: mgr, Policy: store, ClusterDNS: dns, log: log, o: o}, nil
}

// Start serves the webhook until ctx ends.
func (d *Daemon) Start(ctx context.Context) error {
	d.log.Info("starting dnstune webhook", "port", d.o.Port, "policy", d.o.PolicyFile, "certDir", d.o.CertDir)
	return d.Manager.Start(ctx)
}

func selfManaged(cfg *rest.Config, o Options, log logr.Logger) (*certs.SelfManaged, error) {
	c, err := kubeclient.New(cfg)
	if err != nil {
		return nil, err
	}
	ns, name, _ := strings.Cut(o.SelfManagedSecret, "/")
	return certs.NewSelfManaged(certs.SelfManagedOptions{
		Client:        c,
		Secret:        types.NamespacedName{Namespace: ns, Name: name},
		WebhookConfig: o.SelfManagedWebhookConfig,
		Hosts:         o.SelfManagedHosts,
		CertDir:       o.CertDir,
		CertValidity:  o.CertValidity,
		CAValidity:    o.CAValidity,
		Log:           log,
	})
}
