package report

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// With the PolicyReport CRD installed by someone else but without dnstune's
// report RBAC, the reporter does nothing (and says so): mayReport asks the
// API for every permission a scan and its writes need.
func TestMayReport(t *testing.T) {
	for name, tc := range map[string]struct {
		deny string // resource denied, "" none
		want bool
	}{
		"every permission":       {"", true},
		"no pod list (no RBAC)":  {"pods", false},
		"no PolicyReport writes": {"policyreports", false},
		"no ReplicaSet list":     {"replicasets", false},
	} {
		t.Run(name, func(t *testing.T) {
			var asked []string
			c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					r := obj.(*authorizationv1.SelfSubjectAccessReview)
					a := r.Spec.ResourceAttributes
					asked = append(asked, a.Verb+" "+a.Resource)
					r.Status.Allowed = a.Resource != tc.deny
					return nil
				},
			}).Build()
			r := &Reporter{Writer: c}
			if got := r.mayReport(context.Background()); got != tc.want {
				t.Errorf("mayReport = %v, want %v (asked %v)", got, tc.want, asked)
			}
			if tc.want && len(asked) != 4 {
				t.Errorf("asked %v", asked)
			}
		})
	}
}
