package webhook

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/dnstune/dnstune/certs"
	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
)

// Run loads the policy, then serves the webhook until ctx ends. The policy
// file is watched from before its first load, so an edit made while the
// webhook waits for its certificates is not missed.
func Run(ctx context.Context, o Options, log logr.Logger) error {
	o.setDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	store := daemon.NewPolicyStore(o.PolicyFile, log.WithName("policy"), daemon.NewPolicyMetrics(crmetrics.Registry))
	store.PollInterval = o.PolicyPollInterval
	if err := store.Open(); err != nil {
		return fmt.Errorf("failed to load policy: %w", err)
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return err
	}
	var sm *certs.SelfManaged
	if o.SelfManaged {
		if sm, err = selfManaged(cfg, o, log.WithName("certs")); err != nil {
			return err
		}
		log.Info("self-managed certificates: waiting for the CA and serving certificate", "secret", o.SelfManagedSecret)
		if err := sm.SyncUntilReady(ctx); err != nil {
			return err
		}
	}
	mgr, err := NewManager(ctx, cfg, o, store, log)
	if err != nil {
		return err
	}
	if sm != nil {
		if err := mgr.Add(sm); err != nil {
			return fmt.Errorf("failed to add certificate manager: %w", err)
		}
	}
	log.Info("starting dnstune webhook", "port", o.Port, "policy", o.PolicyFile, "certDir", o.CertDir)
	return mgr.Start(ctx)
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
