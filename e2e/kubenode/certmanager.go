package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
)

// CertManagerImage holds the cert-manager stand-in (hack/tools/cert-manager:
// cert-manager's certificates and CertificateRequest controllers for the
// SelfSigned and CA issuers, its issuers controller and its CA injector, from
// the cert-manager module) at /cert-manager.
const CertManagerImage = "dnstune.test/cert-manager:1"

// certManagerObjects are the stand-in's install, as cert-manager's own is
// laid out: its namespace, a ServiceAccount, the cluster-wide rights of
// cert-manager's controller and cainjector ClusterRoles for what it runs,
// and a Deployment (non-root, read-only root filesystem, no capabilities).
func certManagerObjects() []client.Object {
	labels := map[string]string{"app.kubernetes.io/name": "cert-manager"}
	rw := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cert-manager"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "cert-manager", Namespace: "cert-manager"}},
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "dnstune-e2e-cert-manager"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"cert-manager.io"}, Resources: []string{"certificates", "certificates/status", "certificates/finalizers",
					"certificaterequests", "certificaterequests/status", "certificaterequests/finalizers", "issuers", "issuers/status",
					"clusterissuers", "clusterissuers/status"}, Verbs: rw},
				{APIGroups: []string{"cert-manager.io"}, Resources: []string{"signers"}, ResourceNames: []string{"issuers.cert-manager.io/*", "clusterissuers.cert-manager.io/*"}, Verbs: []string{"approve"}},
				{APIGroups: []string{"acme.cert-manager.io"}, Resources: []string{"orders", "challenges"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: rw},
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
				{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
				{APIGroups: []string{""}, Resources: []string{"pods", "services", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
				{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"apiregistration.k8s.io"}, Resources: []string{"apiservices"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
			},
		},
		clusterRoleBinding("dnstune-e2e-cert-manager", "cert-manager", "cert-manager"),
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "cert-manager", Namespace: "cert-manager", Labels: labels},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						ServiceAccountName:            "cert-manager",
						TerminationGracePeriodSeconds: ptr.To[int64](5),
						SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000)},
						Containers: []corev1.Container{{
							Name: "cert-manager", Image: CertManagerImage, Args: []string{"--v=2"},
							SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
								Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
						}},
					},
				},
			},
		},
	}
}

// InstallCertManager builds the stand-in's image, imports it, applies its
// install and waits until its pod runs.
func (c *Cluster) InstallCertManager(ctx context.Context) error {
	bin, err := framework.BuildTool("cert-manager")
	if err != nil {
		return err
	}
	dir := filepath.Join(c.Dir, "images", "cert-manager")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := copyFile(bin, filepath.Join(dir, "cert-manager"), 0o755); err != nil {
		return err
	}
	if err := c.importImage(CertManagerImage, dir, []string{"/cert-manager"}); err != nil {
		return err
	}
	for _, o := range certManagerObjects() {
		if err := c.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return c.WaitDeploymentReady(ctx, "cert-manager", "cert-manager", 2*time.Minute)
}

// RemoveCertManager deletes the stand-in's install and waits until its
// namespace is gone.
func (c *Cluster) RemoveCertManager(ctx context.Context) error {
	objs := certManagerObjects()
	for i := len(objs) - 1; i >= 0; i-- {
		if err := c.Client.Delete(ctx, objs[i]); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return framework.Eventually(2*time.Minute, 500*time.Millisecond, func() error {
		_, err := c.Clientset.CoreV1().Namespaces().Get(ctx, "cert-manager", metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		default:
			return errors.New("namespace cert-manager is still there")
		}
	})
}
