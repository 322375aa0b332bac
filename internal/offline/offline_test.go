package offline

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dnstune/dnstune/internal/yamledit"
	"github.com/dnstune/dnstune/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

// TestGolden runs every testdata/<case>.yaml through Mutate and compares the
// result, structurally, with testdata/<case>.golden.yaml.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	var cases int
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			continue
		}
		cases++
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, res, golden, want := goldenCase(t, in, ".yaml")
			out := res.Data
			if g, w := docs(t, out), docs(t, want); !reflect.DeepEqual(g, w) {
				t.Fatalf("output differs from %s (run make update-golden if intended):\n%s", golden, out)
			}
			idempotent(t, out)
		})
	}
	if cases < 4 {
		t.Fatalf("found %d golden cases, want at least 4", cases)
	}
}

func docs(t *testing.T, b []byte) []any {
	t.Helper()
	var out []any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var v any
		if err := dec.Decode(&v); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("invalid YAML output: %v", err)
		}
		out = append(out, v)
	}
}

func TestUnchangedDocumentsKeptVerbatim(t *testing.T) {
	src, _ := os.ReadFile("testdata/all-kinds.yaml")
	res, err := Mutate(src, Options{Policy: policy.Default()})
	if err != nil {
		t.Fatal(err)
	}
	out := res.Data
	if !bytes.Contains(out, []byte("  key: value   # a comment\n")) {
		t.Fatalf("ConfigMap not kept byte for byte:\n%s", out)
	}
}

func TestResults(t *testing.T) {
	src, _ := os.ReadFile("testdata/namespaces.yaml")
	res, err := Mutate(src, Options{Policy: policy.Default(), Namespace: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range res.Results {
		got[r.Namespace+"/"+r.Name] = string(r.Decision.Action) + "/" + string(r.Decision.Reason)
	}
	want := map[string]string{
		"trial/a":       "audit/",
		"untouched/b":   "skip/namespace-not-opted-in",
		"payments/c":    "skip/no-cluster-dns",
		"kube-system/d": "skip/namespace-excluded",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("results = %v, want %v", got, want)
	}
}

func TestMutateErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"bad yaml", "kind: Pod\nmetadata: [\n", "in.yaml:2:11: document 1: invalid YAML"},
		{"pod with a bad spec", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 3}\n", "in.yaml:4:20: document 1: failed to read the pod of Pod x"},
		{"bad yaml in a later document names the file line", "apiVersion: v1\nkind: ConfigMap\n---\n# two\napiVersion: v1\nkind: Pod\nmetadata: {name: [x}\n", "in.yaml:7:18: document 2: invalid YAML"},
		{"bad pod in a later document", "a: 1\n---\na: 2\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: 3\n", "in.yaml:9:15: document 3:"},
		// yaml.v3 counts its own "line N" from the document's start: said as file lines.
		{"duplicate key in a later document, in file lines", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nspec:\n  dnsConfig: {}\n  dnsConfig: {}\n",
			`line 9: mapping key "dnsConfig" already defined at line 8`},
		// yaml.v3 gives no position for an undefined alias: found at the alias.
		{"undefined alias, at the alias", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: *nosuch\n",
			"in.yaml:8:9: document 2: yaml: unknown anchor 'nosuch' referenced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Mutate([]byte(tt.in), Options{Policy: policy.Default(), Filename: "in.yaml"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}

// JSON in gives JSON out, in the input's style: one compact line stays one
// line, an indented document keeps its indent; what it says is what the
// YAML path makes of the same object.
func TestJSONStaysJSON(t *testing.T) {
	compact := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"1"}},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":80}]}],"hostNetwork":false}}` + "\n"
	indented := "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"Pod\",\n    \"metadata\": {\n        \"name\": \"p\"\n    },\n    \"spec\": {\n        \"containers\": [\n            {\"name\": \"c\", \"image\": \"x\"}\n        ]\n    }\n}\n"
	for name, in := range map[string]string{"compact": compact, "indented": indented} {
		t.Run(name, func(t *testing.T) {
			res, err := Mutate([]byte(in), Options{Policy: policy.Default(), Namespace: "shop"})
			if err != nil {
				t.Fatal(err)
			}
			out := res.Data
			if !json.Valid(out) {
				t.Fatalf("not JSON:\n%s", out)
			}
			lines := bytes.Count(bytes.TrimSpace(out), []byte("\n"))
			if name == "compact" && lines != 0 {
				t.Errorf("compact input came back on %d lines:\n%s", lines+1, out)
			}
			if name == "indented" && !bytes.Contains(out, []byte("\n    \"spec\": {\n        \"dnsConfig\"")) {
				t.Errorf("indented input lost its 4-space indent:\n%s", out)
			}
			if !bytes.HasSuffix(out, []byte("}\n")) {
				t.Errorf("trailing newline lost: %q", out[len(out)-3:])
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			opts := got["spec"].(map[string]any)["dnsConfig"].(map[string]any)["options"].([]any)
			if len(opts) != 4 || opts[0].(map[string]any)["value"] != "2" || got["metadata"].(map[string]any)["annotations"] == nil {
				t.Errorf("not mutated as the resilient profile says: %s", out)
			}
		})
	}
}

// A syntax error is reported where policy check (policy.Load, one
// document) reports it, moved by where the document starts in the stream:
// two paths to one position, for every shape of mistake in the table,
// whether the broken document comes first or later, after comments, blank
// lines, a commented separator or CRLF lines.
func TestSyntaxErrorPositionsMatchPolicyCheck(t *testing.T) {
	broken := []string{
		"b: 2\nc: d: e\n",
		"b: 1\n c: 2\n",
		"b:\n\tc: 1\n",
		"b: \"a\n c: 2\n",
		"b:\n  - a\n  b: 2\n",
		"b: [\n",
		"b: {x: 1\nc: 3\n",
		"b: [1, 2]]\n",
		"\n\n# c\nb: @x\n",
		"? x\n? y\n: z\n: w\n",
		"kind: Pod\nspec:\n  containers:\n  - name: a\n    image: b\n   - name: c\n",
		"b: |\n  x\n c: 1\n",
		"b: &a 1\nc: *nosuch\n",
	}
	before := []string{"", "a: 1\n---\n", "a: 1\n---\n\n# two\n---\n", "a: 1\n--- # c\n", "# head\n\na: [1,\n  2]\n---\n"}
	for _, doc := range broken {
		_, err := policy.Load("p.yaml", []byte(doc))
		var list policy.ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("%q: policy check gave %v, want a positioned error", doc, err)
		}
		want := list[0]
		for _, pre := range before {
			for _, crlf := range []bool{false, true} {
				in := pre + doc
				if crlf {
					in = strings.ReplaceAll(in, "\n", "\r\n")
				}
				_, err := Mutate([]byte(in), Options{Policy: policy.Default(), Filename: "in.yaml"})
				var de *DocError
				if !errors.As(err, &de) {
					t.Errorf("%q after %q (crlf %v): %v, want a DocError", doc, pre, crlf, err)
					continue
				}
				line := want.Line + strings.Count(pre, "\n")
				if de.Line != line || max(de.Column, 1) != want.Column {
					t.Errorf("%q after %q (crlf %v): mutate says %d:%d (%v), policy check %d:%d moved to %d:%d", doc, pre, crlf, de.Line, de.Column, err, want.Line, want.Column, line, want.Column)
				}
			}
		}
	}
}

// TestJSONGolden: JSON in, JSON out, byte for byte as testdata/json/<case>.golden.json
// has it: line endings, escapes (\u00e9, \/, <) and inline arrays kept,
// only insertions (the input is a subsequence of the output), a stream of
// JSON objects mutated object by object, and a second pass changes nothing.
func TestJSONGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/json/*.json")
	var cases int
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.json") {
			continue
		}
		cases++
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, res, golden, want := goldenCase(t, in, ".json")
			out := res.Data
			if !bytes.Equal(out, want) {
				t.Fatalf("output differs from %s byte for byte (run make update-golden if intended):\n%s", golden, out)
			}
			if !subsequence(src, out) {
				t.Errorf("the output is not the input with insertions:\n%s", out)
			}
			for _, n := range res.Notes {
				t.Errorf("unexpected note (JSON is edited in place): %s", n)
			}
			for _, d := range yamledit.SplitStream(out) {
				dec := json.NewDecoder(bytes.NewReader(d.Body))
				for {
					var v map[string]any
					if err := dec.Decode(&v); err != nil {
						if err.Error() != "EOF" {
							t.Errorf("output document is not a stream of JSON objects: %v\n%s", err, d.Body)
						}
						break
					}
					if v["kind"] != "Namespace" && v["spec"] != nil && !strings.Contains(fmt.Sprint(v), "dnsConfig") {
						t.Errorf("an object was left unmutated: %v", v)
					}
				}
			}
			idempotent(t, out)
		})
	}
	if cases < 4 {
		t.Fatalf("found %d JSON golden cases, want at least 4", cases)
	}
}

// goldenOptions are what the golden cases are mutated with.
func goldenOptions() Options {
	return Options{Policy: policy.Default(), ClusterDNS: netip.MustParseAddr("10.96.0.10")}
}

// goldenCase mutates the case in (its golden file is in with ext replaced
// by .golden+ext), rewrites the golden file with -update, and returns the
// input, the result, the golden file's path and its content.
func goldenCase(t *testing.T, in, ext string) (src []byte, res *Output, golden string, want []byte) {
	t.Helper()
	src, err := os.ReadFile(in) // #nosec G304 -- testdata
	if err != nil {
		t.Fatal(err)
	}
	if res, err = Mutate(src, goldenOptions()); err != nil {
		t.Fatalf("Mutate: %v", err)
	}
	golden = strings.TrimSuffix(in, ext) + ".golden" + ext
	if *update {
		if err := os.WriteFile(golden, res.Data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if want, err = os.ReadFile(golden); err != nil { // #nosec G304 -- testdata
		t.Fatalf("%v (run: make update-golden)", err)
	}
	return src, res, golden, want
}

// idempotent: mutating the output again changes nothing.
func idempotent(t *testing.T, out []byte) {
	t.Helper()
	again, err := Mutate(out, goldenOptions())
	if err != nil || !bytes.Equal(again.Data, out) {
		t.Fatalf("second pass changed the output (err %v):\n%s", err, again.Data)
	}
}

// subsequence reports whether every byte of a appears in b, in order.
func subsequence(a, b []byte) bool {
	i := 0
	for j := 0; i < len(a) && j < len(b); j++ {
		if a[i] == b[j] {
			i++
		}
	}
	return i == len(a)
}

// A document that starts as a stream of JSON objects and goes on with
// something else is refused whole, at the line of what is not JSON.
func TestJSONStreamThenNotJSON(t *testing.T) {
	in := "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"x\"}]}}\n\n  foo: bar\n"
	_, err := Mutate([]byte(in), Options{Policy: policy.Default(), Filename: "in.json"})
	if err == nil || !strings.Contains(err.Error(), "in.json:3:3: document 1: after 1 JSON object(s), the text here is not a JSON object") {
		t.Fatalf("err = %v, want the whole input refused at 3:3", err)
	}
}
