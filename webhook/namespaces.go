package webhook

import (
	"context"
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

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

// all yields every cached namespace's labels.
func (n *namespaceLabels) all() func(yield func(string, map[string]string) bool) {
	return func(yield func(string, map[string]string) bool) {
		n.m.Range(func(k, v any) bool {
			l, _ := v.(map[string]string)
			return yield(k.(string), l)
		})
	}
}
