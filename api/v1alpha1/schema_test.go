package v1alpha1_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/dnstune/dnstune/policy"
)

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("policy.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("policy.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("policy.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlToJSON reads a policy file as the JSON value an editor's YAML
// language server validates.
func yamlToJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The shipped policies validate against the schema, and say so to editors.
func TestSchemaValidatesShippedPolicies(t *testing.T) {
	s := compileSchema(t)
	files, _ := filepath.Glob("../../examples/nodelocal/*.yaml")
	for _, f := range append([]string{"../../examples/policy.yaml"}, files...) { // the chart's is checked in manifests/
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(yamlToJSON(t, data)); err != nil {
			t.Errorf("%s does not validate against the schema: %v", f, err)
		}
		if !bytes.Contains(data, []byte("# yaml-language-server: $schema=")) {
			t.Errorf("%s does not point editors at the schema", f)
		}
		if _, err := policy.Load(f, data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// The schema and policy.Load agree on what is structurally wrong: each of
// these is refused by both.
func TestSchemaRefusesWhatLoadRefuses(t *testing.T) {
	s := compileSchema(t)
	const head = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\n"
	for name, doc := range map[string]string{
		"unknown field":        head + "clusterDomian: x\n",
		"unknown nested field": head + "profiles:\n  resilient: {options: {ndot: 2}}\n",
		"ndots out of range":   head + "profiles:\n  resilient: {options: {ndots: 20}}\n",
		"timeout zero":         head + "profiles:\n  resilient: {options: {timeout: 0}}\n",
		"attempts as string":   head + "profiles:\n  resilient: {options: {attempts: \"3\"}}\n",
		"bad mode":             head + "profiles:\n  resilient: {mode: fast}\n",
		"bad enforcement":      head + "enforcement: dry\n",
		"wrong apiVersion":     "apiVersion: v1\nkind: Policy\n",
		"missing kind":         "apiVersion: dnstune.io/v1alpha1\n",
		"rule without profile": head + "rules: [{namespaces: [a]}]\n",
		"rules not a list":     head + "rules: {a: b}\n",
		"domain too long":      head + "clusterDomain: " + strings.Repeat("a", 186) + "\n",
		"bad selector field":   head + "rules: [{namespaceSelector: {matchLabel: {a: b}}, profile: resilient}]\n",
	} {
		if _, err := policy.Load(name, []byte(doc)); err == nil {
			t.Errorf("%s: policy.Load accepted it", name)
		}
		if err := s.Validate(yamlToJSON(t, []byte(doc))); err == nil {
			t.Errorf("%s: the schema accepted it", name)
		}
	}
}
