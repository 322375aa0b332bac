package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/dnstune/dnstune/api/v1alpha1"
	"github.com/dnstune/dnstune/internal/yamlpos"
)

// FieldError is one problem in a policy file, with its position.
type FieldError struct {
	File   string
	Line   int
	Column int
	// Field is the dotted path of the offending field, e.g. "profiles.fast.options.ndots".
	Field   string
	Message string
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Column, e.Field, e.Message)
}

// ErrorList is every problem found in a policy file, in file order. Its
// Error() has one line per problem.
type ErrorList []FieldError

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// LoadFile reads and loads the policy at path. Errors name the path.
func LoadFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator names the policy file.
	if err != nil {
		return nil, fmt.Errorf("failed to read policy: %w", err)
	}
	return Load(path, data)
}

// Load decodes, defaults, validates and compiles one policy document. file
// is used only in error messages. Unknown keys, wrong types, out-of-range
// values, bad addresses, duplicate keys and references to missing profiles
// are all reported, each as a FieldError in the returned ErrorList.
func Load(file string, data []byte) (*Policy, error) {
	api, err := decodePolicy(file, data)
	if err != nil {
		return nil, err
	}
	return Compile(api), nil
}

// decodePolicy reads one policy document into the API types, strictly, then
// defaults and validates it. Errors carry file, line, column and field: the
// decoder indexes the yaml.Node tree by field path, and each validation
// error (a field.Error) is placed at its field, or at the nearest enclosing
// one that the file has.
func decodePolicy(file string, data []byte) (*v1alpha1.Policy, error) {
	d := &decoder{file: file, vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{File: file, Line: 1, Column: 1, Message: "empty policy: expected apiVersion: " + v1alpha1.APIVersion + ", kind: " + v1alpha1.Kind}}
		}
		return nil, ErrorList{d.syntaxError(data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(&extra, "", "a policy file holds exactly one YAML document")
	} else if !errors.Is(err, io.EOF) {
		d.errs = append(d.errs, d.syntaxError(data, err))
	}
	root := resolve(&doc)
	if root == nil || (root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		d.errorf(&doc, "", "empty policy: expected apiVersion: %s, kind: %s", v1alpha1.APIVersion, v1alpha1.Kind)
		return nil, d.errs
	}
	var pol v1alpha1.Policy
	d.vals[""] = root
	d.decode(root, "", reflect.ValueOf(&pol).Elem())
	if root.Kind == yaml.MappingNode {
		v1alpha1.SetDefaults(&pol)
		for _, e := range v1alpha1.Validate(&pol) {
			if !d.failed(e.Field) {
				d.errs = append(d.errs, d.place(e))
			}
		}
	}
	if len(d.errs) > 0 {
		slices.SortStableFunc(d.errs, func(a, b FieldError) int {
			if a.Line != b.Line {
				return a.Line - b.Line
			}
			return a.Column - b.Column
		})
		return nil, d.errs
	}
	return &pol, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// decoder walks a yaml.Node tree into API types, strictly, recording each
// field path's value (and key) node.
type decoder struct {
	file       string
	errs       ErrorList
	vals, keys map[string]*yaml.Node
	bad        []string // paths with a decoding error
}

// syntaxError turns a yaml.v3 parse error into a FieldError at the line and
// column of the mistake (yamlpos.SyntaxError). Should the position not be
// found, yaml.v3's own line is used with column 1.
func (d *decoder) syntaxError(data []byte, err error) FieldError {
	if line, col, msg, ok := yamlpos.SyntaxError(data, 1); ok {
		return FieldError{File: d.file, Line: line, Column: col, Message: "invalid YAML: " + msg}
	}
	line, col := 1, 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
	} else if l, c, ok := yamlpos.UnknownAlias(data, 1, err); ok {
		line, col = l, c
	}
	return FieldError{File: d.file, Line: line, Column: col, Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

func (d *decoder) errorf(n *yaml.Node, fld, format string, args ...any) {
	d.errs = append(d.errs, FieldError{File: d.file, Line: n.Line, Column: n.Column, Field: fld, Message: fmt.Sprintf(format, args...)})
	d.bad = append(d.bad, fld)
}

// failed reports whether fld, a field it is in, or (below the top level) a
// field in it failed to decode: its validation errors would only repeat
// that, or judge a value that was never read.
func (d *decoder) failed(fld string) bool {
	under := func(p, q string) bool { return strings.HasPrefix(p, q+".") || strings.HasPrefix(p, q+"[") }
	for _, b := range d.bad {
		if fld == b || under(fld, b) || (fld != "" && under(b, fld)) {
			return true
		}
	}
	return false
}

// place positions a validation error: at its field's value (or key, for
// an error about a map key), else at the nearest enclosing field in the file.
func (d *decoder) place(e *field.Error) FieldError {
	n := d.vals[e.Field]
	if _, isKey := e.BadValue.(v1alpha1.MapKey); isKey && d.keys[e.Field] != nil {
		n = d.keys[e.Field]
	}
	for p := e.Field; n == nil; {
		p = parent(p)
		n = d.vals[p]
	}
	msg := e.Detail
	if e.Type == field.ErrorTypeRequired {
		msg = "required"
		if e.Detail != "" {
			msg += ": " + e.Detail
		}
	}
	// An integer written another way (0x20) is shown as written, and as the number.
	if v, ok := e.BadValue.(int32); ok && n.Kind == yaml.ScalarNode && n.Value != strconv.Itoa(int(v)) {
		msg = strings.Replace(msg, fmt.Sprintf("got %d", v), fmt.Sprintf("got %s (%d)", n.Value, v), 1)
	}
	return FieldError{File: d.file, Line: n.Line, Column: n.Column, Field: e.Field, Message: msg}
}

// parent drops the last element of a field path ("a.b[0]" -> "a.b" -> "a" -> "").
func parent(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && (n.Kind == yaml.AliasNode || n.Kind == yaml.DocumentNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected node"
}

var (
	stringType = reflect.TypeFor[string]()
	ruleType   = reflect.TypeFor[v1alpha1.Rule]()
)

// decode sets v from n, strictly: the node's kind and YAML tag must fit the
// Go type, every mapping key must be a field (by its json name) and appear
// once. Errors are recorded, and decoding goes on with the next field.
func (d *decoder) decode(n *yaml.Node, fld string, v reflect.Value) {
	n = resolve(n)
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		d.decode(n, fld, e.Elem())
		v.Set(e)
	case reflect.Struct:
		d.structFields(n, fld, v)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errorf(n, fld, "must be a mapping, got %s", kindName(n))
			return
		}
		m := reflect.MakeMap(v.Type())
		d.eachKey(n, fld, func(k, val *yaml.Node, f string) {
			e := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, f, e)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		})
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			what := "a list"
			switch v.Type().Elem() {
			case stringType:
				what = "a list of strings"
			case ruleType:
				what = "a list of rules"
			}
			d.errorf(n, fld, "must be %s, got %s", what, kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			f := fmt.Sprintf("%s[%d]", fld, i)
			d.vals[f] = resolve(item)
			d.decode(item, f, s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			d.errorf(n, fld, "must be a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int32:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil || int64(int32(i)) != i {
			d.errorf(n, fld, "must be an integer, got %s", kindName(n))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.errorf(n, fld, "must be true or false, got %s", kindName(n))
			return
		}
		var b bool
		_ = n.Decode(&b)
		v.SetBool(b)
	default:
		d.errorf(n, fld, "cannot be read (%s)", v.Type())
	}
}

// structFields decodes a mapping into a struct's fields by their json names.
func (d *decoder) structFields(n *yaml.Node, fld string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, fld, "must be a mapping, got %s", kindName(n))
		return
	}
	fields := map[string]int{}
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = i
		}
	}
	d.eachKey(n, fld, func(k, val *yaml.Node, f string) {
		idx, ok := fields[k.Value]
		if !ok {
			delete(d.keys, f)
			delete(d.vals, f)
			d.errorf(k, f, "unknown field (known: %s)", strings.Join(slices.Sorted(mapKeys(fields)), ", "))
			return
		}
		d.decode(val, f, v.Field(idx))
	})
}

// eachKey calls f for each key of mapping n once, with the key's field
// path, after indexing its key and value nodes; a repeated key is an error.
func (d *decoder) eachKey(n *yaml.Node, fld string, f func(k, val *yaml.Node, path string)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], resolve(n.Content[i+1])
		p := join(fld, k.Value)
		if seen[k.Value] {
			d.errorf(k, p, "duplicate key")
			continue
		}
		seen[k.Value] = true
		d.keys[p], d.vals[p] = k, val
		f(k, val, p)
	}
}

func mapKeys(m map[string]int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
