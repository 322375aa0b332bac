package offline

import (
	"github.com/dnstune/dnstune/internal/yamledit"

	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/dnstune/dnstune/policy"
)

func mutate(t *testing.T, in string) *Output {
	t.Helper()
	out, err := Mutate([]byte(in), Options{Policy: policy.Default(), ClusterDNS: netip.MustParseAddr("10.96.0.10"), Filename: "in.yaml"})
	if err != nil {
		t.Fatalf("Mutate: %v", err)
	}
	if len(out.Notes) > 0 {
		t.Logf("notes: %v", out.Notes)
	}
	return out
}

// changedLines returns the lines of a unified diff that are added or removed.
func changedLines(diff string) (added, removed []string) {
	for _, l := range strings.Split(diff, "\n") {
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
		case strings.HasPrefix(l, "+"):
			added = append(added, l[1:])
		case strings.HasPrefix(l, "-"):
			removed = append(removed, l[1:])
		}
	}
	return added, removed
}

// podOf decodes the pod template of the document at index i of a stream.
func podOf(t *testing.T, data []byte, i int, path ...string) corev1.PodTemplateSpec {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var v map[string]any
	for range i + 1 {
		v = nil
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decode document %d: %v", i, err)
		}
	}
	var cur any = v
	for _, k := range path {
		cur = cur.(map[string]any)[k]
	}
	var pt corev1.PodTemplateSpec
	if err := yamledit.DecodeInto(mustNode(t, cur), &pt); err != nil {
		t.Fatal(err)
	}
	return pt
}

func mustNode(t *testing.T, v any) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		t.Fatal(err)
	}
	return &n
}

const commented = `# A Deployment with comments everywhere.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # the name
  namespace: shop
spec:
  # two replicas
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels:
        app: web # selector label
      annotations:
        team: "payments"   # owner
    spec:
      dnsConfig:
        # our own resolver options
        options:
          - name: ndots   # keep 3 for legacy names
            value: "3"
          - name: edns0
      containers:
        - name: app      # main container
          image: nginx:1.27

          ports: [{containerPort: 80}]  # http
`

// Comments inside a mutated document are kept, including those on the
// pod's own dnsConfig entries; the diff shows only dnstune's lines.
func TestMutateKeepsCommentsAndBytes(t *testing.T) {
	out := mutate(t, commented)
	for _, want := range []string{"# A Deployment with comments everywhere.", "name: web   # the name", "# two replicas", "app: web # selector label",
		`team: "payments"   # owner`, "# our own resolver options", "- name: ndots   # keep 3 for legacy names", "- name: app      # main container",
		"ports: [{containerPort: 80}]  # http", "image: nginx:1.27\n\n"} {
		if !bytes.Contains(out.Data, []byte(want)) {
			t.Errorf("output lost %q:\n%s", want, out.Data)
		}
	}
	diff, err := out.Diff("a", "b")
	if err != nil {
		t.Fatal(err)
	}
	added, removed := changedLines(diff)
	if len(removed) != 0 {
		t.Errorf("removed lines %q:\n%s", removed, diff)
	}
	want := []string{"        dnstune.io/profile: resilient", "          - name: timeout", `            value: "1"`, "          - name: attempts", `            value: "3"`, "          - name: single-request-reopen"}
	if strings.Join(added, "\n") != strings.Join(want, "\n") {
		t.Errorf("added lines:\n%s\nwant:\n%s", strings.Join(added, "\n"), strings.Join(want, "\n"))
	}
	pt := podOf(t, out.Data, 0, "spec", "template")
	var names []string
	for _, o := range pt.Spec.DNSConfig.Options {
		names = append(names, o.Name)
	}
	if strings.Join(names, ",") != "ndots,edns0,timeout,attempts,single-request-reopen" || *pt.Spec.DNSConfig.Options[0].Value != "3" {
		t.Errorf("options = %v", names)
	}
}

// nodelocal: nameservers and searches go before the pod's own, which keep
// their comments; dnsPolicy is replaced in place.
func TestMutateNodeLocalKeepsPodEntries(t *testing.T) {
	in := `apiVersion: v1
kind: Namespace
metadata:
  name: local
  labels: {dnstune.io/inject: enabled, dnstune.io/profile: nodelocal}
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: local
spec:
  dnsPolicy: ClusterFirst   # the default
  dnsConfig:
    nameservers:
      - 1.1.1.1   # corporate resolver
    searches:
    - corp.example  # corp names
  containers:
  - name: app
    image: nginx
`
	out := mutate(t, in)
	for _, want := range []string{"- 1.1.1.1   # corporate resolver", "- corp.example  # corp names", "dnsPolicy: None   # the default"} {
		if !bytes.Contains(out.Data, []byte(want)) {
			t.Errorf("output lost %q:\n%s", want, out.Data)
		}
	}
	pt := podOf(t, out.Data, 1)
	if pt.Spec.DNSPolicy != corev1.DNSNone ||
		strings.Join(pt.Spec.DNSConfig.Nameservers, ",") != "169.254.20.10,10.96.0.10,1.1.1.1" ||
		strings.Join(pt.Spec.DNSConfig.Searches, ",") != "local.svc.cluster.local,svc.cluster.local,cluster.local,corp.example" {
		t.Errorf("pod = %+v", pt.Spec)
	}
}

// "--- # comment" separators, CRLF line endings and every untouched
// document are kept byte for byte; a changed CRLF document stays CRLF.
func TestMutateKeepsSeparatorsAndCRLF(t *testing.T) {
	cm := "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: c\r\ndata:\r\n  k: \"v\"   # kept\r\n"
	pod := "apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: p\r\nspec:\r\n  containers:\r\n  - name: app\r\n    image: nginx\r\n"
	in := "--- # first\r\n" + cm + "--- # second: the pod\r\n" + pod + "...\r\n"
	out := mutate(t, in)
	s := string(out.Data)
	if !strings.HasPrefix(s, "--- # first\r\n"+cm+"--- # second: the pod\r\n") {
		t.Fatalf("separators or untouched document changed:\n%q", s)
	}
	if strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Errorf("LF line ending in a CRLF stream:\n%q", s)
	}
	if !strings.HasSuffix(s, "...\r\n") {
		t.Errorf("document end marker lost: %q", s)
	}
	if pt := podOf(t, out.Data, 1); pt.Annotations[policy.ProfileLabel] != "resilient" || len(pt.Spec.DNSConfig.Options) != 4 {
		t.Errorf("pod not mutated: %+v", pt)
	}
}

// kube-prometheus writes sequences without indenting them under their key;
// the diff shows only dnstune's lines, in the file's own style.
func TestMutateDiffOnlyDnstuneLines(t *testing.T) {
	var b strings.Builder
	for i := range 5 {
		fmt.Fprintf(&b, `apiVersion: apps/v1
kind: DaemonSet
metadata:
  labels:
    app.kubernetes.io/name: exporter-%d
  name: exporter-%d
  namespace: monitoring
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: exporter-%d
  template:
    metadata:
      labels:
        app.kubernetes.io/name: exporter-%d
    spec:
      containers:
      - args:
        - --web.listen-address=127.0.0.1:9100
        - --path.rootfs=/host/root
        image: quay.io/prometheus/node-exporter:v1.8.2
        name: node-exporter
        resources:
          limits:
            cpu: 250m
      - args: ["--secure-listen-address=[$(IP)]:9100"]
        image: quay.io/brancz/kube-rbac-proxy:v0.18.1
        name: kube-rbac-proxy
      hostPID: true
      nodeSelector:
        kubernetes.io/os: linux
---
`, i, i, i, i)
	}
	out := mutate(t, b.String())
	diff, err := out.Diff("a", "b")
	if err != nil {
		t.Fatal(err)
	}
	added, removed := changedLines(diff)
	if len(removed) != 0 {
		t.Errorf("removed %d lines:\n%s", len(removed), diff)
	}
	for _, l := range added {
		tl := strings.TrimSpace(l)
		if !strings.HasPrefix(tl, "dnsConfig:") && !strings.HasPrefix(tl, "options:") && !strings.HasPrefix(tl, "- name: ") &&
			!strings.HasPrefix(tl, "value: ") && !strings.HasPrefix(tl, "annotations:") && !strings.HasPrefix(tl, "dnstune.io/profile:") {
			t.Errorf("unrelated line in the diff: %q", l)
		}
	}
	if len(added) != 5*11 {
		t.Errorf("added %d lines, want 55:\n%s", len(added), diff)
	}
	if !strings.Contains(diff, "\n+        options:\n+        - name: ndots\n") {
		t.Errorf("new sequence not in the file's style (not indented under its key):\n%s", diff)
	}
}

// An anchor on annotations must not carry the profile annotation into the
// labels that alias it; merge keys keep working.
func TestMutateAliasesDoNotLeak(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata:
      annotations: &m {app: d}
      labels: *m
    spec:
      containers:
      - &c
        name: app
        image: nginx
      - <<: *c
        name: sidecar
`
	out := mutate(t, in)
	pt := podOf(t, out.Data, 0, "spec", "template")
	if _, leaked := pt.Labels[policy.ProfileLabel]; leaked || pt.Labels["app"] != "d" {
		t.Errorf("labels = %v: the annotation leaked through the alias", pt.Labels)
	}
	if pt.Annotations[policy.ProfileLabel] != "resilient" || pt.Annotations["app"] != "d" {
		t.Errorf("annotations = %v", pt.Annotations)
	}
	if len(pt.Spec.Containers) != 2 || pt.Spec.Containers[1].Image != "nginx" || pt.Spec.Containers[1].Name != "sidecar" {
		t.Errorf("merge key broken: %+v", pt.Spec.Containers)
	}
	if pt.Spec.DNSConfig == nil || len(pt.Spec.DNSConfig.Options) != 4 {
		t.Errorf("not mutated: %+v", pt.Spec.DNSConfig)
	}
}

// Only Kubernetes kinds are touched: match apiVersion and kind.
func TestMutateOnlyKubernetesKinds(t *testing.T) {
	in := "apiVersion: example.com/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: b}]\n"
	out := mutate(t, in)
	if string(out.Data) != in || len(out.Results) != 0 {
		t.Fatalf("a custom Deployment was touched:\n%s", out.Data)
	}
}

// kind: List (kubectl get -o yaml) and typed lists: items are mutated.
func TestMutateLists(t *testing.T) {
	in := `apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: a, namespace: shop}
  spec:
    template:
      metadata: {labels: {app: a}}
      spec:
        containers: [{name: a, image: nginx}]
- apiVersion: v1
  kind: Service
  metadata: {name: s}
  spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: PodList
items:
- metadata: {name: p}
  spec:
    containers: [{name: a, image: nginx}]
`
	out := mutate(t, in)
	if len(out.Results) != 2 || out.Results[0].Kind != "Deployment" || out.Results[1].Kind != "Pod" || out.Results[1].Document != 2 {
		t.Fatalf("results = %+v", out.Results)
	}
	for _, r := range out.Results {
		if r.Decision.Action != policy.Mutate {
			t.Errorf("%s not mutated: %+v", r.Kind, r.Decision)
		}
	}
	if !bytes.Contains(out.Data, []byte("dnstune.io/profile: resilient")) || bytes.Count(out.Data, []byte("single-request-reopen")) != 2 {
		t.Errorf("list items not mutated:\n%s", out.Data)
	}
	if !bytes.Contains(out.Data, []byte("  spec: {ports: [{port: 80}]}\n")) {
		t.Errorf("the Service item changed:\n%s", out.Data)
	}
}

// A kustomize patch (a Deployment without spec.template) passes through
// unchanged with a note; the rest of the stream is still mutated.
func TestMutateFragmentsPassThrough(t *testing.T) {
	patch := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n"
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: [{name: a, image: nginx}]\n"
	out := mutate(t, patch+"---\n"+pod)
	if !strings.HasPrefix(string(out.Data), patch+"---\n") {
		t.Errorf("fragment changed:\n%s", out.Data)
	}
	if len(out.Notes) != 1 || !strings.Contains(out.Notes[0], "in.yaml:1: document 1: Deployment web has no spec.template.spec") {
		t.Errorf("notes = %q", out.Notes)
	}
	if len(out.Results) != 1 || out.Results[0].Decision.Action != policy.Mutate {
		t.Errorf("results = %+v", out.Results)
	}
}

// JSON input (kubectl get -o json) is edited in place too, in flow style.
func TestMutateJSON(t *testing.T) {
	in := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"a": "b"}}, "spec": {"dnsConfig": {"options": [{"name": "ndots", "value": "3"}]}, "containers": [{"name": "a", "image": "nginx"}]}}` + "\n"
	out := mutate(t, in)
	if len(out.Notes) != 0 {
		t.Errorf("re-encoded: %v", out.Notes)
	}
	pt := podOf(t, out.Data, 0)
	if pt.Annotations[policy.ProfileLabel] != "resilient" || pt.Annotations["a"] != "b" || len(pt.Spec.DNSConfig.Options) != 4 || *pt.Spec.DNSConfig.Options[0].Value != "3" {
		t.Errorf("pod = %+v\n%s", pt, out.Data)
	}
}

// bigStream is n Deployments of ~1.2 KB each.
func bigStream(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-%d\n  namespace: shop\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata:\n      labels: {app: a}\n    spec:\n      containers:\n", i)
		for j := range 8 {
			fmt.Fprintf(&b, "      - name: c%d\n        image: example/app:%d\n        args: [--port=%d]\n", j, i, j)
		}
		b.WriteString("---\n")
	}
	return b.Bytes()
}

// -o diff costs about what -o yaml does: compare
// go test -run '^$' -bench 'Mutate' -benchmem ./offline
func BenchmarkMutateYAML(b *testing.B) {
	in := bigStream(2000) // ~2 MiB
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Mutate(in, Options{Policy: policy.Default()}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMutateDiff(b *testing.B) {
	in := bigStream(2000)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		out, err := Mutate(in, Options{Policy: policy.Default()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := out.Diff("a", "b"); err != nil {
			b.Fatal(err)
		}
	}
}

// Null values, an anchor no alias uses, and a mapping shared through an
// alias are all edited in place (no re-encoding note); the alias's other
// users are unchanged except through the merge key where they are the pod.
func TestMutateNullsAndSharedMappingsInPlace(t *testing.T) {
	for name, tc := range map[string]struct {
		in, want string
	}{
		"null dnsConfig and annotations": {
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\nspec:\n  dnsConfig: null  # none yet\n  containers: [{name: c, image: nginx}]\n",
			want: "  annotations: {dnstune.io/profile: resilient}\n",
		},
		"null metadata in a template": {
			in:   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: ~\n    spec:\n      containers: [{name: c, image: nginx}]\n",
			want: "    metadata: {annotations: {dnstune.io/profile: resilient}}\n",
		},
		"anchor nobody aliases": {
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: &a\n    team: x\nspec:\n  containers: [{name: c, image: nginx}]\n",
			want: "  annotations: &a\n    dnstune.io/profile: resilient\n    team: x\n",
		},
		"annotations shared with labels": {
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: &m {app: x}\n  labels: *m\nspec:\n  containers: [{name: c, image: nginx}]\n",
			want: "  annotations: {<<: &m {app: x}, dnstune.io/profile: resilient}\n  labels: *m\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			out := mutate(t, tc.in)
			if len(out.Notes) != 0 {
				t.Errorf("re-encoded: %v", out.Notes)
			}
			if !strings.Contains(string(out.Data), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out.Data)
			}
			pt := podOf(t, out.Data, 0)
			if strings.HasPrefix(tc.in, "apiVersion: apps/v1") {
				pt = podOf(t, out.Data, 0, "spec", "template")
			}
			if pt.Annotations[policy.ProfileLabel] != "resilient" || pt.Spec.DNSConfig == nil || len(pt.Spec.DNSConfig.Options) != 4 {
				t.Errorf("pod not mutated: %+v", pt)
			}
			if _, leaked := pt.Labels[policy.ProfileLabel]; leaked {
				t.Errorf("the annotation leaked into labels: %v", pt.Labels)
			}
		})
	}
}

// Two plain shapes once fell back to re-encoding and lost their comments:
// options: holding only a comment (a null), and a pod's own option whose
// double-quoted value wraps over two lines. Both are edited in place now.
func TestMutateNullOptionsAndWrappedValuesInPlace(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		keep []string // lines of the input that must come out as they were
		opts int
	}{
		"options: with only a comment": {
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  dnsConfig:\n    options:\n      # none yet\n  containers:\n  - name: c # the app\n    image: x\n",
			keep: []string{"      # none yet\n", "  - name: c # the app\n"},
			opts: 4,
		},
		"a wrapped double-quoted option value": {
			in:   "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  dnsConfig:\n    options:\n    - name: edns0 # keep\n      value: \"a\n        b\"\n  containers:\n  - name: c # the app\n    image: x\n",
			keep: []string{"    - name: edns0 # keep\n      value: \"a\n        b\"\n", "  - name: c # the app\n"},
			opts: 5,
		},
	} {
		t.Run(name, func(t *testing.T) {
			out := mutate(t, tc.in)
			if len(out.Notes) != 0 {
				t.Errorf("re-encoded: %v", out.Notes)
			}
			for _, k := range tc.keep {
				if !strings.Contains(string(out.Data), k) {
					t.Errorf("output lost %q:\n%s", k, out.Data)
				}
			}
			pt := podOf(t, out.Data, 0)
			if pt.Annotations[policy.ProfileLabel] != "resilient" || pt.Spec.DNSConfig == nil || len(pt.Spec.DNSConfig.Options) != tc.opts {
				t.Errorf("pod not mutated as expected: %+v\n%s", pt.Spec.DNSConfig, out.Data)
			}
		})
	}
}
