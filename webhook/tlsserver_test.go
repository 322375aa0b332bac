package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/dnstune/dnstune/certs"
)

// startTLSServer serves the admission handler on a loopback port with short
// bounds, and returns its address and a client that trusts it.
func startTLSServer(t *testing.T, o ServerOptions) (string, *http.Client) {
	t.Helper()
	ca, err := certs.NewCA("test-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := kp.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	o.Host, o.Port, o.CertDir, o.Log = "127.0.0.1", freePort(t), dir, logr.Discard()
	o.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	s := newServer(o)
	s.Register(Path, newTestHandler(nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	deadline := time.Now().Add(10 * time.Second)
	for s.StartedChecker()(nil) != nil {
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s.Addr().String(), client
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// closedByServer waits (up to limit) for the server to close conn, and
// fails if it is still open then. It writes nothing.
func closedByServer(t *testing.T, conn net.Conn, limit time.Duration, what string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after %s", what, limit)
	}
}

func postReview(t *testing.T, client *http.Client, addr string) error {
	t.Helper()
	resp, err := client.Post("https://"+addr+Path, "application/json", bytes.NewReader(review(t, testPod())))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

var shortBounds = ServerOptions{HeaderTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: time.Second}

// A client that opens TCP and never starts TLS is dropped after the
// handshake bound.
func TestServerBoundsSilentTCP(t *testing.T) {
	addr, _ := startTLSServer(t, shortBounds)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	closedByServer(t, conn, 5*time.Second, "TCP without a TLS handshake")
}

// tlsConn completes a handshake with the server.
func tlsConn(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) // #nosec G402 -- test client.
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// trickle writes s one byte every interval until the server closes the
// connection, and reports how many bytes got through.
func trickle(conn net.Conn, s string, interval time.Duration) int {
	for i := range len(s) {
		if _, err := conn.Write([]byte{s[i]}); err != nil {
			return i
		}
		time.Sleep(interval)
	}
	return len(s)
}

// A client that trickles its headers is dropped after the header bound.
func TestServerBoundsSlowHeaders(t *testing.T) {
	addr, _ := startTLSServer(t, shortBounds)
	conn := tlsConn(t, addr)
	headers := "POST " + Path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Padding: " + string(bytes.Repeat([]byte("a"), 200)) + "\r\n\r\n"
	sent := make(chan int, 1)
	go func() { sent <- trickle(conn, headers, 20*time.Millisecond) }() // ~5 s for all of it
	closedByServer(t, conn, 4*time.Second, "trickled headers")
	if n := <-sent; n == len(headers) {
		t.Fatal("every header byte was accepted")
	}
}

// A client that sends headers and then trickles the body is dropped after
// the read bound.
func TestServerBoundsSlowBody(t *testing.T) {
	addr, _ := startTLSServer(t, shortBounds)
	conn := tlsConn(t, addr)
	body := review(t, testPod())
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", Path, len(body)); err != nil {
		t.Fatal(err)
	}
	go trickle(conn, string(body), 20*time.Millisecond)
	// The server may answer 400 for the cut-off body; then it closes.
	closedByServer(t, conn, 5*time.Second, "trickled body")
}

// A kept-alive connection without a further request is closed after the
// idle bound.
func TestServerBoundsIdle(t *testing.T) {
	addr, _ := startTLSServer(t, shortBounds)
	conn := tlsConn(t, addr)
	body := review(t, testPod())
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", Path, len(body), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	closedByServer(t, conn, 5*time.Second, "idle kept-alive connection")
}

// Under 200 slow clients (silent TCP, trickled headers), AdmissionReviews
// still answer within kube-apiserver's 2 s timeout.
func TestServerServesUnderSlowClients(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections; skipped with -short")
	}
	// The production bounds, not the short ones: slow clients must not
	// need to time out for others to be served.
	addr, client := startTLSServer(t, ServerOptions{})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 1 { // half start TLS and a request line, then stall
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) // #nosec G402 -- test client.
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(tc, "POST "+Path+" HTTP/1.1\r\nHost: x\r\n")
			conns[len(conns)-1] = tc
		}
	}
	for i := range 20 {
		if err := postReview(t, client, addr); err != nil {
			t.Fatalf("review %d with 200 slow clients connected: %v", i, err)
		}
	}
}

// A normal review succeeds, and is counted in controller-runtime's webhook
// metrics as with its own server.
func TestServerAnswers(t *testing.T) {
	addr, client := startTLSServer(t, ServerOptions{})
	before := webhookRequests(t)
	if err := postReview(t, client, addr); err != nil {
		t.Fatal(err)
	}
	if after := webhookRequests(t); after != before+1 {
		t.Errorf("controller_runtime_webhook_requests_total went %v -> %v, want +1", before, after)
	}
}

func webhookRequests(t *testing.T) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_webhook_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}
