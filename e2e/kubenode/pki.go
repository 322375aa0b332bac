package kubenode

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

// pair is a certificate and its key, PEM-encoded and written to files.
type pair struct {
	cert     *x509.Certificate
	key      crypto.Signer
	certFile string
	keyFile  string
}

// pkiDir holds the cluster's CA and every certificate it signs: the
// apiserver's serving certificate (with the kubernetes Service's ClusterIP
// and names, so pods verify it), the admin client (system:masters), and the
// service-account signing key.
type pkiDir struct {
	dir   string
	ca    *pair
	serve *pair
	admin *pair
	saKey string
}

func newPKI(dir string) (*pkiDir, error) {
	p := &pkiDir{dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if p.ca, err = p.sign("ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "dnstune-e2e-node-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil); err != nil {
		return nil, err
	}
	if p.serve, err = p.sign("apiserver", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		IPAddresses: []net.IP{net.ParseIP(NodeIP), net.ParseIP(KubernetesIP), net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, p.ca); err != nil {
		return nil, err
	}
	if p.admin, err = p.sign("admin", &x509.Certificate{
		Subject:  pkix.Name{CommonName: "dnstune-e2e-admin", Organization: []string{"system:masters"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, p.ca); err != nil {
		return nil, err
	}
	sa, err := pki.GenerateECPrivateKey(pki.ECCurve256)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(sa)
	if err != nil {
		return nil, err
	}
	p.saKey = filepath.Join(dir, "sa.key")
	return p, os.WriteFile(p.saKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func (p *pkiDir) sign(name string, tmpl *x509.Certificate, parent *pair) (*pair, error) {
	key, err := pki.GenerateECPrivateKey(pki.ECCurve256)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	certPEM, cert, err := pki.SignCertificate(tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", name, err)
	}
	keyPEM, err := pki.EncodePrivateKey(key, cmapi.PKCS8)
	if err != nil {
		return nil, err
	}
	pr := &pair{cert: cert, key: key, certFile: filepath.Join(p.dir, name+".crt"), keyFile: filepath.Join(p.dir, name+".key")}
	if err := os.WriteFile(pr.certFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	return pr, os.WriteFile(pr.keyFile, keyPEM, 0o600)
}

// kubeconfig writes an admin kubeconfig for server.
func (p *pkiDir) kubeconfig(path, server string) error {
	conf := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
`, server, p.ca.certFile, p.admin.certFile, p.admin.keyFile)
	return os.WriteFile(path, []byte(conf), 0o600)
}
