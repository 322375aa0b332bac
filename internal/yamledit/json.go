package yamledit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// JSONStyle says how a JSON document is laid out, so that its mutated form
// is JSON again in the same style: compact (one line) or indented by indent.
type JSONStyle struct {
	indented bool
	indent   string
	trailing string // what follows the closing brace (a newline, usually)
}

// DetectJSON reports whether a document's body is JSON (its first
// character is '{' and it parses as JSON), and its style.
func DetectJSON(body []byte) (JSONStyle, bool) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return JSONStyle{}, false
	}
	st := JSONStyle{trailing: string(body[bytes.LastIndexByte(body, '}')+1:])}
	if i := bytes.IndexByte(trimmed, '\n'); i >= 0 {
		st.indented = true
		rest := trimmed[i+1:]
		st.indent = string(rest[:len(rest)-len(bytes.TrimLeft(rest, " \t"))])
		if st.indent == "" {
			st.indent = "  "
		}
	}
	return st, true
}

// RenderJSON writes the mutated document (YAML with flow splices, as the
// in-place editor leaves a JSON document) as JSON in the input's style,
// keys in their order.
func RenderJSON(newBody []byte, st JSONStyle) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(newBody, &doc); err != nil || len(doc.Content) == 0 {
		return nil, fmt.Errorf("re-read the mutated JSON document: %w", err)
	}
	var b strings.Builder
	if err := writeJSON(&b, doc.Content[0], st, 0); err != nil {
		return nil, err
	}
	b.WriteString(st.trailing)
	return []byte(b.String()), nil
}

func writeJSON(b *strings.Builder, n *yaml.Node, st JSONStyle, depth int) error {
	nl := func(d int) {
		if st.indented {
			b.WriteString("\n" + strings.Repeat(st.indent, d))
		}
	}
	sep := ","
	colon := ":"
	if st.indented {
		colon = ": "
	}
	switch n.Kind {
	case yaml.AliasNode:
		return writeJSON(b, n.Alias, st, depth)
	case yaml.MappingNode:
		if len(n.Content) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteString("{")
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteString(sep)
			}
			nl(depth + 1)
			k, _ := json.Marshal(n.Content[i].Value)
			b.Write(k)
			b.WriteString(colon)
			if err := writeJSON(b, n.Content[i+1], st, depth+1); err != nil {
				return err
			}
		}
		nl(depth)
		b.WriteString("}")
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteString("[")
		for i, c := range n.Content {
			if i > 0 {
				b.WriteString(sep)
			}
			nl(depth + 1)
			if err := writeJSON(b, c, st, depth+1); err != nil {
				return err
			}
		}
		nl(depth)
		b.WriteString("]")
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			v, _ := json.Marshal(n.Value)
			b.Write(v)
		case "!!null":
			b.WriteString("null")
		case "!!int", "!!float", "!!bool":
			b.WriteString(n.Value)
		default:
			v, _ := json.Marshal(n.Value)
			b.Write(v)
		}
	default:
		return fmt.Errorf("unexpected YAML node kind %v in a JSON document", n.Kind)
	}
	return nil
}
