package report

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/dnstune/dnstune/internal/kubeclient"
	"github.com/dnstune/dnstune/policy"
)

// WriterQPS is the report writer's client-side rate limit (requests/s;
// burst twice that): its scans are a few paginated LISTs, its writes one
// server-side apply per changed report.
const WriterQPS = 50

// WriterOptions wire the PolicyReport writer into a manager.
type WriterOptions struct {
	// Policy, Generation and ClusterDNS are the running policy's, as
	// admission uses them.
	Policy     func() *policy.Policy
	Generation func() int64
	ClusterDNS func() netip.Addr
	// Interval between rescans, default DefaultReportInterval.
	Interval time.Duration
	// PolicyConfigMap is the install's policy ConfigMap: the node-local
	// coverage advice is recorded as an Event on it (component
	// dnstune-webhook, the process it runs in).
	PolicyConfigMap client.ObjectKey
	Log             logr.Logger
}

// AddToManager adds the PolicyReport writer to mgr as a runnable of its
// own, which runs on the elected leader only (mgr needs leader election),
// and registers its out-of-date gauge.
func AddToManager(mgr manager.Manager, o WriterOptions) error {
	gauge := newOutOfDateGauge()
	if err := crmetrics.Registry.Register(gauge); err != nil {
		return fmt.Errorf("failed to register the report gauge: %w", err)
	}
	// Its own client: a first write of every namespace's report should not
	// queue behind the manager client's requests.
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst = WriterQPS, 2*WriterQPS
	c, err := client.New(cfg, client.Options{Scheme: kubeclient.Scheme, Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return fmt.Errorf("failed to create the report client: %w", err)
	}
	r := &Reporter{
		Reader: c, Namespaces: mgr.GetClient(), Writer: c,
		Policy: o.Policy, Generation: o.Generation, ClusterDNS: o.ClusterDNS,
		Interval: o.Interval, OutOfDate: gauge, Log: o.Log,
		// Core v1 Events (the release namespace's Role allows those); the
		// newer recorder writes events.k8s.io.
		Events: mgr.GetEventRecorderFor("dnstune-webhook"), //nolint:staticcheck // see above
		About:  &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: o.PolicyConfigMap.Namespace, Name: o.PolicyConfigMap.Name}},
	}
	if err := mgr.Add(r); err != nil {
		return fmt.Errorf("failed to add the report writer: %w", err)
	}
	return nil
}
