// Package certs makes and checks the webhook's TLS material: a CA and the
// serving certificates it signs, PEM-encoded, ready for a Secret, a
// caBundle, or a --cert-dir, using cert-manager's PKI helpers. Its
// self-managed mode (SelfManaged) keeps a Secret and the webhook
// configuration's caBundle right without cert-manager.
package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

// File names in a cert dir, as controller-runtime's webhook server and
// kubernetes.io/tls Secrets use them.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	caFile   = "ca.crt"
)

// KeyPair is a PEM certificate and its PEM private key.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
	Cert    *x509.Certificate
	key     crypto.Signer
}

// NewCA returns a self-signed CA (ECDSA P-256) valid for validity from now.
func NewCA(commonName string, validity time.Duration) (*KeyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	return Sign(tmpl, nil, validity)
}

// Issue signs a serving certificate for the given DNS names and IP
// addresses (ECDSA P-256, fresh key), valid for validity from now.
func (kp *KeyPair) Issue(dnsNames []string, ips []net.IP, validity time.Duration) (*KeyPair, error) {
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return Sign(tmpl, kp, validity)
}

// Sign makes a certificate from tmpl with a fresh ECDSA P-256 key and a
// random serial, valid for validity from now (with a little clock-skew
// allowance), signed by parent, or self-signed when parent is nil. NewCA
// and Issue use it; so does the e2e node's PKI, for client certificates.
func Sign(tmpl *x509.Certificate, parent *KeyPair, validity time.Duration) (*KeyPair, error) {
	key, err := pki.GenerateECPrivateKey(pki.ECCurve256)
	if err != nil {
		return nil, fmt.Errorf("failed to generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("failed to generate serial: %w", err)
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	// Tolerate a little clock skew, without eating much of a short lifetime.
	tmpl.NotBefore = now.Add(-min(time.Minute, validity/10))
	tmpl.NotAfter = now.Add(validity)
	tmpl.PublicKey = key.Public()
	issuerCert, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		if parent.key == nil {
			return nil, errors.New("CA key pair has no private key")
		}
		issuerCert, signer = parent.Cert, parent.key
	}
	certPEM, cert, err := pki.SignCertificate(tmpl, issuerCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("failed to sign certificate: %w", err)
	}
	keyPEM, err := pki.EncodePrivateKey(key, cmapi.PKCS8)
	if err != nil {
		return nil, fmt.Errorf("failed to encode key: %w", err)
	}
	return &KeyPair{CertPEM: certPEM, KeyPEM: keyPEM, Cert: cert, key: key}, nil
}

// parseKeyPair reads a PEM certificate and key, e.g. from a Secret, and
// checks that they belong together.
func parseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	cert, err := pki.DecodeX509CertificateBytes(certPEM)
	if err != nil {
		return nil, fmt.Errorf("failed to parse certificate: %w", err)
	}
	key, err := pki.DecodePrivateKeyBytes(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("failed to parse private key: %w", err)
	}
	if ok, err := pki.PublicKeyMatchesCertificate(key.Public(), cert); err != nil || !ok {
		return nil, errors.New("private key does not match the certificate")
	}
	return &KeyPair{CertPEM: certPEM, KeyPEM: keyPEM, Cert: cert, key: key}, nil
}

// WriteDir writes tls.crt and tls.key into dir, each replaced atomically
// (written beside, then renamed) so a watcher never reads half a file.
func (kp *KeyPair) WriteDir(dir string) error {
	for _, f := range []struct {
		name string
		data []byte
	}{{KeyFile, kp.KeyPEM}, {CertFile, kp.CertPEM}} {
		name, data := f.name, f.data
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return fmt.Errorf("failed to write %s: %w", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("failed to replace %s: %w", name, err)
		}
	}
	return nil
}
