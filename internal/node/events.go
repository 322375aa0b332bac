package node

import (
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

// recorderSink posts events on this node's Node object.
type recorderSink struct {
	rec record.EventRecorder
	ref *corev1.ObjectReference
}

func (s recorderSink) Event(eventType, reason, message string) {
	s.rec.Event(s.ref, eventType, reason, message)
}

// EventsFor returns an event sink that posts Kubernetes Events on the named
// Node (with the in-cluster config, or kubeconfig when set), or nil, with
// one log line, when not in a cluster.
func EventsFor(log logr.Logger, kubeconfig, name string) EventSink {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if name == "" || err != nil {
		log.Info("not in a cluster (no cluster credentials, or no node name); Kubernetes Events are skipped, metrics and logs still report", "reason", fmt.Sprint(err))
		return nil
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error(err, "cannot create a client; Kubernetes Events are skipped")
		return nil
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "dnstune-node", Host: name})
	return recorderSink{rec: rec, ref: &corev1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name)}}
}
