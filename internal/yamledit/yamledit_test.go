package yamledit

import (
	"bytes"
	"errors"
	"testing"

	"gopkg.in/yaml.v3"
)

func parse(t *testing.T, body string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(body), &n); err != nil {
		t.Fatal(err)
	}
	return n.Content[0]
}

// Edits change only what they must: comments, quoting and the other keys
// stay byte for byte.
func TestEditorKeepsWhatItDoesNotChange(t *testing.T) {
	body := "# head\na: 1 # one\nb:\n  - x   # keep\nc: {d: \"e\"}\n"
	root := parse(t, body)
	e := New([]byte(body), root)
	if err := e.SetKey(root, "a", "2"); err != nil {
		t.Fatal(err)
	}
	if err := e.AppendItems(Child(root, "b"), []any{"z"}); err != nil {
		t.Fatal(err)
	}
	if err := e.AddKey(Child(root, "c"), "f", []KV{{Key: "g", Value: "h"}}); err != nil {
		t.Fatal(err)
	}
	got, err := e.Apply()
	if err != nil {
		t.Fatal(err)
	}
	want := "# head\na: \"2\" # one\nb:\n  - x   # keep\n  - z\nc: {f: {g: h}, d: \"e\"}\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A node an alias shares is not edited in place: the caller is told.
func TestEditorRefusesSharedNodes(t *testing.T) {
	body := "a: &x [1]\nb: *x\n"
	root := parse(t, body)
	e := New([]byte(body), root)
	if !e.IsShared(Child(root, "a")) {
		t.Fatal("an anchored node an alias uses must be shared")
	}
	if err := e.AppendItems(Child(root, "a"), []any{"2"}); !errors.Is(err, ErrCannotEdit) {
		t.Errorf("appending to a shared sequence: %v, want ErrCannotEdit", err)
	}
}

// A stream's documents, written back in order, are the stream, and each
// knows the file line it starts on.
func TestSplitStreamRoundTrips(t *testing.T) {
	in := []byte("a: 1\n---\n# two\nb: 2\n--- # three\nc: 3\n")
	docs := SplitStream(in)
	var out bytes.Buffer
	for _, d := range docs {
		out.Write(d.Sep)
		out.Write(d.Body)
	}
	if !bytes.Equal(out.Bytes(), in) || len(docs) != 3 {
		t.Fatalf("%d documents, round trip %q", len(docs), out.String())
	}
	for i, line := range []int{1, 3, 6} {
		if docs[i].Line != line {
			t.Errorf("document %d starts on line %d, want %d", i+1, docs[i].Line, line)
		}
	}
	if SepContent(docs[2].Sep) || !SepContent([]byte("--- |\n")) {
		t.Error("a comment after --- is not content; a block scalar is")
	}
}

// JSON in, JSON out, in the input's style.
func TestJSONKeepsItsStyle(t *testing.T) {
	for _, in := range []string{`{"a":1,"b":{"c":"d"}}` + "\n", "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": \"d\"\n  }\n}\n"} {
		st, ok := DetectJSON([]byte(in))
		if !ok {
			t.Fatalf("not detected as JSON: %q", in)
		}
		got, err := RenderJSON([]byte(in), st)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != in {
			t.Errorf("JSON came back as %q, want %q", got, in)
		}
	}
	if _, ok := DetectJSON([]byte("a: 1\n")); ok {
		t.Error("YAML detected as JSON")
	}
}

// A directive and the document it precedes are one document, not two.
func TestSplitStreamKeepsDirectivesWithTheirDocument(t *testing.T) {
	in := []byte("# c\n%YAML 1.1\n---\na: 1\n---\nb: 2\n")
	docs := SplitStream(in)
	if len(docs) != 2 || string(docs[0].Body) != "# c\n%YAML 1.1\n---\na: 1\n" || docs[1].Line != 6 {
		t.Fatalf("%d documents: %+v", len(docs), docs)
	}
	var n yaml.Node
	if err := yaml.Unmarshal(docs[0].Body, &n); err != nil {
		t.Errorf("the directive's document does not parse: %v", err)
	}
}
