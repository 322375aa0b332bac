package yamledit

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// ErrCannotEdit says an edit needs a shape the in-place editor does not
// handle (e.g. an alias, a multi-line scalar at an insertion point); the
// caller falls back to re-encoding the document.
var ErrCannotEdit = errors.New("cannot edit in place")

// textEdit replaces body[start:end] with text.
type textEdit struct {
	start, end int
	text       string
}

// Editor edits one document's text in place, from the positions of its
// yaml.v3 nodes, so that every byte it does not need to change stays as it
// was: comments, blank lines, quoting, indentation, line endings.
type Editor struct {
	body      []byte
	lineStart []int // byte offset of each line (0-based index = line-1)
	nl        string
	// seqIndent is how far a block sequence is indented under its key in
	// this document (0 as kube-prometheus writes it, 2 as kubectl does);
	// new sequences follow it.
	seqIndent int
	// shared are the anchors some alias of the document refers to: editing
	// such a node's text would change the alias too.
	shared map[string]bool
	edits  []textEdit
	// json, when set (SetJSON), writes every inserted key and scalar as a
	// JSON string and separates as the document does, so that a JSON
	// document stays JSON: only insertions, every other byte kept.
	json *JSONStyle
}

// SetJSON makes the editor write JSON in the document's style st (as
// DetectJSON reports it): quoted keys and strings, no space after ':' and
// ',' in a compact document, and new keys of an indented mapping on a line
// of their own.
func (s *Editor) SetJSON(st JSONStyle) { s.json = &st }

// colon and comma are the separators inserted text uses.
func (s *Editor) colon() string {
	if s.json != nil && !s.json.indented {
		return ":"
	}
	return ": "
}

func (s *Editor) comma() string {
	if s.json != nil && !s.json.indented {
		return ","
	}
	return ", "
}

// scalar writes a string as inserted text: scalarText, or a JSON string.
func (s *Editor) scalar(v string) string {
	if s.json != nil {
		return jsonString(v)
	}
	return scalarText(v)
}

// New returns an Editor of body, the text of one document, whose parsed
// form is root (yaml.v3 positions are the editor's map of the text).
func New(body []byte, root *yaml.Node) *Editor {
	s := &Editor{body: body, nl: LineEnding(body), lineStart: []int{0}}
	for i, b := range body {
		if b == '\n' {
			s.lineStart = append(s.lineStart, i+1)
		}
	}
	s.seqIndent = detectSeqIndent(root)
	s.shared = map[string]bool{}
	collectAliases(root, s.shared)
	return s
}

func collectAliases(n *yaml.Node, into map[string]bool) {
	if n == nil {
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		into[n.Alias.Anchor] = true
		return
	}
	for _, c := range n.Content {
		collectAliases(c, into)
	}
}

// IsShared reports whether n carries an anchor that an alias refers to.
func (s *Editor) IsShared(n *yaml.Node) bool { return n.Anchor != "" && s.shared[n.Anchor] }

// IsNull reports whether n is a null value (empty, null or ~).
func IsNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// SetNull gives key, whose value is null, the value (in flow style, on the
// key's line): "key:" becomes "key: {...}", "key: null" too.
func (s *Editor) SetNull(key, val *yaml.Node, value any) error {
	text, err := s.flowText(value)
	if err != nil {
		return err
	}
	if val.Value != "" { // an explicit null or ~: replace the token
		start := s.offset(val.Line, val.Column)
		end, err := s.scalarEnd(start, val)
		if err != nil {
			return err
		}
		s.add(start, end, text)
		return nil
	}
	kstart := s.offset(key.Line, key.Column)
	kend := kstart + len(key.Value)
	if key.Style != 0 || kend > len(s.body) || string(s.body[kstart:kend]) != key.Value {
		return fmt.Errorf("%w: key %s not plain", ErrCannotEdit, key.Value)
	}
	at := kend
	for at < len(s.body) && (s.body[at] == ' ' || s.body[at] == '\t') {
		at++
	}
	if at >= len(s.body) || s.body[at] != ':' {
		return fmt.Errorf("%w: no colon after %s", ErrCannotEdit, key.Value)
	}
	s.add(at+1, at+1, " "+text)
	return nil
}

// AddThroughMerge adds key: value to a mapping that an alias shares, or to
// an alias, without changing what the other aliases see: "*m" becomes
// "{<<: *m, key: value}"; "&m {...}" becomes "{<<: &m {...}, key: value}".
// A shared block mapping can't be wrapped on its line: ErrCannotEdit.
func (s *Editor) AddThroughMerge(n *yaml.Node, key string, value any) error {
	text, err := s.flowText(value)
	if err != nil {
		return err
	}
	entry := ", " + s.scalar(key) + ": " + text + "}"
	start := s.offset(n.Line, n.Column)
	switch {
	case n.Kind == yaml.AliasNode:
		end := start + 1 + len(n.Value)
		if end > len(s.body) || string(s.body[start:end]) != "*"+n.Value {
			return fmt.Errorf("%w: alias *%s not found at %d:%d", ErrCannotEdit, n.Value, n.Line, n.Column)
		}
		s.add(start, start, "{<<: ")
		s.add(end, end, entry)
		return nil
	case n.Kind == yaml.MappingNode && IsFlow(n):
		open, err := s.openBracket(n)
		if err != nil {
			return err
		}
		closeAt, err := s.closeBracket(open)
		if err != nil {
			return err
		}
		s.add(start, start, "{<<: ")
		s.add(closeAt+1, closeAt+1, entry)
		return nil
	}
	return fmt.Errorf("%w: a shared block mapping", ErrCannotEdit)
}

// detectSeqIndent finds the first block sequence that is a mapping value
// and returns its indentation relative to its key; 2 when there is none.
func detectSeqIndent(n *yaml.Node) int {
	if n == nil {
		return 2
	}
	if ind := detectSeqIndentIn(n); ind >= 0 {
		return ind
	}
	return 2
}

func detectSeqIndentIn(n *yaml.Node) int {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.SequenceNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 && v.Line > k.Line {
				return max(0, v.Column-k.Column)
			}
		}
	}
	for _, c := range n.Content {
		if ind := detectSeqIndentIn(c); ind >= 0 {
			return ind
		}
	}
	return -1
}

// offset converts a node's 1-based line and column (in characters) to a
// byte offset in the body.
func (s *Editor) offset(line, col int) int {
	if line < 1 || line > len(s.lineStart) {
		return len(s.body)
	}
	off := s.lineStart[line-1]
	for c := 1; c < col && off < len(s.body); c++ {
		_, size := utf8.DecodeRune(s.body[off:])
		off += size
	}
	return off
}

func (s *Editor) add(start, end int, text string) {
	s.edits = append(s.edits, textEdit{start: start, end: end, text: text})
}

// Apply returns the body with every edit made. Edits never overlap.
func (s *Editor) Apply() ([]byte, error) {
	edits := slices.Clone(s.edits)
	slices.SortStableFunc(edits, func(a, b textEdit) int { return a.start - b.start })
	var out []byte
	last := 0
	for _, e := range edits {
		if e.start < last {
			return nil, fmt.Errorf("%w: overlapping edits", ErrCannotEdit)
		}
		out = append(out, s.body[last:e.start]...)
		out = append(out, e.text...)
		last = e.end
	}
	return append(out, s.body[last:]...), nil
}

// IsFlow reports whether a collection is written in flow style ({...}, [...]).
func IsFlow(n *yaml.Node) bool { return n.Style&yaml.FlowStyle != 0 }

// openBracket returns the offset just after the '{' or '[' that opens a
// flow collection (its node position may be at an anchor or tag before it).
func (s *Editor) openBracket(n *yaml.Node) (int, error) {
	off := s.offset(n.Line, n.Column)
	for off < len(s.body) && s.body[off] != '{' && s.body[off] != '[' {
		if s.body[off] == '\n' || s.body[off] == '#' {
			return 0, fmt.Errorf("%w: no bracket at %d:%d", ErrCannotEdit, n.Line, n.Column)
		}
		off++
	}
	if off == len(s.body) {
		return 0, fmt.Errorf("%w: no bracket at %d:%d", ErrCannotEdit, n.Line, n.Column)
	}
	return off + 1, nil
}

// closeBracket returns the offset of the ']' or '}' closing the flow
// collection whose content starts at open, skipping quoted text and nesting.
func (s *Editor) closeBracket(open int) (int, error) {
	depth := 0
	for i := open; i < len(s.body); i++ {
		switch c := s.body[i]; c {
		case '"':
			for i++; i < len(s.body) && s.body[i] != '"'; i++ {
				if s.body[i] == '\\' {
					i++
				}
			}
		case '\'':
			for i++; i < len(s.body); i++ {
				if s.body[i] == '\'' {
					if i+1 < len(s.body) && s.body[i+1] == '\'' {
						i++
						continue
					}
					break
				}
			}
		case '#':
			if i > 0 && (s.body[i-1] == ' ' || s.body[i-1] == '\t' || s.body[i-1] == '\n') {
				for i < len(s.body) && s.body[i] != '\n' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i, nil
			}
			depth--
		}
	}
	return 0, fmt.Errorf("%w: unclosed flow collection", ErrCannotEdit)
}

// flowEmpty reports whether a flow collection has no entries.
func flowEmpty(n *yaml.Node) bool { return len(n.Content) == 0 }

// indentOf returns the indentation (in columns, 0-based) of a node's position.
func indentOf(n *yaml.Node) int { return n.Column - 1 }

// SetKey sets key to value in mapping m: an existing scalar value is
// replaced in place; a missing key is added. value is a Go value rendered
// as YAML (block style in a block mapping, flow in a flow mapping).
func (s *Editor) SetKey(m *yaml.Node, key string, value any) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			continue
		}
		v := m.Content[i+1]
		str, isStr := value.(string)
		if v.Kind != yaml.ScalarNode || !isStr || v.Tag == "!!null" {
			return fmt.Errorf("%w: %s is not a scalar to replace", ErrCannotEdit, key)
		}
		return s.ReplaceScalar(v, str)
	}
	return s.AddKey(m, key, value)
}

// ReplaceScalar replaces a one-line scalar's text with a new string value.
func (s *Editor) ReplaceScalar(v *yaml.Node, value string) error {
	if s.IsShared(v) || v.Kind != yaml.ScalarNode || v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return fmt.Errorf("%w: scalar at %d:%d", ErrCannotEdit, v.Line, v.Column)
	}
	start := s.offset(v.Line, v.Column)
	end, err := s.scalarEnd(start, v)
	if err != nil {
		return err
	}
	s.add(start, end, s.scalar(value))
	return nil
}

// scalarEnd finds the end of a one-line scalar token starting at start.
func (s *Editor) scalarEnd(start int, v *yaml.Node) (int, error) {
	b := s.body
	if start >= len(b) {
		return 0, fmt.Errorf("%w: scalar past the end", ErrCannotEdit)
	}
	switch b[start] {
	case '"':
		for i := start + 1; i < len(b) && b[i] != '\n'; i++ {
			if b[i] == '\\' {
				i++
				continue
			}
			if b[i] == '"' {
				return i + 1, nil
			}
		}
	case '\'':
		for i := start + 1; i < len(b) && b[i] != '\n'; i++ {
			if b[i] == '\'' {
				if i+1 < len(b) && b[i+1] == '\'' {
					i++
					continue
				}
				return i + 1, nil
			}
		}
	default:
		// A plain scalar: up to a comment, the end of the line, or (in flow
		// context) a flow indicator; trailing blanks are not part of it.
		end := start
		for end < len(b) && b[end] != '\n' && b[end] != '\r' {
			if (b[end] == ',' || b[end] == '}' || b[end] == ']') && v.Style == 0 && !strings.ContainsAny(v.Value, ",}]") {
				break
			}
			if b[end] == '#' && end > start && (b[end-1] == ' ' || b[end-1] == '\t') {
				break
			}
			end++
		}
		for end > start && (b[end-1] == ' ' || b[end-1] == '\t') {
			end--
		}
		if string(b[start:end]) == v.Value {
			return end, nil
		}
	}
	return 0, fmt.Errorf("%w: multi-line or unusual scalar at %d:%d", ErrCannotEdit, v.Line, v.Column)
}

// AddKey adds key: value to mapping m. In a block mapping the new entry
// goes before the first key, at its indentation; in a flow mapping right
// after the '{'.
func (s *Editor) AddKey(m *yaml.Node, key string, value any) error {
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%w: not a mapping", ErrCannotEdit)
	}
	if IsFlow(m) {
		open, err := s.openBracket(m)
		if err != nil {
			return err
		}
		text, err := s.flowText(value)
		if err != nil {
			return err
		}
		entry := s.scalar(key) + s.colon() + text
		if flowEmpty(m) {
			s.add(open, open, entry)
			return nil
		}
		first := m.Content[0]
		if at := s.offset(first.Line, first.Column); s.json != nil && s.json.indented && first.Line > m.Line && at < len(s.body) {
			// An indented JSON mapping: the new key on a line of its own,
			// before the first, at its indentation.
			s.add(at, at, entry+","+s.nl+strings.Repeat(" ", indentOf(first)))
			return nil
		}
		s.add(open, open, entry+s.comma())
		return nil
	}
	if len(m.Content) == 0 {
		return fmt.Errorf("%w: empty block mapping", ErrCannotEdit)
	}
	first := m.Content[0]
	indent := indentOf(first)
	at := s.offset(first.Line, first.Column)
	lines, err := s.blockEntry(key, value, indent)
	if err != nil {
		return err
	}
	s.add(at, at, strings.Join(lines, s.nl)+s.nl+strings.Repeat(" ", indent))
	return nil
}

// sequence checks that seq is a non-empty sequence without an anchor (an
// alias elsewhere would change with it) and says whether it is a flow
// sequence, with the offset just after its '['.
func (s *Editor) sequence(seq *yaml.Node) (flow bool, open int, err error) {
	if seq.Kind != yaml.SequenceNode || len(seq.Content) == 0 || s.IsShared(seq) {
		return false, 0, fmt.Errorf("%w: not a non-empty sequence", ErrCannotEdit)
	}
	if !IsFlow(seq) {
		return false, 0, nil
	}
	open, err = s.openBracket(seq)
	return true, open, err
}

// PrependItems inserts items before the first entry of sequence seq.
func (s *Editor) PrependItems(seq *yaml.Node, items []string) error {
	if len(items) == 0 {
		return nil
	}
	flow, open, err := s.sequence(seq)
	if err != nil {
		return err
	}
	if flow {
		parts := make([]string, len(items))
		for i, it := range items {
			parts[i] = s.scalar(it)
		}
		s.add(open, open, strings.Join(parts, s.comma())+s.comma())
		return nil
	}
	indent := indentOf(seq)
	at := s.offset(seq.Line, seq.Column)
	var b strings.Builder
	for _, it := range items {
		b.WriteString("- " + scalarText(it) + s.nl + strings.Repeat(" ", indent))
	}
	s.add(at, at, b.String())
	return nil
}

// AppendItems adds items after the last entry of sequence seq.
func (s *Editor) AppendItems(seq *yaml.Node, items []any) error {
	if len(items) == 0 {
		return nil
	}
	flow, open, err := s.sequence(seq)
	if err != nil {
		return err
	}
	if flow {
		closeAt, err := s.closeBracket(open)
		if err != nil {
			return err
		}
		var b strings.Builder
		for _, it := range items {
			t, err := s.flowText(it)
			if err != nil {
				return err
			}
			b.WriteString(s.comma() + t)
		}
		// After the last entry's text, before blanks and the ']'.
		at := closeAt
		for at > open && (s.body[at-1] == ' ' || s.body[at-1] == '\t' || s.body[at-1] == '\n' || s.body[at-1] == '\r') {
			at--
		}
		s.add(at, at, b.String())
		return nil
	}
	last := s.lastLine(seq.Content[len(seq.Content)-1])
	if last < 0 {
		return fmt.Errorf("%w: multi-line entry", ErrCannotEdit)
	}
	indent := indentOf(seq)
	at := len(s.body)
	prefix := ""
	if last < len(s.lineStart) {
		at = s.lineStart[last] // the start of the line after the last entry
	} else if len(s.body) > 0 && s.body[len(s.body)-1] != '\n' {
		prefix = s.nl
	}
	var b strings.Builder
	b.WriteString(prefix)
	for _, it := range items {
		lines, err := s.blockItem(it, indent)
		if err != nil {
			return err
		}
		b.WriteString(strings.Join(lines, s.nl) + s.nl)
	}
	s.add(at, at, b.String())
	return nil
}

// lastLine is the last line a node's text is on, as far as positions tell:
// -1 when it may run further (block scalars, multi-line plain scalars,
// aliases), which the caller does not edit past. A quoted scalar that
// wraps over lines ends on the line of its closing quote.
func (s *Editor) lastLine(n *yaml.Node) int {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			return -1
		}
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			return s.quotedLastLine(n)
		}
		start := s.offset(n.Line, n.Column)
		if strings.ContainsAny(n.Value, "\n") || start+len(n.Value) > len(s.body) || string(s.body[start:start+len(n.Value)]) != n.Value {
			return -1 // a plain scalar folded over lines (its text is not its value)
		}
		return n.Line
	case yaml.AliasNode:
		return -1
	}
	if IsFlow(n) {
		// One-line flow collections only: all content on the node's line.
		for _, c := range n.Content {
			if l := s.lastLine(c); l != n.Line {
				return -1
			}
		}
		return n.Line
	}
	line := n.Line
	for _, c := range n.Content {
		l := s.lastLine(c)
		if l < 0 {
			return -1
		}
		line = max(line, l)
	}
	return line
}

// quotedLastLine is the line of a quoted scalar's closing quote, or -1.
func (s *Editor) quotedLastLine(n *yaml.Node) int {
	start := s.offset(n.Line, n.Column)
	b := s.body
	if start < 0 || start >= len(b) || (b[start] != '"' && b[start] != '\'') {
		return -1
	}
	q := b[start]
	line := n.Line
	for i := start + 1; i < len(b); i++ {
		switch {
		case b[i] == '\n':
			line++
		case q == '"' && b[i] == '\\':
			if i+1 < len(b) && b[i+1] == '\n' {
				line++
			}
			i++
		case b[i] == q && q == '\'' && i+1 < len(b) && b[i+1] == '\'':
			i++
		case b[i] == q:
			return line
		}
	}
	return -1
}

// blockEntry renders key: value as block YAML lines, the first at the
// insertion point (no leading indentation), the rest indented from indent.
func (s *Editor) blockEntry(key string, value any, indent int) ([]string, error) {
	pad := strings.Repeat(" ", indent)
	switch v := value.(type) {
	case string:
		return []string{scalarText(key) + ": " + scalarText(v)}, nil
	case []KV:
		lines := []string{scalarText(key) + ":"}
		for _, kv := range v {
			sub, err := s.blockEntry(kv.Key, kv.Value, indent+2)
			if err != nil {
				return nil, err
			}
			lines = append(lines, pad+"  "+sub[0])
			lines = append(lines, sub[1:]...)
		}
		return lines, nil
	case []any:
		lines := []string{scalarText(key) + ":"}
		for _, it := range v {
			sub, err := s.blockItem(it, indent+s.seqIndent)
			if err != nil {
				return nil, err
			}
			lines = append(lines, sub...)
		}
		return lines, nil
	}
	return nil, fmt.Errorf("%w: cannot render %T", ErrCannotEdit, value)
}

// blockItem renders one sequence entry "- ..." at indent (fully indented).
func (s *Editor) blockItem(item any, indent int) ([]string, error) {
	pad := strings.Repeat(" ", indent)
	switch v := item.(type) {
	case string:
		return []string{pad + "- " + scalarText(v)}, nil
	case []KV:
		var lines []string
		for i, kv := range v {
			sub, err := s.blockEntry(kv.Key, kv.Value, indent+2)
			if err != nil {
				return nil, err
			}
			lead := pad + "  "
			if i == 0 {
				lead = pad + "- "
			}
			lines = append(lines, lead+sub[0])
			lines = append(lines, sub[1:]...)
		}
		return lines, nil
	}
	return nil, fmt.Errorf("%w: cannot render %T", ErrCannotEdit, item)
}

// KV is one key of a mapping to render, in order. Value is a string, a
// []KV (a mapping) or a []any (a sequence of those).
type KV struct {
	Key   string
	Value any
}

// flowText renders a value in flow style (JSON, which YAML reads as flow;
// in a JSON document, JSON in its style).
func (s *Editor) flowText(value any) (string, error) {
	switch v := value.(type) {
	case string:
		return s.scalar(v), nil
	case []KV:
		parts := make([]string, len(v))
		for i, kv := range v {
			t, err := s.flowText(kv.Value)
			if err != nil {
				return "", err
			}
			parts[i] = s.scalar(kv.Key) + s.colon() + t
		}
		return "{" + strings.Join(parts, s.comma()) + "}", nil
	case []any:
		parts := make([]string, len(v))
		for i, it := range v {
			t, err := s.flowText(it)
			if err != nil {
				return "", err
			}
			parts[i] = t
		}
		return "[" + strings.Join(parts, s.comma()) + "]", nil
	}
	return "", fmt.Errorf("%w: cannot render %T", ErrCannotEdit, value)
}

// scalarText writes a string as a YAML scalar: plain when YAML reads the
// plain text back as that same string, double-quoted otherwise ("2", "true",
// values with ": " or "#").
func scalarText(s string) string {
	if plainSafe(s) {
		return s
	}
	b, _ := json.Marshal(s)
	return string(b)
}

var (
	plainWord = regexp.MustCompile(`^[A-Za-z_/][A-Za-z0-9._/-]*$`)
	// dotted numbers with two or more dots (IPv4 addresses) are strings in YAML.
	plainDotted = regexp.MustCompile(`^[0-9]+(\.[0-9]+){2,}$`)
	// YAML 1.1 and 1.2 words that do not read back as strings.
	notStrings = map[string]bool{"true": true, "false": true, "yes": true, "no": true, "on": true, "off": true, "y": true, "n": true, "null": true}
)

// plainSafe reports whether s can be written plain and read back as the
// same string. It is conservative: anything unusual is quoted.
func plainSafe(s string) bool {
	if plainDotted.MatchString(s) {
		return true
	}
	return plainWord.MatchString(s) && !notStrings[strings.ToLower(s)]
}
