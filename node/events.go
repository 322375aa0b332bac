package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/dnstune/dnstune/internal/kubeclient"
)

// ClusterAPI is the agent's view of the cluster: Events and the
// ConditionType condition on its own Node, and the kube-dns Service's
// address for the cover.
type ClusterAPI struct {
	cs   kubernetes.Interface
	name string
	rec  record.EventRecorder
	ref  *corev1.ObjectReference
}

// Event implements EventSink: an Event on the Node.
func (a *ClusterAPI) Event(eventType, reason, message string) {
	a.rec.Event(a.ref, eventType, reason, message)
}

// SetCondition implements ConditionSink: a strategic-merge patch of the
// Node's status that sets this one condition (conditions merge by type;
// kubelet's are left alone).
func (a *ClusterAPI) SetCondition(ctx context.Context, c corev1.NodeCondition) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{c}}})
	if err != nil {
		return err
	}
	if _, err := a.cs.CoreV1().Nodes().PatchStatus(ctx, a.name, patch); err != nil {
		return fmt.Errorf("patch the status of node %s (needs nodes/status patch, for this node only): %w", a.name, err)
	}
	return nil
}

// ServiceAddress returns host:53 of the first of refs ("namespace/name")
// whose Service exists with a ClusterIP; a ref that is already host:port is
// returned as it is.
func (a *ClusterAPI) ServiceAddress(ctx context.Context, refs []string) (string, error) {
	return ServiceAddress(ctx, a.cs, refs)
}

// ServiceAddress is ClusterAPI.ServiceAddress with any client (nil: only
// literal host:port refs).
func ServiceAddress(ctx context.Context, cs kubernetes.Interface, refs []string) (string, error) {
	var tried []string
	for _, r := range refs {
		if _, _, err := net.SplitHostPort(r); err == nil {
			return r, nil
		}
		ns, name, ok := strings.Cut(r, "/")
		if !ok || cs == nil {
			tried = append(tried, r+": not namespace/name or host:port")
			continue
		}
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
			return net.JoinHostPort(ip, strconv.Itoa(53)), nil
		}
		tried = append(tried, r+" has no ClusterIP")
	}
	return "", fmt.Errorf("no kube-dns address: %s", strings.Join(tried, "; "))
}

// ForNode returns the agent's API for the named Node (credentials as
// kubeclient.Config finds them: kubeconfig when set, else $KUBECONFIG, the
// in-cluster service account, ~/.kube/config), or nil, with one log line,
// when not in a cluster.
func ForNode(log logr.Logger, kubeconfig, name string) *ClusterAPI {
	cfg, err := kubeclient.Config(kubeconfig)
	if name == "" || err != nil {
		log.Info("not in a cluster (no cluster credentials, or no node name); Kubernetes Events and the Node condition are skipped, metrics and logs still report", "reason", fmt.Sprint(err))
		return nil
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error(err, "cannot create a client; Kubernetes Events and the Node condition are skipped")
		return nil
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	rec := b.NewRecorder(kubeclient.Scheme, corev1.EventSource{Component: "dnstune-node", Host: name})
	return &ClusterAPI{cs: cs, name: name, rec: rec, ref: &corev1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name)}}
}
