package webhook

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

// clusterDNS keeps the ClusterIP of the cluster DNS Service, polling it with
// a GET on that one Service (RBAC: get on services/kube-dns in kube-system).
type clusterDNS struct {
	reader client.Reader
	key    client.ObjectKey
	every  time.Duration
	log    logr.Logger
	addr   atomic.Pointer[netip.Addr]
	warned bool
}

// Addr returns the last discovered address, invalid if none.
func (c *clusterDNS) Addr() netip.Addr {
	if a := c.addr.Load(); a != nil {
		return *a
	}
	return netip.Addr{}
}

func (c *clusterDNS) Start(ctx context.Context) error {
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		c.refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *clusterDNS) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var svc corev1.Service
	err := c.reader.Get(ctx, c.key, &svc)
	if err == nil {
		a, perr := netip.ParseAddr(svc.Spec.ClusterIP)
		if perr == nil {
			perr = v1alpha1.CheckNameserver(a)
		}
		if perr == nil {
			if old := c.Addr(); old != a {
				c.log.Info("cluster DNS discovered", "service", c.key.String(), "address", a.String())
			}
			c.addr.Store(&a)
			c.warned = false
			return
		}
		err = fmt.Errorf("service %s has no usable ClusterIP %q", c.key, svc.Spec.ClusterIP)
	}
	if !c.warned {
		c.log.Info("cannot discover the cluster DNS address; the nodelocal profile skips pods until it is known or clusterDNS is set in the policy",
			"service", c.key.String(), "error", err.Error())
		c.warned = true
	}
}

// NeedLeaderElection is false: every replica serves and polls.
func (c *clusterDNS) NeedLeaderElection() bool { return false }
