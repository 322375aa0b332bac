package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

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

// Load decodes, validates and defaults one policy document. file is used
// only in error messages. Unknown keys, wrong types, out-of-range values,
// bad addresses, duplicate keys and references to missing profiles are all
// reported, each as a FieldError in the returned ErrorList.
func Load(file string, data []byte) (*Policy, error) {
	p := &parser{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{File: file, Line: 1, Column: 1, Message: "empty policy: expected apiVersion: " + APIVersion + ", kind: " + Kind}}
		}
		return nil, ErrorList{p.syntaxError(data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(&extra, "", "a policy file holds exactly one YAML document")
	} else if !errors.Is(err, io.EOF) {
		p.errs = append(p.errs, p.syntaxError(data, err))
	}
	pol := p.policy(&doc)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return pol, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// syntaxError turns a yaml.v3 parse error into a FieldError at the line and
// column of the mistake (yamlpos.SyntaxError). Should the position not be found,
// yaml.v3's own line is used with column 1.
func (p *parser) syntaxError(data []byte, err error) FieldError {
	if line, col, msg, ok := yamlpos.SyntaxError(data, 1); ok {
		return FieldError{File: p.file, Line: line, Column: col, Message: "invalid YAML: " + msg}
	}
	line := 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
	}
	return FieldError{File: p.file, Line: line, Column: 1, Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

type parser struct {
	file string
	errs ErrorList
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	p.errs = append(p.errs, FieldError{File: p.file, Line: n.Line, Column: n.Column, Field: field, Message: fmt.Sprintf(format, args...)})
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

// mapping walks a mapping node strictly: each key must be in fields, and
// appear once. Values are passed to the key's handler with their field path.
func (p *parser) mapping(n *yaml.Node, field string, fields map[string]func(v *yaml.Node, field string)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, field, "must be a mapping, got %s", kindName(n))
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		f := join(field, k.Value)
		if seen[k.Value] {
			p.errorf(k, f, "duplicate key")
			continue
		}
		seen[k.Value] = true
		h, ok := fields[k.Value]
		if !ok {
			p.errorf(k, f, "unknown field (known: %s)", knownKeys(fields))
			continue
		}
		h(v, f)
	}
}

func knownKeys(fields map[string]func(*yaml.Node, string)) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// entries walks a mapping of user-chosen keys (profile names, label keys).
func (p *parser) entries(n *yaml.Node, field string, each func(k, v *yaml.Node, field string)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, field, "must be a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		f := join(field, k.Value)
		if seen[k.Value] {
			p.errorf(k, f, "duplicate key")
			continue
		}
		seen[k.Value] = true
		each(k, v, f)
	}
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		p.errorf(n, field, "must be a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) intIn(n *yaml.Node, field string, lo, hi int) *int {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		p.errorf(n, field, "must be an integer, got %s", kindName(n))
		return nil
	}
	// Decode as YAML does (0x2, 0o17, +3 are integers too); report the
	// value as the number it is.
	var v int64
	if err := n.Decode(&v); err != nil {
		p.errorf(n, field, "must be an integer between %d and %d, got %s", lo, hi, n.Value)
		return nil
	}
	if v < int64(lo) || v > int64(hi) {
		shown := strconv.FormatInt(v, 10)
		if shown != n.Value {
			shown = fmt.Sprintf("%s (%d)", n.Value, v)
		}
		p.errorf(n, field, "must be between %d and %d, got %s", lo, hi, shown)
		return nil
	}
	i := int(v)
	return &i
}

func (p *parser) boolean(n *yaml.Node, field string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.errorf(n, field, "must be true or false, got %s", kindName(n))
		return false
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
}

func (p *parser) strList(n *yaml.Node, field string) []string {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, field, "must be a list of strings, got %s", kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		if s, ok := p.str(resolve(item), fmt.Sprintf("%s[%d]", field, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) addr(n *yaml.Node, field string, allowEmpty bool) netip.Addr {
	s, ok := p.str(n, field)
	if !ok {
		return netip.Addr{}
	}
	if s == "" && allowEmpty {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		p.errorf(n, field, "must be an IPv4 or IPv6 address, got %q", s)
		return netip.Addr{}
	}
	if err := CheckNameserver(a); err != nil {
		p.errorf(n, field, "%v, got %q", err, s)
		return netip.Addr{}
	}
	return a
}

func (p *parser) enforcement(n *yaml.Node, field string) Enforcement {
	s, ok := p.str(n, field)
	if !ok {
		return ""
	}
	switch e := Enforcement(s); e {
	case Enforce, Audit:
		return e
	}
	p.errorf(n, field, "must be %q or %q, got %q", Enforce, Audit, s)
	return ""
}

type ref struct {
	node  *yaml.Node
	field string
	name  string
}

func (p *parser) policy(doc *yaml.Node) *Policy {
	root := resolve(doc)
	if root == nil || (root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		p.errorf(doc, "", "empty policy: expected apiVersion: %s, kind: %s", APIVersion, Kind)
		return nil
	}
	pol := Default()
	pol.Profiles = nil
	var (
		apiVersion, kind string
		profileRefs      []ref
		defaultNode      *yaml.Node
		excludeSet       bool
	)
	p.mapping(root, "", map[string]func(*yaml.Node, string){
		"apiVersion": func(v *yaml.Node, f string) {
			if s, ok := p.str(v, f); ok {
				apiVersion = s
				if s != APIVersion {
					p.errorf(v, f, "must be %q, got %q", APIVersion, s)
				}
			}
		},
		"kind": func(v *yaml.Node, f string) {
			if s, ok := p.str(v, f); ok {
				kind = s
				if s != Kind {
					p.errorf(v, f, "must be %q, got %q", Kind, s)
				}
			}
		},
		"clusterDomain": func(v *yaml.Node, f string) {
			if s, ok := p.str(v, f); ok {
				if err := CheckClusterDomain(s); err != nil {
					p.errorf(v, f, "%v", err)
					return
				}
				pol.ClusterDomain = s
			}
		},
		"clusterDNS":   func(v *yaml.Node, f string) { pol.ClusterDNS = p.addr(v, f, true) },
		"nodeLocalDNS": func(v *yaml.Node, f string) { pol.NodeLocalDNS = p.addr(v, f, false) },
		"enforcement": func(v *yaml.Node, f string) {
			if e := p.enforcement(v, f); e != "" {
				pol.Enforcement = e
			}
		},
		"defaultProfile": func(v *yaml.Node, f string) {
			if s, ok := p.str(v, f); ok {
				pol.DefaultProfile = s
				defaultNode = v
			}
		},
		"profiles": func(v *yaml.Node, f string) {
			pol.Profiles = map[string]*Profile{}
			p.entries(v, f, func(k, v *yaml.Node, f string) {
				if errs := validation.IsDNS1123Label(k.Value); len(errs) > 0 {
					p.errorf(k, f, "profile name must be a lowercase DNS label (it is used as a label value)")
				}
				pol.Profiles[k.Value] = p.profile(k.Value, v, f)
			})
		},
		"rules": func(v *yaml.Node, f string) {
			if v.Kind != yaml.SequenceNode {
				p.errorf(v, f, "must be a list of rules, got %s", kindName(v))
				return
			}
			for i, item := range v.Content {
				rf := fmt.Sprintf("%s[%d]", f, i)
				r, pr := p.rule(resolve(item), rf)
				pol.Rules = append(pol.Rules, r)
				if pr.node != nil {
					profileRefs = append(profileRefs, pr)
				}
			}
		},
		"excludeNamespaces": func(v *yaml.Node, f string) {
			pol.ExcludeNamespaces = p.strList(v, f)
			excludeSet = true
		},
	})
	if root.Kind != yaml.MappingNode {
		return nil
	}
	if apiVersion == "" {
		p.errorf(root, "apiVersion", "required: %s", APIVersion)
	}
	if kind == "" {
		p.errorf(root, "kind", "required: %s", Kind)
	}
	if pol.Profiles == nil {
		pol.Profiles = Default().Profiles
	}
	if !excludeSet {
		pol.ExcludeNamespaces = append([]string(nil), DefaultExcludeNamespaces...)
	}
	if _, ok := pol.Profiles[pol.DefaultProfile]; !ok {
		n := defaultNode
		if n == nil {
			n = root
		}
		p.errorf(n, "defaultProfile", "no profile named %q (profiles: %s)", pol.DefaultProfile, profileNames(pol))
	}
	for _, r := range profileRefs {
		if _, ok := pol.Profiles[r.name]; !ok {
			p.errorf(r.node, r.field, "no profile named %q (profiles: %s)", r.name, profileNames(pol))
		}
	}
	slices.SortStableFunc(p.errs, func(a, b FieldError) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return pol
}

func profileNames(pol *Policy) string {
	names := make([]string, 0, len(pol.Profiles))
	for n := range pol.Profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (p *parser) profile(name string, n *yaml.Node, field string) *Profile {
	prof := &Profile{Name: name, Mode: ModeOptions}
	p.mapping(n, field, map[string]func(*yaml.Node, string){
		"mode": func(v *yaml.Node, f string) {
			s, ok := p.str(v, f)
			if !ok {
				return
			}
			switch m := Mode(s); m {
			case ModeOptions, ModeNodeLocal:
				prof.Mode = m
			default:
				p.errorf(v, f, "must be %q or %q, got %q", ModeOptions, ModeNodeLocal, s)
			}
		},
		"options": func(v *yaml.Node, f string) {
			o := &prof.Options
			p.mapping(v, f, map[string]func(*yaml.Node, string){
				"ndots":               func(v *yaml.Node, f string) { o.Ndots = p.intIn(v, f, 0, 15) },
				"timeout":             func(v *yaml.Node, f string) { o.Timeout = p.intIn(v, f, 1, 30) },
				"attempts":            func(v *yaml.Node, f string) { o.Attempts = p.intIn(v, f, 1, 5) },
				"singleRequestReopen": func(v *yaml.Node, f string) { o.SingleRequestReopen = p.boolean(v, f) },
			})
		},
	})
	return prof
}

func (p *parser) rule(n *yaml.Node, field string) (Rule, ref) {
	var (
		r       Rule
		pr      ref
		hasSel  bool
		hasName bool
	)
	p.mapping(n, field, map[string]func(*yaml.Node, string){
		"namespaces": func(v *yaml.Node, f string) {
			hasName = true
			r.Namespaces = p.strList(v, f)
			for i, g := range r.Namespaces {
				if _, err := path.Match(g, ""); err != nil {
					p.errorf(v.Content[i], fmt.Sprintf("%s[%d]", f, i), "bad glob %q: %v", g, err)
				}
			}
		},
		"namespaceSelector": func(v *yaml.Node, f string) {
			hasSel = true
			r.Selector = p.selector(v, f)
		},
		"profile": func(v *yaml.Node, f string) {
			if s, ok := p.str(v, f); ok {
				r.Profile = s
				pr = ref{node: v, field: f, name: s}
			}
		},
		"enforcement": func(v *yaml.Node, f string) { r.Enforcement = p.enforcement(v, f) },
	})
	if n.Kind != yaml.MappingNode {
		return r, pr
	}
	if hasSel == hasName {
		p.errorf(n, field, "set exactly one of namespaces and namespaceSelector")
	}
	if pr.node == nil {
		p.errorf(n, join(field, "profile"), "required")
	}
	return r, pr
}

func (p *parser) selector(n *yaml.Node, field string) labels.Selector {
	var ls metav1.LabelSelector
	p.mapping(n, field, map[string]func(*yaml.Node, string){
		"matchLabels": func(v *yaml.Node, f string) {
			ls.MatchLabels = map[string]string{}
			p.entries(v, f, func(k, v *yaml.Node, f string) {
				if s, ok := p.str(v, f); ok {
					ls.MatchLabels[k.Value] = s
				}
			})
		},
		"matchExpressions": func(v *yaml.Node, f string) {
			if v.Kind != yaml.SequenceNode {
				p.errorf(v, f, "must be a list, got %s", kindName(v))
				return
			}
			for i, item := range v.Content {
				var req metav1.LabelSelectorRequirement
				p.mapping(item, fmt.Sprintf("%s[%d]", f, i), map[string]func(*yaml.Node, string){
					"key": func(v *yaml.Node, f string) { req.Key, _ = p.str(v, f) },
					"operator": func(v *yaml.Node, f string) {
						s, _ := p.str(v, f)
						req.Operator = metav1.LabelSelectorOperator(s)
					},
					"values": func(v *yaml.Node, f string) { req.Values = p.strList(v, f) },
				})
				ls.MatchExpressions = append(ls.MatchExpressions, req)
			}
		},
	})
	s, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		p.errorf(n, field, "invalid selector: %v", err)
		return nil
	}
	return s
}
