package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of the self-managed Secret.
const (
	secretCACert   = "ca.crt"
	secretCAKey    = "ca.key"
	SecretCABundle = "ca-bundle.crt" //nolint:gosec // G101: a Secret key name, not a credential. Current CA, plus the previous one while valid.
)

// SelfManagedOptions configure SelfManaged. Zero values take the defaults stated.
type SelfManagedOptions struct {
	// Client talks to the API directly (no cache: RBAC allows get and update
	// on the one Secret and the one webhook configuration, not list or watch).
	Client client.Client
	// Secret holds the CA and the serving certificate. It must exist (the
	// manifests create it empty): RBAC cannot grant "create" for one name.
	Secret types.NamespacedName
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle is kept right.
	WebhookConfig string
	// Hosts are the serving certificate's DNS names and IP addresses.
	Hosts []string
	// CertDir receives tls.crt and tls.key for the webhook server.
	CertDir string
	// CAValidity defaults to 10 years; CertValidity to 1 year. Each is
	// renewed at two thirds of its lifetime (cert-manager's default).
	CAValidity, CertValidity time.Duration
	// Interval between checks, default 1 minute (or CertValidity/20 if shorter).
	Interval time.Duration
	Log      logr.Logger
}

// SelfManaged keeps a CA and a serving certificate in a Secret, the local
// cert dir, and the webhook configuration's caBundle in agreement, and
// renews them well before expiry. Several replicas agree through the API's
// optimistic concurrency: a replica that loses an update race re-reads and
// adopts the winner's certificates.
type SelfManaged struct {
	o   SelfManagedOptions
	now func() time.Time // time.Now; tests move it
}

// Validities of self-managed certificates, each renewed at two thirds of its life.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// NewSelfManaged validates the options and returns a SelfManaged.
func NewSelfManaged(o SelfManagedOptions) (*SelfManaged, error) {
	if o.CAValidity == 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.CertValidity == 0 {
		o.CertValidity = DefaultCertValidity
	}
	if o.Interval == 0 {
		// Often enough to renew even a short-lived certificate in time.
		o.Interval = min(time.Minute, o.CertValidity/20)
	}
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("a client is required"))
	}
	if o.Secret.Name == "" || o.Secret.Namespace == "" {
		errs = append(errs, errors.New("the Secret must be given as namespace/name"))
	}
	if o.WebhookConfig == "" {
		errs = append(errs, errors.New("the webhook configuration name is required"))
	}
	if len(o.Hosts) == 0 {
		errs = append(errs, errors.New("at least one host (DNS name or IP) is required for the serving certificate"))
	}
	if o.CertValidity >= o.CAValidity {
		errs = append(errs, fmt.Errorf("the certificate validity (%s) must be shorter than the CA's (%s)", o.CertValidity, o.CAValidity))
	}
	return &SelfManaged{o: o, now: time.Now}, errors.Join(errs...)
}

// Sync makes one pass: read the Secret, renew what is due, write it back,
// write the cert dir, and fix the caBundle.
func (s *SelfManaged) Sync(ctx context.Context) error {
	var secret corev1.Secret
	if err := s.o.Client.Get(ctx, s.o.Secret, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("secret %s not found: the self-managed manifests create it empty; apply manifests/install.yaml (the chart with certificates.mode=self-managed)", s.o.Secret)
		}
		return fmt.Errorf("failed to get secret %s: %w", s.o.Secret, err)
	}
	data, changed, err := s.renew(secret.Data, s.now())
	if err != nil {
		return err
	}
	if changed {
		secret.Data = data
		if err := s.o.Client.Update(ctx, &secret); err != nil {
			if apierrors.IsConflict(err) {
				return fmt.Errorf("another replica updated secret %s first; will adopt its certificates: %w", s.o.Secret, err)
			}
			return fmt.Errorf("failed to update secret %s: %w", s.o.Secret, err)
		}
		s.o.Log.Info("issued certificates", "secret", s.o.Secret.String(), "servingNotAfter", parseMaterial(data).serving.Cert.NotAfter)
	}
	if err := writeIfChanged(s.o.CertDir, data); err != nil {
		return err
	}
	return s.syncCABundle(ctx, data[SecretCABundle])
}

type material struct {
	ca, serving *KeyPair
}

// parseMaterial reads the CA and serving key pairs from Secret data; a
// missing or invalid pair is nil (and gets reissued), never an error.
func parseMaterial(data map[string][]byte) material {
	var m material
	m.ca, _ = parseKeyPair(data[secretCACert], data[secretCAKey])
	m.serving, _ = parseKeyPair(data[CertFile], data[KeyFile])
	return m
}

// due reports whether a certificate should be renewed now: at two thirds
// of its lifetime, as cert-manager does by default.
func due(c *x509.Certificate, now time.Time) bool {
	t, err := pki.RenewalTime(c.NotBefore, c.NotAfter, nil, nil, nil)
	return err != nil || !now.Before(t.Time)
}

// renew returns the Secret data with whatever is missing, invalid or due
// replaced, and whether anything changed.
func (s *SelfManaged) renew(old map[string][]byte, now time.Time) (map[string][]byte, bool, error) {
	data := map[string][]byte{}
	for k, v := range old {
		data[k] = v
	}
	m := parseMaterial(data)
	changed := false
	var previousCA []byte
	if m.ca == nil || !m.ca.Cert.IsCA || due(m.ca.Cert, now) {
		ca, err := NewCA("dnstune-webhook-ca", s.o.CAValidity)
		if err != nil {
			return nil, false, err
		}
		if m.ca != nil && now.Before(m.ca.Cert.NotAfter) {
			previousCA = m.ca.CertPEM // still trusted until the new serving cert is everywhere
		}
		m.ca, m.serving, changed = ca, nil, true
		data[secretCACert], data[secretCAKey] = ca.CertPEM, ca.KeyPEM
	}
	if m.serving == nil || due(m.serving.Cert, now) || !s.matches(m.serving, m.ca) {
		dns, ips := splitHosts(s.o.Hosts)
		kp, err := m.ca.Issue(dns, ips, s.o.CertValidity)
		if err != nil {
			return nil, false, err
		}
		m.serving, changed = kp, true
		data[CertFile], data[KeyFile] = kp.CertPEM, kp.KeyPEM
	}
	bundle := append(slices.Clone(m.ca.CertPEM), previousCA...)
	if previousCA == nil {
		// Keep an older CA from the existing bundle while it is valid.
		if certs, err := pki.DecodeX509CertificateSetBytes(old[SecretCABundle]); err == nil {
			for _, c := range certs {
				if !c.Equal(m.ca.Cert) && now.Before(c.NotAfter) {
					if p, err := pki.EncodeX509(c); err == nil {
						bundle = append(bundle, p...)
					}
				}
			}
		}
	}
	if !bytes.Equal(bundle, old[SecretCABundle]) {
		data[SecretCABundle], changed = bundle, true
	}
	return data, changed, nil
}

// matches reports whether the serving certificate is signed by ca and
// names exactly the configured hosts.
func (s *SelfManaged) matches(serving, ca *KeyPair) bool {
	if err := serving.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		return false
	}
	dns, ips := splitHosts(s.o.Hosts)
	if !slices.Equal(serving.Cert.DNSNames, dns) || len(serving.Cert.IPAddresses) != len(ips) {
		return false
	}
	for i, ip := range ips {
		if !ip.Equal(serving.Cert.IPAddresses[i]) {
			return false
		}
	}
	return true
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// writeIfChanged writes tls.crt and tls.key into dir when they differ from
// what is there; the webhook server's certwatcher picks them up.
func writeIfChanged(dir string, data map[string][]byte) error {
	cur, _ := os.ReadFile(filepath.Join(dir, CertFile)) // #nosec G304 -- our cert dir.
	if bytes.Equal(cur, data[CertFile]) {
		return nil
	}
	kp := &KeyPair{CertPEM: data[CertFile], KeyPEM: data[KeyFile]}
	return kp.WriteDir(dir)
}

func (s *SelfManaged) syncCABundle(ctx context.Context, bundle []byte) error {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := s.o.Client.Get(ctx, types.NamespacedName{Name: s.o.WebhookConfig}, &mwc); err != nil {
		return fmt.Errorf("failed to get MutatingWebhookConfiguration %s: %w", s.o.WebhookConfig, err)
	}
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, bundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := s.o.Client.Update(ctx, &mwc); err != nil {
		return fmt.Errorf("failed to update the caBundle of MutatingWebhookConfiguration %s: %w", s.o.WebhookConfig, err)
	}
	s.o.Log.Info("caBundle updated", "webhookConfiguration", s.o.WebhookConfig)
	return nil
}

// SyncUntilReady retries Sync until it succeeds or ctx ends: the webhook
// server cannot start before its certificate exists.
func (s *SelfManaged) SyncUntilReady(ctx context.Context) error {
	delay := 500 * time.Millisecond
	for {
		err := s.Sync(ctx)
		if err == nil {
			return nil
		}
		s.o.Log.Info("certificates not ready yet; retrying", "error", err.Error(), "retryIn", delay.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("certificates never became ready: %w", err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// Start re-syncs every Interval until ctx ends (a controller-runtime Runnable).
func (s *SelfManaged) Start(ctx context.Context) error {
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Sync(ctx); err != nil {
			s.o.Log.Error(err, "certificate sync failed; will retry")
		}
	}
}

// NeedLeaderElection is false: every replica keeps its own cert dir, and
// replicas agree on the Secret through optimistic concurrency.
func (s *SelfManaged) NeedLeaderElection() bool { return false }
