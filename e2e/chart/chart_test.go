//go:build chart

// Package chart_test tests the Helm chart (manifests/dnstune): helm lint,
// golden renders for several values sets, the values schema, the policy in
// the values (dnstune policy check), the alert rules (promtool check and
// unit tests) and the dashboard's queries. helm and promtool come from
// $HELM and $PROMTOOL, or bin/tools (make chart-tools); a missing tool fails
// the test, saying how to get it.
package chart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/cmd/dnstune/app"
	"github.com/dnstune/dnstune/e2e/chart"
	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/policy"
)

var update = flag.Bool("update", false, "rewrite the golden renders")

const chartDir = "dnstune" // the chart directory (TestMain runs the tests in manifests/)

// TestMain runs the tests in manifests/, where the chart and the rendered
// install files are.
func TestMain(m *testing.M) {
	if err := os.Chdir(filepath.Join(framework.RepoRoot(), "manifests")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func tool(t *testing.T, env, name string) string {
	t.Helper()
	p, err := framework.Tool(env, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, "HELM", "helm"), args...) // #nosec G204 -- test
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func render(t *testing.T, valuesFile string, extra ...string) string {
	t.Helper()
	args := append([]string{"template", "dnstune", chartDir, "--namespace", "dnstune-system", "--kube-version", "v1.37.1", "-f", valuesFile}, extra...)
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func valuesSets(t *testing.T) []string {
	sets, _ := filepath.Glob(filepath.Join(chartDir, "tests", "values", "*.yaml"))
	if len(sets) < 5 {
		t.Fatalf("found %d values sets", len(sets))
	}
	return sets
}

func TestHelmLint(t *testing.T) {
	for _, v := range valuesSets(t) {
		if out, err := helm(t, "lint", chartDir, "--strict", "--kube-version", "v1.37.1", "-f", v); err != nil {
			t.Errorf("helm lint -f %s: %v\n%s", v, err, out)
		}
	}
}

// Golden renders: one per values set (go test ./manifests -update rewrites them).
func TestGoldenRenders(t *testing.T) {
	for _, v := range valuesSets(t) {
		name := strings.TrimSuffix(filepath.Base(v), ".yaml")
		t.Run(name, func(t *testing.T) {
			got := render(t, v)
			golden := filepath.Join(chartDir, "tests", "golden", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./manifests -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("render of %s differs from %s (go test ./manifests -update if intended)", v, golden)
			}
			if _, err := framework.Objects([]byte(got)); err != nil {
				t.Errorf("the render is not valid YAML: %v", err)
			}
		})
	}
}

// A wrong value is refused by values.schema.json with a message naming it.
func TestValuesSchemaRejects(t *testing.T) {
	for _, tt := range []struct{ set, want string }{
		{"webhook.replica=3", "at '/webhook': additional properties 'replica' not allowed"},
		{"backend=webhok", "at '/backend': value must be one of 'webhook', 'admission-policy'"},
		{"certificates.mode=vault", "at '/certificates/mode': value must be one of 'self-managed', 'cert-manager'"},
		{"webhook.failurePolicy=Retry", "at '/webhook/failurePolicy'"},
		{"webhook.timeoutSeconds=31", "at '/webhook/timeoutSeconds': maximum: got 31, want 30"},
		{"node.gcThresh={1024,2048}", "at '/node/gcThresh': minItems: got 2, want 3"},
		{"node.autoRaise.maxGcThresh3=3000000000", "at '/node/autoRaise/maxGcThresh3': maximum"},
		{"policy.profiles.resilient.options.ndots=20", "at '/policy/profiles/resilient/options/ndots': maximum: got 20, want 15"},
		{"policy.profiles.resilient.musl=sometimes", "at '/policy/profiles/resilient/musl': value must be one of 'keepNdots', 'skip', 'apply'"},
		{"policy.enforcment=audit", "at '/policy': additional properties 'enforcment' not allowed"},
		{"image.pullPolicy=Sometimes", "at '/image/pullPolicy'"},
	} {
		out, err := helm(t, "template", "x", chartDir, "--kube-version", "v1.37.1", "--set", tt.set)
		if err == nil {
			t.Errorf("--set %s: rendered, want the schema to refuse it", tt.set)
			continue
		}
		if !strings.Contains(out, tt.want) {
			t.Errorf("--set %s: error\n%s\nwant it to contain %q", tt.set, out, tt.want)
		}
	}
}

// excludeNamespaces has one rule, wherever it is checked: every entry
// `policy check` refuses (the policy tests' cases and more), the values
// schema refuses, and every entry it accepts, the schema accepts. helm's
// message names the entry and the rule; the schema's description says
// what policy check says.
func TestExcludeNamespacesSchemaAgreesWithCheck(t *testing.T) {
	for _, ns := range []string{
		"kube-*", "team-?", "prod[0-9]", "team/x", strings.Repeat("n", 64), "Kube-System", "", "a_b", "-a", "a-", "a.b",
		"kube-system", "a", "team-1", "0", strings.Repeat("n", 63),
	} {
		p := v1alpha1.Default()
		p.ExcludeNamespaces = []string{ns}
		checkErr := v1alpha1.Validate(p).ToAggregate()
		list, _ := json.Marshal([]string{ns})
		out, helmErr := helm(t, "template", "x", chartDir, "--kube-version", "v1.37.1", "--set-json", "policy.excludeNamespaces="+string(list))
		switch {
		case checkErr != nil && helmErr == nil:
			t.Errorf("excludeNamespaces [%q]: policy check refuses it (%v), the chart renders it", ns, checkErr)
		case checkErr == nil && helmErr != nil:
			t.Errorf("excludeNamespaces [%q]: policy check accepts it, the chart refuses it:\n%s", ns, out)
		case helmErr != nil && !strings.Contains(out, "at '/policy/excludeNamespaces/0'"):
			t.Errorf("excludeNamespaces [%q]: the chart's refusal does not name the entry:\n%s", ns, out)
		}
	}
}

// The policy each values set renders into the ConfigMap passes
// `dnstune policy check`; one the schema cannot catch (a rule naming a
// missing profile) renders but fails it, naming the field.
func TestChartPolicyPassesCheck(t *testing.T) {
	check := func(t *testing.T, rendered string) (int, string) {
		t.Helper()
		objs, err := framework.Objects([]byte(rendered))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() != "ConfigMap" || o.GetName() != "dnstune-policy" {
				continue
			}
			data := o.Object["data"].(map[string]any)["policy.yaml"].(string)
			f := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			code := app.Execute(context.Background(), []string{"policy", "check", f}, strings.NewReader(""), &out, &out)
			return code, out.String()
		}
		t.Fatal("no dnstune-policy ConfigMap rendered")
		return 0, ""
	}
	for _, v := range valuesSets(t) {
		if code, out := check(t, render(t, v)); code != 0 {
			t.Errorf("%s: dnstune policy check exit %d:\n%s", v, code, out)
		}
	}
	bad := render(t, filepath.Join(chartDir, "tests", "values", "default.yaml"), "--set", "policy.rules[0].namespaces[0]=shop", "--set", "policy.rules[0].profile=gone")
	code, out := check(t, bad)
	if code == 0 || !strings.Contains(out, `rules[0].profile: no profile named "gone"`) {
		t.Errorf("a rule naming a missing profile: exit %d, %q", code, out)
	}
}

// The alert rules are valid (promtool check rules) and each fires, and does
// not fire, as tests/alerts_test.yaml says (promtool test rules); the
// PrometheusRule the chart renders holds exactly those rules.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "PROMTOOL", "promtool")
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(chartDir, "files", "alerts.yaml")},
		{"test", "rules", filepath.Join(chartDir, "tests", "alerts_test.yaml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput() // #nosec G204 -- test
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules := alertRules(t)
	want := []string{"DnstuneConntrackInsertFailed", "DnstuneNeighbourTableNearlyFull", "DnstuneNeighbourTableOverflow", "DnstuneNeighbourThresholdsDrifted",
		"DnstuneNoClusterDNS", "DnstuneNodeLocalCovered", "DnstuneNodeLocalDown", "DnstunePolicyReloadFailing", "DnstuneWebhookAbsent", "DnstuneWebhookErrors"}
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("alerts %v, want %v", names, want)
	}
	tests, err := os.ReadFile(filepath.Join(chartDir, "tests", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range want {
		if !strings.Contains(string(tests), "alertname: "+n+",") && !strings.Contains(string(tests), "alertname: "+n+"\n") {
			t.Errorf("alert %s has no promtool test", n)
		}
	}
	readme, _ := os.ReadFile(filepath.Join("..", "docs", "troubleshooting.md"))
	for _, n := range want {
		if !strings.Contains(string(readme), "`"+n+"`") {
			t.Errorf("docs/troubleshooting.md's table does not name alert %s", n)
		}
	}
	// The PrometheusRule's spec is files/alerts.yaml.
	out := render(t, filepath.Join(chartDir, "tests", "values", "monitoring.yaml"), "--show-only", "templates/monitoring.yaml")
	objs, err := framework.Objects([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	var fromFile map[string]any
	if err := yaml.Unmarshal(file, &fromFile); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range objs {
		if o.GetKind() == "PrometheusRule" {
			found = true
			a, _ := json.Marshal(o.Object["spec"])
			b, _ := json.Marshal(fromFile)
			if !bytes.Equal(a, b) {
				t.Errorf("the PrometheusRule's spec differs from files/alerts.yaml:\n%s\n%s", a, b)
			}
		}
	}
	if !found {
		t.Error("prometheusRule.enabled rendered no PrometheusRule")
	}
}

func alertRules(t *testing.T) []chart.Rule {
	t.Helper()
	r, err := chart.AlertRules()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func dashboardQueries(t *testing.T) []string {
	t.Helper()
	q, err := chart.DashboardQueries()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func queryMetricNames(t *testing.T) []string {
	t.Helper()
	n, err := chart.QueryMetricNames()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Every query parses, and selects only dnstune's own metrics, controller-
// runtime's webhook metrics (both checked against real scrapes in
// e2e/kubenode), Prometheus' up, or kube-state-metrics' namespace labels.
func TestQueriesParseAndNameKnownMetrics(t *testing.T) {
	for _, n := range queryMetricNames(t) {
		if !strings.HasPrefix(n, "dnstune_") && !strings.HasPrefix(n, "controller_runtime_webhook_") && !slices.Contains(chart.FromExporters, n) {
			t.Errorf("query selects %s, which no dnstune binary or the documented exporters expose", n)
		}
	}
	if len(dashboardQueries(t)) < 8 {
		t.Errorf("dashboard has %d queries", len(dashboardQueries(t)))
	}
}

// The helm that make chart-tools builds knows its own version and a
// Kubernetes version the chart accepts (helm's Makefile ldflags), so a
// plain helm template works as it does with a released helm.
func TestHelmBuiltLikeARelease(t *testing.T) {
	out, err := helm(t, "version", "--short")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "v3.") {
		t.Errorf("helm version --short: %q (%v): built without helm's version ldflags?", out, err)
	}
	if out, err := helm(t, "template", "dnstune", chartDir, "--namespace", "dnstune-system"); err != nil {
		t.Errorf("helm template without --kube-version: %v\n%s", err, out)
	}
}

// The admission-policy backend's RBAC names every object the compiler can
// yield (under rules that audit and under none), and the per-mode policies
// earlier versions compiled, which it deletes on upgrade: a name missing
// here is a 403 at the first sync.
func TestAdmissionPolicyRBACNamesEveryCompiledObject(t *testing.T) {
	install, err := os.ReadFile("install-admission-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]map[string]bool{} // resource -> names that may be patched and deleted
	for _, doc := range strings.Split(string(install), "\n---\n") {
		var role struct {
			Kind  string `json:"kind"`
			Rules []struct {
				Resources     []string `json:"resources"`
				ResourceNames []string `json:"resourceNames"`
				Verbs         []string `json:"verbs"`
			} `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil || role.Kind != "ClusterRole" {
			continue
		}
		for _, r := range role.Rules {
			if !slices.Contains(r.Verbs, "patch") || !slices.Contains(r.Verbs, "delete") {
				continue
			}
			for _, res := range r.Resources {
				if allowed[res] == nil {
					allowed[res] = map[string]bool{}
				}
				for _, n := range r.ResourceNames {
					allowed[res][n] = true
				}
			}
		}
	}
	auditRules := policy.Default()
	sel, err := labels.Parse("team=legacy")
	if err != nil {
		t.Fatal(err)
	}
	auditRules.Rules = []policy.Rule{{Selector: sel, Profile: "resilient", Enforcement: v1alpha1.Audit}}
	want := map[string][]string{
		"mutatingadmissionpolicies":       admissionpolicy.LegacyNames,
		"mutatingadmissionpolicybindings": admissionpolicy.LegacyNames,
	}
	for _, pol := range []*policy.Policy{policy.Default(), auditRules} {
		objs, err := admissionpolicy.Compile(pol.WithClusterDNS(netip.MustParseAddr("10.96.0.10")), admissionpolicy.Options{NoParams: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs.All() {
			res := strings.ToLower(o.GetObjectKind().GroupVersionKind().Kind) + "s"
			if strings.HasSuffix(res, "ys") {
				res = strings.TrimSuffix(res, "ys") + "ies"
			}
			want[res] = append(want[res], o.GetName())
		}
	}
	if len(want) != 4 {
		t.Fatalf("compiled kinds: %v", want)
	}
	for res, names := range want {
		for _, n := range names {
			if !allowed[res][n] {
				t.Errorf("install-admission-policy.yaml: no patch/delete on %s %q (allowed: %v)", res, n, allowed[res])
			}
		}
	}
}

// TestNodeAgentPrivilegeFollowsTheCover: the monitor runs as root with
// NET_ADMIN and NET_BIND_SERVICE alone when it covers for the node-local
// cache (the default), non-root with no capability when it does not, and
// the cover's RBAC (its Services' Role) comes and goes with it.
func TestNodeAgentPrivilegeFollowsTheCover(t *testing.T) {
	def := filepath.Join(chartDir, "tests", "values", "default.yaml")
	for _, tc := range []struct {
		sets    []string
		user    int64
		add     []string
		roleFor bool
	}{
		{nil, 0, []string{"NET_ADMIN", "NET_BIND_SERVICE"}, true},
		{[]string{"--set", "node.nodeLocalCover.enabled=false"}, 65532, nil, false},
		{[]string{"--set", "node.nodeLocalProbe.enabled=false"}, 65532, nil, false},
	} {
		out := render(t, def, append(tc.sets, "--show-only", "templates/node.yaml")...)
		var ds appsv1.DaemonSet
		roles := 0
		for _, doc := range strings.Split(out, "\n---\n") {
			var meta struct {
				Kind     string
				Metadata struct{ Name string }
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatal(err)
			}
			switch {
			case meta.Kind == "DaemonSet":
				if err := yaml.Unmarshal([]byte(doc), &ds); err != nil {
					t.Fatal(err)
				}
			case meta.Kind == "Role" && meta.Metadata.Name == "dnstune-node-upstream":
				roles++
			}
		}
		if len(ds.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%v: no monitor container rendered", tc.sets)
		}
		sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
		var add []string
		for _, c := range sc.Capabilities.Add {
			add = append(add, string(c))
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != tc.user || !slices.Equal(add, tc.add) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || (sc.Privileged != nil && *sc.Privileged) {
			t.Errorf("%v: monitor securityContext %+v (add %v), want user %d, drop ALL, add %v, read-only, unprivileged", tc.sets, sc, add, tc.user, tc.add)
		}
		if (roles == 1) != tc.roleFor {
			t.Errorf("%v: %d dnstune-node-upstream Roles, want one: %v", tc.sets, roles, tc.roleFor)
		}
	}
}

// TestImagesArePinnedToAppVersion: the chart's default image, and so every
// rendered manifest, runs the release the chart was cut with, never latest.
func TestImagesArePinnedToAppVersion(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &meta); err != nil || meta.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion %q: %v", meta.AppVersion, err)
	}
	want := "ghcr.io/dnstune/dnstune:" + meta.AppVersion
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			_, ref, ok := strings.Cut(line, "image: ")
			if ok && strings.HasPrefix(ref, "ghcr.io/dnstune/") && ref != want {
				t.Errorf("%s: image %s, want %s", f, ref, want)
			}
		}
	}
}

// TestWebhookSkipsTheDNSServersPolicySkips: the webhook's objectSelector
// keeps policy.DNSServerApps' pods from ever reaching dnstune, and names no
// other app, so the chart and policy.Decide cannot drift apart.
func TestWebhookSkipsTheDNSServersPolicySkips(t *testing.T) {
	out := render(t, filepath.Join(chartDir, "tests", "values", "default.yaml"), "--show-only", "templates/mutatingwebhook.yaml")
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(out), "---")), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Webhooks) == 0 {
		t.Fatalf("no webhooks rendered:\n%s", out)
	}
	for _, w := range cfg.Webhooks {
		var got []string
		for _, e := range w.ObjectSelector.MatchExpressions {
			if e.Key == "k8s-app" && e.Operator == metav1.LabelSelectorOpNotIn {
				got = e.Values
			}
		}
		if !slices.Equal(got, policy.DNSServerApps) {
			t.Errorf("webhook %s skips k8s-app %v, policy.DNSServerApps is %v", w.Name, got, policy.DNSServerApps)
		}
	}
}
