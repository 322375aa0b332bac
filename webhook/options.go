package webhook

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/internal/daemon"
	"github.com/dnstune/dnstune/internal/kubeclient"
)

// Defaults of Options, and of the webhook command's flags.
const (
	DefaultPort                     = 9443
	DefaultRequestTimeout           = 10 * time.Second
	DefaultSelfManagedSecret        = "dnstune-system/dnstune-webhook-tls" // #nosec G101 -- a Secret's name, not a credential.
	DefaultSelfManagedWebhookConfig = "dnstune"
	ReportsAuto                     = "auto"
	ReportsOff                      = "off"
)

// defaultSelfManagedHosts are the webhook Service's names, the self-managed
// certificate's default DNS names.
func defaultSelfManagedHosts() []string {
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
	// Reports is "auto" (the default: keep a PolicyReport per opted-in
	// namespace when the PolicyReport CRD is installed, manifests/reports.yaml)
	// or "off". On, the replicas elect a leader (a Lease in
	// LeaderElectionNamespace, default dnstune-system) that scans every
	// ReportInterval (default 5m) and on policy or opt-in changes.
	Reports                 string
	ReportInterval          time.Duration
	LeaderElectionNamespace string
	// SkipNetworkPolicies turns off the node-local egress check: by default
	// the webhook watches NetworkPolicies (one cluster-wide watch; RBAC
	// list/watch networkpolicies) and warns when a pod pointed at the
	// node-local cache may not send DNS to it.
	SkipNetworkPolicies bool
}

func (o *Options) setDefaults() {
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.MetricsBindAddress == "" {
		o.MetricsBindAddress = daemon.DefaultMetricsBindAddress
	}
	if o.HealthProbeBindAddress == "" {
		o.HealthProbeBindAddress = daemon.DefaultHealthProbeBindAddress
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.ClusterDNSService.Name == "" {
		o.ClusterDNSService = daemon.DefaultClusterDNSService
	}
	if o.PolicyPollInterval == 0 {
		o.PolicyPollInterval = daemon.DefaultPolicyPollInterval
	}
	if o.SelfManagedSecret == "" {
		o.SelfManagedSecret = DefaultSelfManagedSecret
	}
	if o.SelfManagedWebhookConfig == "" {
		o.SelfManagedWebhookConfig = DefaultSelfManagedWebhookConfig
	}
	if len(o.SelfManagedHosts) == 0 {
		o.SelfManagedHosts = defaultSelfManagedHosts()
	}
	if o.ClusterDNSRefresh == 0 {
		o.ClusterDNSRefresh = daemon.DefaultClusterDNSRefresh
	}
	if o.Reports == "" {
		o.Reports = ReportsAuto
	}
	if o.LeaderElectionNamespace == "" {
		o.LeaderElectionNamespace = daemon.DefaultLeaderElectionNamespace
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
	if o.Reports != "" && o.Reports != ReportsAuto && o.Reports != ReportsOff {
		errs = append(errs, fmt.Errorf("--reports must be auto or off, got %q", o.Reports))
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port must be 1-65535, got %d", o.Port))
	}
	return errors.Join(errs...)
}

// RESTConfig returns the client configuration the options name.
func (o *Options) RESTConfig() (*rest.Config, error) { return kubeclient.Config(o.Kubeconfig) }
