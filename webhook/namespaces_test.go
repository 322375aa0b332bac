package webhook

import (
	"context"
	"testing"

	toolscache "k8s.io/client-go/tools/cache"
)

func TestNamespaceLabelsFollowInformer(t *testing.T) {
	n := &namespaceLabels{api: nil}
	h := n.handler()
	shop := namespaceMeta()
	shop.Name, shop.Labels = "shop", map[string]string{"dnstune.io/inject": "enabled"}
	h.OnAdd(shop, true)
	if l, err := n.Labels(context.Background(), "shop"); err != nil || l["dnstune.io/inject"] != "enabled" {
		t.Fatalf("after add: %v %v", l, err)
	}
	updated := namespaceMeta()
	updated.Name, updated.Labels = "shop", map[string]string{"dnstune.io/inject": "audit"}
	h.OnUpdate(shop, updated)
	if l, _ := n.Labels(context.Background(), "shop"); l["dnstune.io/inject"] != "audit" {
		t.Fatalf("after update: %v", l)
	}
	h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "shop", Obj: updated})
	if _, ok := n.m.Load("shop"); ok {
		t.Fatal("deleted namespace still cached")
	}
}
