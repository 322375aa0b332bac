package app

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var updateCheck = flag.Bool("update-check", false, "rewrite testdata/check/*.golden from the current output")

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Execute(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(good, []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\n"), 0o600)
	_ = os.WriteFile(bad, []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nnodeLocalDNS: nope\nrules:\n  - namespaces: [a]\n    profile: gone\n"), 0o600)

	if code, out, _ := run(t, "", "policy", "check", good); code != 0 || out != "ok\n" {
		t.Fatalf("good policy: exit %d, %q", code, out)
	}
	code, out, _ := run(t, "", "policy", "check", bad)
	want := bad + ":3:15: nodeLocalDNS: must be an IPv4 or IPv6 address, got \"nope\"\n" +
		bad + ":6:14: rules[0].profile: no profile named \"gone\" (profiles: nodelocal, resilient)\n"
	if code != 1 || out != want {
		t.Fatalf("bad policy: exit %d\n%s\nwant\n%s", code, out, want)
	}
	if code, _, errOut := run(t, "", "policy", "check", filepath.Join(dir, "missing.yaml")); code != 1 || !strings.Contains(errOut, "failed to read policy") {
		t.Fatalf("missing file: exit %d, %q", code, errOut)
	}
}

// --cluster-dns overrides the policy's clusterDNS (flags override files).
func TestMutateClusterDNSFlagOverridesPolicy(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	_ = os.WriteFile(pol, []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nclusterDNS: 10.0.0.10\n"), 0o600)
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: l, labels: {dnstune.io/inject: enabled, dnstune.io/profile: nodelocal}}\n---\n"
	pod := ns + "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: l}\nspec:\n  containers: [{name: a, image: nginx}]\n"
	_, out, _ := run(t, pod, "mutate", "-f", "-", "--policy", pol)
	if !strings.Contains(out, "- 10.0.0.10") {
		t.Fatalf("policy clusterDNS not used:\n%s", out)
	}
	_, out, _ = run(t, pod, "mutate", "-f", "-", "--policy", pol, "--cluster-dns", "10.96.0.99")
	if !strings.Contains(out, "- 10.96.0.99") || strings.Contains(out, "10.0.0.10") {
		t.Fatalf("--cluster-dns did not override the policy:\n%s", out)
	}
	if code, _, errOut := run(t, pod, "mutate", "-f", "-", "--cluster-dns", "::ffff:10.96.0.10"); code != 1 || !strings.Contains(errOut, "IPv4-mapped") {
		t.Fatalf("IPv4-mapped --cluster-dns: exit %d %q", code, errOut)
	}
}

func TestMutateCommand(t *testing.T) {
	code, out, errOut := run(t, "", "mutate", "-f", "../../../examples/deployment.yaml", "-o", "diff")
	if code != 0 || !strings.Contains(out, "+      dnsConfig:") || !strings.Contains(out, "+        dnstune.io/profile: resilient") {
		t.Fatalf("exit %d, stderr %q, diff:\n%s", code, errOut, out)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: alpine:3.20}]\n"
	code, out, errOut = run(t, pod, "mutate", "-f", "-", "-n", "team")
	if code != 0 || !strings.Contains(out, "single-request-reopen") {
		t.Fatalf("stdin: exit %d, %q", code, out)
	}
	if !strings.Contains(errOut, "Pod team/p: dnstune: container \"a\" uses \"alpine:3.20\"") {
		t.Fatalf("musl warning missing from stderr: %q", errOut)
	}
	if code, _, errOut := run(t, "", "mutate", "-f", "-", "-o", "json"); code != 1 || !strings.Contains(errOut, "--output must be yaml or diff") {
		t.Fatalf("bad output flag: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "", "mutate"); code != 1 || !strings.Contains(errOut, "-f is required") {
		t.Fatalf("missing -f: exit %d, %q", code, errOut)
	}
}

func TestWebhookValidatesFlags(t *testing.T) {
	code, _, errOut := run(t, "", "webhook")
	if code != 1 || !strings.Contains(errOut, "--policy is required") || !strings.Contains(errOut, "--cert-dir is required") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

func TestNodeTuneCommand(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "sys/net/ipv4/neigh/default")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, v := range []string{"128", "512", "100000"} {
		_ = os.WriteFile(filepath.Join(dir, "gc_thresh"+string(rune('1'+i))), []byte(v+"\n"), 0o644)
	}
	code, out, errOut := run(t, "", "node", "tune", "--proc-root", root)
	want := "ipv6 skipped: " + root + " has no sys/net/ipv6: address family disabled on this node\n" +
		"net.ipv4.neigh.default.gc_thresh1: 128 -> 8192\n" +
		"net.ipv4.neigh.default.gc_thresh2: 512 -> 32768\n" +
		"net.ipv4.neigh.default.gc_thresh3: 100000 (kept)\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d, stderr %q, out:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	if code, _, errOut := run(t, "", "node", "tune", "--gc-thresh", "3,2,1"); code != 1 || !strings.Contains(errOut, "gc_thresh1 <= gc_thresh2 <= gc_thresh3") {
		t.Fatalf("bad thresholds: exit %d %q", code, errOut)
	}
	if code, _, errOut := run(t, "", "node", "monitor", "--auto-raise", "--max-gc-thresh3", "100"); code != 1 || !strings.Contains(errOut, "--max-gc-thresh3") {
		t.Fatalf("bad auto-raise: exit %d %q", code, errOut)
	}
}

// dnstune policy check prints, for each fixture, exactly what it printed
// before the policy became typed API (testdata/check/*.golden were written by
// the release before it; -update-check rewrites them from this one).
func TestPolicyCheckFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/check/*.yaml")
	if len(files) < 30 {
		t.Fatalf("found %d fixtures", len(files))
	}
	for _, f := range files {
		code, out, errOut := run(t, "", "policy", "check", f)
		got := out + errOut + "exit " + strconv.Itoa(code) + "\n"
		golden := strings.TrimSuffix(f, ".yaml") + ".golden"
		if *updateCheck {
			if err := os.WriteFile(golden, []byte(got), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s:\n got %q\nwant %q", f, got, want)
		}
	}
}

func TestPolicyCompileOutput(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nclusterDNS: 10.96.0.10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, "", "policy", "compile", pol, "-o", "xml"); code != 1 || out != "" || !strings.Contains(errOut, `--output must be yaml or json, got "xml"`) {
		t.Errorf("-o xml: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut := run(t, "", "policy", "compile", pol, "-o", "json")
	if code != 0 {
		t.Fatalf("-o json: exit %d, %q", code, errOut)
	}
	var list struct {
		APIVersion, Kind string
		Items            []map[string]any
	}
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&list); err != nil {
		t.Fatalf("-o json is not one JSON document: %v\n%s", err, out)
	}
	if dec.More() {
		t.Error("-o json printed more than one JSON document")
	}
	if list.APIVersion != "v1" || list.Kind != "List" || len(list.Items) < 2 {
		t.Errorf("-o json: %s %s with %d items", list.APIVersion, list.Kind, len(list.Items))
	}
	for _, it := range list.Items {
		if it["kind"] == nil || it["apiVersion"] == nil {
			t.Errorf("item without kind/apiVersion: %v", it)
		}
	}
}

// dnstune version and --version print the stamped version; unstamped, a
// test binary says dev.
func TestVersion(t *testing.T) {
	code, out, _ := run(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "dnstune dev (go1.") {
		t.Errorf("version: exit %d, %q; want dnstune dev (go…)", code, out)
	}
	Version = "1.2.3"
	defer func() { Version = "" }()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if code, out, _ := run(t, "", args...); code != 0 || !strings.HasPrefix(out, "dnstune 1.2.3") {
			t.Errorf("%v: exit %d, %q; want the stamped version", args, code, out)
		}
	}
}

// Every command that runs something shows how, in an Example: section.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if c.Runnable() && c.HasParent() && c.Name() != "help" && c.Name() != "completion" {
			n++
			if strings.TrimSpace(c.Example) == "" || !strings.Contains(c.Example, "dnstune "+strings.TrimPrefix(c.CommandPath(), "dnstune ")) {
				t.Errorf("%s has no Example: section that runs it", c.CommandPath())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRootCommand(strings.NewReader(""), io.Discard, io.Discard))
	if n < 10 {
		t.Errorf("found %d runnable commands", n)
	}
}
