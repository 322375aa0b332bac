package daemon

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

// LookupClusterDNS reads the cluster DNS address: the ClusterIP of the
// Service key (kube-system/kube-dns), which must be one a pod's resolv.conf
// may hold (v1alpha1.CheckNameserver). Every dnstune path that needs the
// address when the policy sets none finds it here. RBAC: get on that one
// Service.
func LookupClusterDNS(ctx context.Context, reader client.Reader, key client.ObjectKey) (netip.Addr, error) {
	var svc corev1.Service
	if err := reader.Get(ctx, key, &svc); err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err == nil {
		err = v1alpha1.CheckNameserver(a)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("service %s has no usable ClusterIP %q: %w", key, svc.Spec.ClusterIP, err)
	}
	return a, nil
}

// ClusterDNS keeps the cluster DNS address, reading it (LookupClusterDNS)
// every Every until its context ends; a manager runnable on every replica.
type ClusterDNS struct {
	Reader client.Reader
	// Key is the Service, default DefaultClusterDNSService.
	Key client.ObjectKey
	// Every, default DefaultClusterDNSRefresh.
	Every time.Duration
	Log   logr.Logger

	addr   atomic.Pointer[netip.Addr]
	warned bool
}

// Addr returns the last discovered address, invalid if none.
func (c *ClusterDNS) Addr() netip.Addr {
	if a := c.addr.Load(); a != nil {
		return *a
	}
	return netip.Addr{}
}

// Start reads the address until ctx ends (manager.Runnable).
func (c *ClusterDNS) Start(ctx context.Context) error {
	if c.Key.Name == "" {
		c.Key = DefaultClusterDNSService
	}
	if c.Every <= 0 {
		c.Every = DefaultClusterDNSRefresh
	}
	t := time.NewTicker(c.Every)
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

func (c *ClusterDNS) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a, err := LookupClusterDNS(ctx, c.Reader, c.Key)
	if err == nil {
		if old := c.Addr(); old != a {
			c.Log.Info("cluster DNS discovered", "service", c.Key.String(), "address", a.String())
		}
		c.addr.Store(&a)
		c.warned = false
		return
	}
	if !c.warned {
		c.Log.Info("cannot discover the cluster DNS address; the nodelocal profile skips pods until it is known or clusterDNS is set in the policy",
			"service", c.Key.String(), "error", err.Error())
		c.warned = true
	}
}

// NeedLeaderElection is false: every replica serves and polls.
func (c *ClusterDNS) NeedLeaderElection() bool { return false }
