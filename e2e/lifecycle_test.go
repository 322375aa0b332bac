//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The tests in this file change the shared webhook (process, policy,
// certificate) and put it back as they found it.

// 10. Webhook down: Ignore admits unmutated, Fail rejects; back up: mutation resumes.
func TestWebhookDown(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "down", enabled())
	env.Webhook.Stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := env.Webhook.Start(); err != nil {
				t.Errorf("restart webhook: %v", err)
			}
		}
		if err := env.ApplyWebhookConfig(ctx, env.Webhook, admissionregistrationv1.Ignore); err != nil {
			t.Errorf("restore failurePolicy Ignore: %v", err)
		}
	})

	t.Run("failurePolicy Ignore admits the pod unchanged", func(t *testing.T) {
		p, _ := create(t, newPod(ns))
		assertUntouched(t, p)
	})
	t.Run("failurePolicy Fail rejects the pod with a clear message", func(t *testing.T) {
		if err := env.ApplyWebhookConfig(ctx, env.Webhook, admissionregistrationv1.Fail); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error {
			err := env.Client.Create(ctx, newPod(ns))
			if err == nil {
				return fmt.Errorf("pod admitted with the webhook down and failurePolicy Fail")
			}
			if msg := err.Error(); !strings.Contains(msg, `failed calling webhook "pods.dnstune.io"`) {
				return fmt.Errorf("rejection does not name the webhook: %s", msg)
			}
			return nil
		})
	})
	t.Run("started again, mutation resumes", func(t *testing.T) {
		if err := env.Webhook.Start(); err != nil {
			t.Fatal(err)
		}
		restarted = true
		eventually(t, 30*time.Second, func() error {
			p := newPod(ns)
			if err := env.Client.Create(ctx, p); err != nil {
				return err
			}
			if options(p) != resilientOptions {
				return fmt.Errorf("not mutated yet: %q", options(p))
			}
			return nil
		})
	})
}

// 11. Policy edited while running: picked up; a broken edit keeps the old policy.
func TestPolicyReload(t *testing.T) {
	ns := namespace(t, "reload", enabled())
	original, err := os.ReadFile(env.Webhook.PolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		tmp := env.Webhook.PolicyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, env.Webhook.PolicyFile); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		write(string(original))
		eventually(t, 30*time.Second, func() error {
			p, _ := create(t, newPod(ns))
			if options(p) != resilientOptions {
				return fmt.Errorf("original policy not back: %q", options(p))
			}
			return nil
		})
	})
	write(editResilientOptions(t, testPolicy, map[string]any{"ndots": 3, "timeout": 2, "attempts": 3}))
	eventually(t, 30*time.Second, func() error {
		p, _ := create(t, newPod(ns))
		if got := options(p); got != "ndots:3 timeout:2 attempts:3" {
			return fmt.Errorf("edited policy not applied yet: %q", got)
		}
		return nil
	})
	write("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient:\n    options: {ndots: 99}\n")
	eventually(t, 30*time.Second, func() error {
		if v, ok := metric(t, "dnstune_policy_last_reload_successful", nil); !ok || v != 0 {
			return fmt.Errorf("broken edit not noticed yet: dnstune_policy_last_reload_successful %v (present %v)", v, ok)
		}
		return nil
	})
	if err := env.Webhook.Ready(); err != nil {
		t.Fatalf("webhook not ready after a broken edit: %v", err)
	}
	p, _ := create(t, newPod(ns))
	if got := options(p); got != "ndots:3 timeout:2 attempts:3" {
		t.Fatalf("after a broken edit, got %q; want the last good policy", got)
	}
	if v, _ := metric(t, "dnstune_policy_reloads_total", map[string]string{"result": "failure"}); v < 1 {
		t.Errorf("no failure counted")
	}
}

// 12. Serving certificate rotated on disk (new key, same CA): no restart needed.
func TestCertificateRotation(t *testing.T) {
	ns := namespace(t, "rotate", enabled())
	roots := x509.NewCertPool()
	roots.AddCert(env.CA.Cert)
	before, err := env.Webhook.ServingCert(roots)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.IssueServingCert(env.Webhook); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		after, err := env.Webhook.ServingCert(roots)
		if err != nil {
			return err
		}
		if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
			return fmt.Errorf("still serving the old certificate %s", before.SerialNumber)
		}
		return nil
	})
	if exited, _ := env.Webhook.Proc.Exited(); exited {
		t.Fatal("webhook restarted")
	}
	var p *corev1.Pod
	for range 5 {
		p, _ = create(t, newPod(ns))
		assertMutated(t, p, "resilient", resilientOptions)
	}
}

// The webhook's TLS: 1.2 at least, HTTP/1.1 only (no HTTP/2 rapid reset),
// and the request body bounded.
func TestTLSAndLimits(t *testing.T) {
	roots := x509.NewCertPool()
	roots.AddCert(env.CA.Cert)
	addr := fmt.Sprintf("127.0.0.1:%d", env.Webhook.Port)
	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}); err == nil {
		_ = c.Close()
		t.Error("TLS 1.1 handshake accepted")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1 only", p)
	}
	_ = c.Close()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Post(env.Webhook.URL(), "application/json", strings.NewReader(strings.Repeat(" ", 4<<20)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("4 MiB body: status %d, want 413", resp.StatusCode)
	}
}

// editResilientOptions returns policy with the resilient profile's options
// replaced.
func editResilientOptions(t *testing.T, policy string, opts map[string]any) string {
	t.Helper()
	var p map[string]any
	if err := yaml.Unmarshal([]byte(policy), &p); err != nil {
		t.Fatal(err)
	}
	p["profiles"].(map[string]any)["resilient"].(map[string]any)["options"] = opts
	out, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
