// Command servers runs the two comparison webhooks of the load harness, on
// TLS with HTTP/1.1 like dnstune:
//
//	floor:     decodes the AdmissionReview and its Pod, answers "allowed"; nothing else.
//	reference: controller-runtime's admission.WithCustomDefaulter applying the
//	           same policy decision to the typed Pod, answered with a
//	           full-object diff patch: what most Go webhooks do.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/dnstune/dnstune/policy"
)

func main() {
	mode := flag.String("mode", "floor", "floor or reference")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	certDir := flag.String("cert-dir", "", "directory with tls.crt and tls.key")
	policyFile := flag.String("policy", "", "policy file (reference)")
	flag.Parse()
	if err := run(*mode, *addr, *certDir, *policyFile); err != nil {
		fmt.Fprintln(os.Stderr, "servers:", err)
		os.Exit(1)
	}
}

func run(mode, addr, certDir, policyFile string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		return err
	}
	var h http.Handler
	switch mode {
	case "floor":
		h = http.HandlerFunc(floor)
	case "reference":
		pol, err := policy.LoadFile(policyFile)
		if err != nil {
			return err
		}
		scheme := runtime.NewScheme()
		_ = corev1.AddToScheme(scheme)
		h = admission.WithCustomDefaulter(scheme, &corev1.Pod{}, &defaulter{pol: pol})
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", l.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ServeTLS(l, "", ""); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// floor reads the request the way any webhook must, and nothing more.
func floor(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, "bad pod", http.StatusBadRequest)
		return
	}
	out, _ := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: review.TypeMeta,
		Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// defaulter applies dnstune's decision to the typed Pod; controller-runtime
// diffs it against the request to make the patch. Namespace labels are
// fixed (the namespace is opted in): no lookup, which only favours it.
type defaulter struct{ pol *policy.Policy }

func (d *defaulter) Default(_ context.Context, obj runtime.Object) error {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return fmt.Errorf("expected a Pod, got %T", obj)
	}
	ns := policy.Namespace{Name: pod.Namespace, Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled}}
	dec := policy.Decide(pod, ns, d.pol, netip.Addr{})
	dec.Apply(&pod.Annotations, &pod.Spec)
	return nil
}
