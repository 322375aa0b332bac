package kubenode

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"

	"github.com/dnstune/dnstune/certs"
)

// pair is where a certificate and its key were written.
type pair struct {
	certFile string
	keyFile  string
}

// pkiDir holds the cluster's CA and every certificate it signs: the
// apiserver's serving certificate (with the kubernetes Service's ClusterIP
// and names, so pods verify it), the admin client (system:masters),
// kube-proxy's client (system:kube-proxy, which the apiserver's bootstrap
// RBAC binds to system:node-proxier, as kubernetes-the-hard-way installs it)
// and the service-account signing key.
type pkiDir struct {
	dir   string
	ca    *pair
	serve *pair
	admin *pair
	proxy *pair
	saKey string
}

const pkiValidity = 24 * time.Hour

func newPKI(dir string) (*pkiDir, error) {
	p := &pkiDir{dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := certs.NewCA("dnstune-e2e-node-ca", pkiValidity)
	if err != nil {
		return nil, err
	}
	if p.ca, err = p.write("ca", ca); err != nil {
		return nil, err
	}
	serve, err := ca.Issue([]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		[]net.IP{net.ParseIP(NodeIP), net.ParseIP(KubernetesIP), net.ParseIP("127.0.0.1")}, pkiValidity)
	if err != nil {
		return nil, err
	}
	if p.serve, err = p.write("apiserver", serve); err != nil {
		return nil, err
	}
	if p.admin, err = p.client(ca, "admin", pkix.Name{CommonName: "dnstune-e2e-admin", Organization: []string{"system:masters"}}); err != nil {
		return nil, err
	}
	if p.proxy, err = p.client(ca, "kube-proxy", pkix.Name{CommonName: "system:kube-proxy"}); err != nil {
		return nil, err
	}
	// kube-apiserver reads service-account keys as PKCS#1/SEC1 PEM only.
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

// client signs a client certificate for subject and writes it as NAME.crt
// and NAME.key.
func (p *pkiDir) client(ca *certs.KeyPair, name string, subject pkix.Name) (*pair, error) {
	kp, err := certs.Sign(&x509.Certificate{
		Subject:  subject,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, pkiValidity)
	if err != nil {
		return nil, fmt.Errorf("sign the %s client certificate: %w", name, err)
	}
	return p.write(name, kp)
}

// write puts kp's certificate and key into NAME.crt and NAME.key.
func (p *pkiDir) write(name string, kp *certs.KeyPair) (*pair, error) {
	pr := &pair{certFile: filepath.Join(p.dir, name+".crt"), keyFile: filepath.Join(p.dir, name+".key")}
	if err := os.WriteFile(pr.certFile, kp.CertPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", pr.certFile, err)
	}
	return pr, os.WriteFile(pr.keyFile, kp.KeyPEM, 0o600)
}

// kubeconfig writes a kubeconfig for server that authenticates as user
// (p.admin, p.proxy).
func (p *pkiDir) kubeconfig(path, server string, user *pair) error {
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
`, server, p.ca.certFile, user.certFile, user.keyFile)
	return os.WriteFile(path, []byte(conf), 0o600)
}
