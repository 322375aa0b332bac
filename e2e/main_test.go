//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnstune/dnstune/e2e/framework"
)

// env is the control plane shared by every test of this package.
var env *framework.Env

// testPolicy is the policy the install ships (the chart's values, as
// manifests/install.yaml's ConfigMap has it), so the suite proves what users run.
var testPolicy = func() string {
	p, err := framework.ShippedPolicy()
	if err != nil {
		panic(err)
	}
	return p
}()

// testPolicyFile holds testPolicy, for the CLI's --policy.
var testPolicyFile string

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestMain(m *testing.M) {
	framework.QuietControllerRuntime()
	if _, err := framework.AssetsDir(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	start := time.Now()
	var err error
	env, err = framework.Start(ctx, framework.Options{
		Policy: testPolicy,
		Logf:   func(f string, a ...any) { fmt.Printf("e2e: "+f+"\n", a...) },
	})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: failed to start: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("e2e: control plane and webhook ready in %s (files in %s)\n", time.Since(start).Round(time.Millisecond), env.Dir)
	testPolicyFile = filepath.Join(env.Dir, "shipped-policy.yaml")
	if err := os.WriteFile(testPolicyFile, []byte(testPolicy), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: failed; log tails follow\n%s", env.Tails(60))
	}
	env.Stop()
	if code == 0 {
		_ = os.RemoveAll(env.Dir)
	}
	os.Exit(code)
}
