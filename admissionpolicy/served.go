package admissionpolicy

import (
	"errors"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

// GroupVersion and Resource the backend needs the cluster to serve:
// MutatingAdmissionPolicy v1, GA in Kubernetes 1.36.
const (
	groupVersion = "admissionregistration.k8s.io/v1"
	resource     = "mutatingadmissionpolicies"
)

// ErrNotServed is the refusal CheckServed returns below Kubernetes 1.36.
var ErrNotServed = errors.New("the admission-policy backend needs " + groupVersion + " MutatingAdmissionPolicy, which Kubernetes serves from 1.36")

// CheckServed asks the cluster's discovery whether it serves
// MutatingAdmissionPolicy v1 (every authenticated client may read
// discovery). Below 1.36 it returns ErrNotServed, saying which version the
// cluster runs and what to do: the backend can't work there, and exiting
// with that said beats retrying forever.
func CheckServed(cfg *rest.Config) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("failed to build a discovery client: %w", err)
	}
	res, err := dc.ServerResourcesForGroupVersion(groupVersion)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to read the cluster's %s resources (discovery): %w", groupVersion, err)
	}
	if res != nil && slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == resource }) {
		return nil
	}
	version := "an unknown version"
	if v, err := dc.ServerVersion(); err == nil {
		version = v.GitVersion
	}
	return fmt.Errorf("%w; this cluster runs %s: install the webhook backend instead (manifests/install.yaml, or helm with backend=webhook, the default), or upgrade the cluster to 1.36 or later", ErrNotServed, version)
}
