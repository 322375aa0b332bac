package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/certs"
)

// Defaults of Options, and of the webhook command's flags.
const (
	DefaultPort                     = 9443
	DefaultMetricsBindAddress       = ":8080"
	DefaultHealthProbeBindAddress   = ":8081"
	DefaultRequestTimeout           = 10 * time.Second
	DefaultClusterDNSRefresh        = 30 * time.Second
	DefaultSelfManagedSecret        = "dnstune-system/dnstune-webhook-tls" // #nosec G101 -- a Secret's name, not a credential.
	DefaultSelfManagedWebhookConfig = "dnstune"
)

// DefaultClusterDNSService is the Service whose ClusterIP is the cluster DNS.
var DefaultClusterDNSService = client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}

// DefaultSelfManagedHosts are the webhook Service's names, the self-managed
// certificate's default DNS names.
func DefaultSelfManagedHosts() []string {
	return []string{"dnstune-webhook.dnstune-system.svc", "dnstune-webhook.dnstune-system.svc.cluster.local"}
}

// Options configure the webhook server. The zero value of each field is
// replaced by the default its comment states.
type Options struct {
	// PolicyFile is the policy to serve; required. Edits are picked up live.
	PolicyFile string
	// CertDir holds tls.crt and tls.key; both are reloaded when they change.
	CertDir string
	// Port is the TLS port, default 9443.
	Port int
	// MetricsBindAddress serves Prometheus metrics, default ":8080"; "0" disables.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz, default ":8081".
	HealthProbeBindAddress string
	// Kubeconfig is used out of cluster; empty means in-cluster config (or $KUBECONFIG).
	Kubeconfig string
	// EnableHTTP2 offers HTTP/2 on the TLS port. Default false: HTTP/1.1 only,
	// which closes the HTTP/2 "rapid reset" class of attacks.
	EnableHTTP2 bool
	// RequestTimeout bounds a request from its headers to the end of its
	// answer, default 10s.
	RequestTimeout time.Duration
	// HeaderTimeout bounds the TLS handshake and, separately, the request
	// headers; ReadTimeout a whole request; IdleTimeout a kept-alive
	// connection without a request; MaxConnections how many are served at
	// once. Defaults: DefaultHeaderTimeout (3s), DefaultReadTimeout (5s),
	// DefaultIdleTimeout (10s), DefaultMaxConnections (1000).
	HeaderTimeout, ReadTimeout, IdleTimeout time.Duration
	MaxConnections                          int
	// ClusterDNSService is the Service whose ClusterIP is the cluster DNS,
	// default kube-system/kube-dns. Polled every ClusterDNSRefresh (default 30s).
	ClusterDNSService client.ObjectKey
	ClusterDNSRefresh time.Duration
	// SelfManaged makes the webhook keep its own CA and serving certificate
	// in SelfManagedSecret and the caBundle of SelfManagedWebhookConfig, for
	// clusters without cert-manager. CertDir then receives the certificate.
	SelfManaged bool
	// SelfManagedSecret is namespace/name, default dnstune-system/dnstune-webhook-tls.
	SelfManagedSecret string
	// SelfManagedWebhookConfig defaults to "dnstune".
	SelfManagedWebhookConfig string
	// SelfManagedHosts are the certificate's DNS names and IPs, default the
	// Service's names (dnstune-webhook.dnstune-system.svc and .svc.cluster.local).
	SelfManagedHosts []string
	// CertValidity (default 1 year) and CAValidity (default 10 years) of
	// self-managed certificates; each is renewed at two thirds of its life.
	CertValidity, CAValidity time.Duration
	// PprofBindAddress serves net/http/pprof when set (default: off).
	PprofBindAddress string
	// PolicyPollInterval is how often the policy file is re-read without a
	// file-system event, default DefaultPolicyPollInterval.
	PolicyPollInterval time.Duration
}

func (o *Options) setDefaults() {
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.MetricsBindAddress == "" {
		o.MetricsBindAddress = DefaultMetricsBindAddress
	}
	if o.HealthProbeBindAddress == "" {
		o.HealthProbeBindAddress = DefaultHealthProbeBindAddress
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.ClusterDNSService.Name == "" {
		o.ClusterDNSService = DefaultClusterDNSService
	}
	if o.PolicyPollInterval == 0 {
		o.PolicyPollInterval = DefaultPolicyPollInterval
	}
	if o.SelfManagedSecret == "" {
		o.SelfManagedSecret = DefaultSelfManagedSecret
	}
	if o.SelfManagedWebhookConfig == "" {
		o.SelfManagedWebhookConfig = DefaultSelfManagedWebhookConfig
	}
	if len(o.SelfManagedHosts) == 0 {
		o.SelfManagedHosts = DefaultSelfManagedHosts()
	}
	if o.ClusterDNSRefresh == 0 {
		o.ClusterDNSRefresh = DefaultClusterDNSRefresh
	}
}

// Validate checks the options before anything starts.
func (o *Options) Validate() error {
	var errs []error
	if o.PolicyFile == "" {
		errs = append(errs, errors.New("--policy is required"))
	}
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir is required"))
	}
	if o.SelfManaged {
		if ns, name, ok := strings.Cut(o.SelfManagedSecret, "/"); o.SelfManagedSecret != "" && (!ok || ns == "" || name == "") {
			errs = append(errs, fmt.Errorf("--self-managed-secret must be namespace/name, got %q", o.SelfManagedSecret))
		}
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port must be 1-65535, got %d", o.Port))
	}
	return errors.Join(errs...)
}

// RESTConfig returns the client configuration the options name.
func (o *Options) RESTConfig() (*rest.Config, error) {
	if o.Kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("failed to load kubeconfig %s: %w", o.Kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to find cluster credentials (in-cluster, $KUBECONFIG or --kubeconfig): %w", err)
	}
	return cfg, nil
}

// Run loads the policy, then serves the webhook until ctx ends. The policy
// file is watched from before its first load, so an edit made while the
// webhook waits for its certificates is not missed.
func Run(ctx context.Context, o Options, log logr.Logger) error {
	o.setDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	store := NewPolicyStore(o.PolicyFile, log.WithName("policy"), NewMetrics(crmetrics.Registry))
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
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("failed to build scheme: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("failed to create client: %w", err)
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

// NewManager builds a controller-runtime manager that serves the webhook,
// metrics and health probes, with a metadata-only namespace cache, the
// policy store (opened by the caller) and the cluster DNS discovery as
// runnables. The handler counts into the store's metrics.
func NewManager(ctx context.Context, cfg *rest.Config, o Options, store *PolicyStore, log logr.Logger) (manager.Manager, error) {
	o.setDefaults()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("failed to build scheme: %w", err)
	}
	tlsOpts := []func(*tls.Config){func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		if !o.EnableHTTP2 {
			c.NextProtos = []string{"http/1.1"}
		}
	}}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 scheme,
		Logger:                 log,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress: o.HealthProbeBindAddress,
		PprofBindAddress:       o.PprofBindAddress,
		WebhookServer: NewServer(ServerOptions{
			Port: o.Port, CertDir: o.CertDir, TLSOpts: tlsOpts,
			HeaderTimeout: o.HeaderTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.RequestTimeout,
			IdleTimeout: o.IdleTimeout, MaxConnections: o.MaxConnections, Log: log.WithName("webhook-server"),
		}),
		Cache: cache.Options{
			// Only namespace metadata is cached; nothing else is listed or watched.
			ByObject: map[client.Object]cache.ByObject{namespaceMeta(): {}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create manager: %w", err)
	}
	server := mgr.GetWebhookServer() // also adds it to the manager's runnables
	metrics := store.metrics
	dns := &clusterDNS{reader: mgr.GetAPIReader(), key: o.ClusterDNSService, every: o.ClusterDNSRefresh, log: log.WithName("cluster-dns")}
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
	server.Register(Path, withDeadline(handler, o.RequestTimeout))
	for _, r := range []manager.Runnable{store, dns} {
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

// namespaceLabels mirrors namespace labels from the metadata-only informer
// into a map that requests read without locks or copies (the informer's own
// cache would deep-copy the object on every Get). A namespace created a
// moment ago, not yet seen by the informer, is read from the API.
type namespaceLabels struct {
	m   sync.Map // namespace name -> map[string]string, never mutated once stored
	api client.Reader
}

func (n *namespaceLabels) handler() toolscache.ResourceEventHandler {
	set := func(obj any) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			n.m.Store(m.Name, m.Labels)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
				n.m.Delete(m.Name)
			}
		},
	}
}

func (n *namespaceLabels) Labels(ctx context.Context, name string) (map[string]string, error) {
	if l, ok := n.m.Load(name); ok {
		return l.(map[string]string), nil
	}
	ns := namespaceMeta()
	if err := n.api.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		return nil, fmt.Errorf("failed to get namespace %s: %w", name, err)
	}
	return ns.Labels, nil
}

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
