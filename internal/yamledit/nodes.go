package yamledit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// ExpandAliases returns a deep copy of n in which every alias is replaced
// by a copy of what it points at, and no node keeps an anchor.
func ExpandAliases(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return ExpandAliases(n.Alias)
	}
	c := *n
	c.Anchor = ""
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, x := range n.Content {
		c.Content[i] = ExpandAliases(x)
	}
	return &c
}

// ErrorNode finds the node a JSON decoding error is about (its field path,
// e.g. spec.containers), or returns n.
func ErrorNode(n *yaml.Node, err error) *yaml.Node {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return n
	}
	cur := n
	for _, k := range strings.Split(te.Field, ".") {
		next := Child(cur, k)
		if next == nil {
			break
		}
		cur = next
	}
	return cur
}

// DecodeInto decodes n into out through JSON (as the API machinery reads
// objects), numbers and keys normalized first.
func DecodeInto(n *yaml.Node, out any) error {
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	b, err := json.Marshal(Normalize(v))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// Normalize deep-copies a decoded YAML value into JSON's types (string
// keys, float64 numbers), so documents compare by meaning and shared
// (aliased) values become separate copies.
func Normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = Normalize(x)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[fmt.Sprint(k)] = Normalize(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = Normalize(x)
		}
		return out
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	}
	return v
}

// ToNode renders v (through JSON) as a block-style node tree, quoting
// only the scalars YAML needs quoted.
func ToNode(v any) (*yaml.Node, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, err
	}
	n.Content[0].Style = 0 // block style, like the rest of a manifest
	for _, c := range n.Content[0].Content {
		clearFlow(c)
	}
	return n.Content[0], nil
}

func clearFlow(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Style&yaml.DoubleQuotedStyle != 0 && plainSafe(n.Value) {
		n.Style = 0 // quote only when YAML needs it
	}
	for _, c := range n.Content {
		clearFlow(c)
	}
}

// ChildKV returns the key and value nodes of key in mapping m (nil, nil if absent).
func ChildKV(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// KeyOf is the key node of key in mapping m, or nil.
func KeyOf(m *yaml.Node, key string) *yaml.Node {
	for i := 0; m != nil && m.Kind == yaml.MappingNode && i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

// Child is the value of key in mapping m (through an alias), or nil.
func Child(m *yaml.Node, key string) *yaml.Node {
	if m != nil && m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// Scalar is the string value of key in mapping m, or "" when it is not a
// scalar.
func Scalar(m *yaml.Node, key string) string {
	n := Child(m, key)
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

// ScalarNode is a string scalar node.
func ScalarNode(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

// Set replaces the value of key in mapping m, or appends key: v.
func Set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, ScalarNode(key), v)
}

// Ensure returns the mapping under key, creating it (or replacing a null).
func Ensure(m *yaml.Node, key string) *yaml.Node {
	if c := Child(m, key); c != nil && c.Kind == yaml.MappingNode {
		return c
	}
	c := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	Set(m, key, c)
	return c
}
