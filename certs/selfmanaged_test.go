package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

var secretKey = types.NamespacedName{Namespace: "dnstune-system", Name: "dnstune-webhook-tls"}

func newFixture(t *testing.T, hosts ...string) (*SelfManaged, client.Client, string) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secretKey.Namespace, Name: secretKey.Name}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "dnstune"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "pods.dnstune.io"}}},
	).Build()
	dir := t.TempDir()
	if len(hosts) == 0 {
		hosts = []string{"dnstune-webhook.dnstune-system.svc", "127.0.0.1"}
	}
	s, err := NewSelfManaged(SelfManagedOptions{Client: c, Secret: secretKey, WebhookConfig: "dnstune", Hosts: hosts, CertDir: dir, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, dir
}

func getSecret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(context.Background(), secretKey, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func TestSelfManagedIssuesAndInjects(t *testing.T) {
	s, c, dir := newFixture(t)
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sec := getSecret(t, c)
	for _, k := range []string{secretCACert, secretCAKey, CertFile, KeyFile, SecretCABundle} {
		if len(sec.Data[k]) == 0 {
			t.Errorf("secret lacks %s", k)
		}
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir, CertFile))
	if !bytes.Equal(onDisk, sec.Data[CertFile]) {
		t.Error("cert dir does not hold the Secret's certificate")
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	_ = c.Get(ctx, types.NamespacedName{Name: "dnstune"}, &mwc)
	if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, sec.Data[SecretCABundle]) {
		t.Error("caBundle not injected")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle)
	kp, err := parseKeyPair(sec.Data[CertFile], sec.Data[KeyFile])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"dnstune-webhook.dnstune-system.svc", "127.0.0.1"} {
		if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("serving cert does not verify for %s: %v", host, err)
		}
	}

	// A second pass changes nothing.
	rv := sec.ResourceVersion
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if getSecret(t, c).ResourceVersion != rv {
		t.Error("second sync rewrote the secret")
	}
}

func TestSelfManagedRenewal(t *testing.T) {
	s, c, _ := newFixture(t)
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	first := getSecret(t, c)

	s.now = func() time.Time { return time.Now().Add(200 * 24 * time.Hour) } // before 2/3 of a year
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(getSecret(t, c).Data[CertFile], first.Data[CertFile]) {
		t.Fatal("renewed before two thirds of the lifetime")
	}
	s.now = func() time.Time { return time.Now().Add(250 * 24 * time.Hour) } // past 2/3 of a year
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	second := getSecret(t, c)
	if bytes.Equal(second.Data[CertFile], first.Data[CertFile]) {
		t.Fatal("serving certificate not renewed past two thirds of its lifetime")
	}
	if !bytes.Equal(second.Data[secretCACert], first.Data[secretCACert]) {
		t.Fatal("CA renewed with the serving certificate")
	}

	s.now = func() time.Time { return time.Now().Add(7 * 365 * 24 * time.Hour) } // past 2/3 of the CA's 10 years
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	third := getSecret(t, c)
	if bytes.Equal(third.Data[secretCACert], first.Data[secretCACert]) {
		t.Fatal("CA not renewed")
	}
	if !bytes.Contains(third.Data[SecretCABundle], first.Data[secretCACert]) || !bytes.Contains(third.Data[SecretCABundle], third.Data[secretCACert]) {
		t.Fatal("bundle must hold the new CA and, while valid, the old one")
	}
}

func TestSelfManagedHostsChange(t *testing.T) {
	s, c, _ := newFixture(t)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := getSecret(t, c).Data[CertFile]
	s.o.Hosts = []string{"other.dnstune-system.svc"}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(getSecret(t, c).Data[CertFile], before) {
		t.Fatal("certificate not reissued for new hosts")
	}
}

func TestSelfManagedErrors(t *testing.T) {
	s, c, _ := newFixture(t)
	_ = c.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secretKey.Namespace, Name: secretKey.Name}})
	if err := s.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "apply manifests/install.yaml (the chart with certificates.mode=self-managed)") {
		t.Fatalf("missing secret: %v", err)
	}
	if _, err := NewSelfManaged(SelfManagedOptions{CertValidity: time.Hour, CAValidity: time.Minute}); err == nil {
		t.Fatal("invalid options accepted")
	}
}

// TestSelfManagedReplicasAgree: two replicas race through Sync itself. b
// reads the empty Secret, then a issues and writes first (injected just
// before b's Update), so b's Update carries a stale resourceVersion: it must
// be refused (optimistic concurrency), b must not overwrite a's
// certificates, and b's next Sync adopts them.
func TestSelfManagedReplicasAgree(t *testing.T) {
	a, c, dirA := newFixture(t)
	var conflicts, raced int
	bClient := interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && raced == 0 {
				raced++
				if err := a.Sync(ctx); err != nil { // a wins the race
					return err
				}
			}
			err := cl.Update(ctx, obj, opts...)
			if apierrors.IsConflict(err) {
				conflicts++
			}
			return err
		},
	})
	b, err := NewSelfManaged(SelfManagedOptions{Client: bClient, Secret: secretKey, WebhookConfig: "dnstune", Hosts: a.o.Hosts, CertDir: t.TempDir(), Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Sync(context.Background())
	if conflicts != 1 || !apierrors.IsConflict(err) {
		t.Fatalf("b's stale update: %d conflicts, Sync error %v; want one conflict, reported", conflicts, err)
	}
	won := getSecret(t, c).Data[CertFile]
	if ca, _ := os.ReadFile(filepath.Join(dirA, CertFile)); !bytes.Equal(ca, won) {
		t.Fatal("b overwrote a's certificate")
	}
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if conflicts != 1 {
		t.Fatalf("b's second Sync updated again (%d conflicts): it should adopt a's certificates", conflicts)
	}
	ca, _ := os.ReadFile(filepath.Join(dirA, CertFile))
	cb, _ := os.ReadFile(filepath.Join(b.o.CertDir, CertFile))
	if !bytes.Equal(ca, cb) || !bytes.Equal(cb, getSecret(t, c).Data[CertFile]) {
		t.Fatal("replicas serve different certificates")
	}
}
