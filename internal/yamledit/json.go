package yamledit

import (
	"bytes"
	"cmp"
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
	nl       string // the line ending (LineEnding)
}

// DetectJSON reports whether a document's body is JSON (its first
// character is '{' and it parses as JSON), and its style.
func DetectJSON(body []byte) (JSONStyle, bool) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return JSONStyle{}, false
	}
	st := JSONStyle{trailing: string(body[bytes.LastIndexByte(body, '}')+1:]), nl: LineEnding(body)}
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
			b.WriteString(cmp.Or(st.nl, "\n") + strings.Repeat(st.indent, d))
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
			b.WriteString(jsonString(n.Content[i].Value))
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
			b.WriteString(jsonString(n.Value))
		case "!!null":
			b.WriteString("null")
		case "!!int", "!!float", "!!bool":
			b.WriteString(n.Value)
		default:
			b.WriteString(jsonString(n.Value))
		}
	default:
		return fmt.Errorf("unexpected YAML node kind %v in a JSON document", n.Kind)
	}
	return nil
}

// jsonString writes s as a JSON string, as a JSON document has it: no
// HTML escapes (<, >, & stay as they are).
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// nbsp is U+00A0, what YAML's escape \_ reads as.
const nbsp = "\u00a0"

// ForYAML returns a JSON document's text as yaml.v3 can read it, byte for
// byte the same length, so that node positions are positions in body.
// JSON allows the escape \/ (a solidus), which yaml.v3 refuses ("found
// unknown escape character"); each becomes \_ (YAML's escape for U+00A0),
// and RestoreSolidus turns the U+00A0s of the parsed nodes back into '/'.
// A document that holds a U+00A0 of its own besides \/ can't be told apart
// that way: an error says so.
func ForYAML(body []byte) (out []byte, replaced bool, err error) {
	for i := 0; i < len(body); i++ {
		if body[i] != '"' {
			continue
		}
		for i++; i < len(body) && body[i] != '"'; i++ {
			if body[i] != '\\' || i+1 >= len(body) {
				continue
			}
			if body[i+1] == '/' {
				if out == nil {
					out = bytes.Clone(body)
				}
				out[i+1] = '_'
			}
			i++ // the escaped character
		}
	}
	if out == nil {
		return body, false, nil
	}
	if bytes.Contains(body, []byte(nbsp)) || bytes.Contains(bytes.ToLower(body), []byte(`\u00a0`)) {
		return nil, false, fmt.Errorf(`this JSON document holds both the escape \/ and a no-break space (U+00A0), which dnstune can't read together: write / for \/`)
	}
	return out, true, nil
}

// RestoreSolidus undoes ForYAML's substitution in a parsed node tree.
func RestoreSolidus(n *yaml.Node) {
	if n == nil {
		return
	}
	if strings.Contains(n.Value, nbsp) {
		n.Value = strings.ReplaceAll(n.Value, nbsp, "/")
	}
	for _, c := range n.Content {
		RestoreSolidus(c)
	}
}

// SplitJSONObjects cuts a body holding several JSON objects one after the
// other ("{...}\n{...}", as kubectl reads a stream of them) into one body
// per object, each with the blanks that follow it; written back in order
// they are body. It returns nil when body is not such a stream (one JSON
// value, or YAML), and an error, with the byte offset it is at, when body
// starts as a stream of JSON objects but goes on with something that is
// not one: kubectl refuses that too, and mutating half of it would lose
// the rest silently.
func SplitJSONObjects(body []byte) ([][]byte, int, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Valid(body) {
		return nil, 0, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var starts []int
	for {
		next := int(dec.InputOffset())
		rest := bytes.TrimLeft(body[next:], " \t\r\n")
		if len(rest) == 0 {
			break
		}
		at := len(body) - len(rest)
		var obj map[string]json.RawMessage
		if err := dec.Decode(&obj); err != nil {
			if len(starts) == 0 {
				return nil, 0, nil // not JSON at all: YAML's business
			}
			return nil, at, fmt.Errorf("after %d JSON object(s), the text here is not a JSON object (%w); kubectl would refuse it too", len(starts), err)
		}
		starts = append(starts, at)
	}
	if len(starts) < 2 {
		return nil, 0, nil
	}
	starts[0] = 0 // the leading blanks stay with the first
	parts := make([][]byte, len(starts))
	for i, s := range starts {
		end := len(body)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		parts[i] = body[s:end]
	}
	return parts, 0, nil
}
