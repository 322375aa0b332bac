// Package offline applies a dnstune policy to Kubernetes manifests without a
// cluster: the same decision the webhook makes, on every pod-bearing object
// of a multi-document YAML stream.
//
// Only dnstune's changes change. A document is edited in place, from the
// positions of its YAML nodes: the new dnsPolicy, dnsConfig entries and the
// profile annotation are spliced into the text, and every other byte
// (comments, blank lines, quoting, indentation, CRLF line endings, "---"
// lines) is kept. Each edit is checked by parsing the result: should it not
// give exactly the intended object (an unusual shape, such as an alias
// where dnstune writes), the document is re-encoded instead, with a note.
package offline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/dnstune/dnstune/internal/yamlpos"
	"github.com/dnstune/dnstune/policy"
)

// DefaultNamespace is used for objects without metadata.namespace when no
// namespace is given.
const DefaultNamespace = "default"

// podPaths says, per apiVersion and kind, where an object keeps its pod
// (metadata + spec). Only these Kubernetes kinds are touched: a Deployment
// of another API group is someone else's type.
var podPaths = map[string][]string{
	"v1/Pod":                        nil,
	"v1/PodTemplate":                {"template"},
	"v1/ReplicationController":      {"spec", "template"},
	"apps/v1/Deployment":            {"spec", "template"},
	"apps/v1/StatefulSet":           {"spec", "template"},
	"apps/v1/DaemonSet":             {"spec", "template"},
	"apps/v1/ReplicaSet":            {"spec", "template"},
	"batch/v1/Job":                  {"spec", "template"},
	"batch/v1/CronJob":              {"spec", "jobTemplate", "spec", "template"},
	"apps/v1beta2/Deployment":       {"spec", "template"},
	"apps/v1beta2/StatefulSet":      {"spec", "template"},
	"apps/v1beta2/DaemonSet":        {"spec", "template"},
	"apps/v1beta2/ReplicaSet":       {"spec", "template"},
	"apps/v1beta1/Deployment":       {"spec", "template"},
	"apps/v1beta1/StatefulSet":      {"spec", "template"},
	"extensions/v1beta1/Deployment": {"spec", "template"},
	"extensions/v1beta1/DaemonSet":  {"spec", "template"},
	"extensions/v1beta1/ReplicaSet": {"spec", "template"},
	"batch/v1beta1/CronJob":         {"spec", "jobTemplate", "spec", "template"},
}

// Options for Mutate.
type Options struct {
	// Policy to apply; required.
	Policy *policy.Policy
	// Namespace for objects without metadata.namespace, default "default".
	Namespace string
	// ClusterDNS is used by the nodelocal mode when the policy sets none.
	ClusterDNS netip.Addr
	// Filename names the input in errors and notes, default "-".
	Filename string
}

// Result is what happened to one pod-bearing object.
type Result struct {
	Kind, Name, Namespace string
	// Document is the 1-based index of the object's document in the stream,
	// Line the file line the object starts on.
	Document, Line int
	Decision       policy.Decision
}

// Output is the mutated stream and what was done.
type Output struct {
	// Data is the stream with dnstune's changes; documents it does not
	// change are the input's bytes.
	Data []byte
	// Results has one entry per pod-bearing object, in stream order.
	Results []Result
	// Notes are for the user (standard error): fragments passed through,
	// documents that had to be re-encoded.
	Notes []string

	in      []byte
	changed []changedDoc
}

type changedDoc struct {
	offset   int // of the old body in the input
	old, new []byte
}

// DocError is a document that could not be read: its index in the stream
// and the file line the problem is on.
type DocError struct {
	File         string
	Document     int
	Line, Column int
	Err          error
	// FirstLine is the file line the document starts on: the "line N" of
	// yaml.v3's messages count from there, and are said as file lines.
	FirstLine int
}

// yamlLine is a line number in a yaml.v3 message ("line 8: mapping key …").
var yamlLine = regexp.MustCompile(`\bline (\d+)`)

func (e *DocError) Error() string {
	msg := e.Err.Error()
	if e.FirstLine > 1 {
		msg = yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
			return "line " + strconv.Itoa(n+e.FirstLine-1)
		})
	}
	return fmt.Sprintf("%s:%d:%d: document %d: %s", e.File, e.Line, max(e.Column, 1), e.Document, msg)
}

func (e *DocError) Unwrap() error { return e.Err }

// Mutate reads a YAML stream and returns it with pod specs and templates
// changed as the policy decides. Every namespace counts as opted in
// ("enabled") unless a Namespace object in the stream gives its labels.
// Items of a List (kind List, or a typed list such as DeploymentList) are
// mutated like top-level objects.
func Mutate(in []byte, o Options) (*Output, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Filename == "" {
		o.Filename = "-"
	}
	docs := splitStream(in)
	parsed := make([]*yaml.Node, len(docs))
	namespaces := map[string]map[string]string{}
	for i, d := range docs {
		if sepContent(d.sep) {
			continue // "--- |" documents hold no Kubernetes object
		}
		var n yaml.Node
		if err := yaml.Unmarshal(d.body, &n); err != nil {
			de := &DocError{File: o.Filename, Document: i + 1, Line: d.line, Err: err, FirstLine: d.line}
			if l, c, msg, ok := yamlpos.SyntaxError(d.body, d.line); ok {
				de.Line, de.Column, de.Err, de.FirstLine = l, c, errors.New("invalid YAML: "+msg), 0
			} else if l, c, ok := yamlpos.UnknownAlias(d.body, d.line, err); ok {
				de.Line, de.Column = l, c
			}
			return nil, de
		}
		if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			continue
		}
		parsed[i] = n.Content[0]
		for _, obj := range objects(parsed[i]) {
			if obj.gvk() == "v1/Namespace" {
				meta := child(obj.node, "metadata")
				labels := map[string]string{}
				if l := child(meta, "labels"); l != nil {
					if err := l.Decode(&labels); err != nil {
						return nil, &DocError{File: o.Filename, Document: i + 1, Line: d.line + l.Line - 1, Column: l.Column, Err: fmt.Errorf("failed to read Namespace labels: %w", err), FirstLine: d.line}
					}
				}
				namespaces[scalar(meta, "name")] = labels
			}
		}
	}

	out := &Output{in: in}
	var buf bytes.Buffer
	buf.Grow(len(in))
	for i, d := range docs {
		buf.Write(d.sep)
		body := d.body
		if root := parsed[i]; root != nil {
			m := &docMutation{o: o, doc: d, index: i + 1, root: root, namespaces: namespaces, out: out}
			newBody, err := m.run()
			if err != nil {
				return nil, err
			}
			if newBody != nil {
				if st, ok := jsonDocument(d.body); ok {
					// JSON in, JSON out, in the input's own style.
					if newBody, err = renderJSON(newBody, st); err != nil {
						return nil, &DocError{File: o.Filename, Document: i + 1, Line: d.line, Err: err}
					}
				}
				out.changed = append(out.changed, changedDoc{offset: d.offset, old: d.body, new: newBody})
				body = newBody
			}
		}
		buf.Write(body)
	}
	out.Data = buf.Bytes()
	return out, nil
}

// object is one Kubernetes object in a document: the document's root, or
// an item of a list.
type object struct {
	node       *yaml.Node
	apiVersion string
	kind       string
}

func (o object) gvk() string { return o.apiVersion + "/" + o.kind }

// objects returns the document's object, or the items of a list: kind
// List, or a typed list (kind <Kind>List with items) whose items may leave
// out apiVersion and kind.
func objects(root *yaml.Node) []object {
	apiVersion, kind := scalar(root, "apiVersion"), scalar(root, "kind")
	items := child(root, "items")
	if items == nil || items.Kind != yaml.SequenceNode || !strings.HasSuffix(kind, "List") {
		return []object{{node: root, apiVersion: apiVersion, kind: kind}}
	}
	var out []object
	for _, it := range items.Content {
		if it.Kind != yaml.MappingNode {
			continue
		}
		ia, ik := scalar(it, "apiVersion"), scalar(it, "kind")
		if kind != "List" {
			if ia == "" {
				ia = apiVersion
			}
			if ik == "" {
				ik = strings.TrimSuffix(kind, "List")
			}
		}
		out = append(out, object{node: it, apiVersion: ia, kind: ik})
	}
	return out
}

type docMutation struct {
	o          Options
	doc        document
	index      int
	root       *yaml.Node
	namespaces map[string]map[string]string
	out        *Output
}

// planned is one object's change, ready to be spliced.
type planned struct {
	obj  object
	path []string
	tmpl *yaml.Node
	pod  *corev1.Pod // as decoded, before the change
	d    policy.Decision
}

func (m *docMutation) fileLine(n *yaml.Node) int { return m.doc.line + n.Line - 1 }

func (m *docMutation) note(n *yaml.Node, format string, args ...any) {
	m.out.Notes = append(m.out.Notes, fmt.Sprintf("%s:%d: document %d: %s", m.o.Filename, m.fileLine(n), m.index, fmt.Sprintf(format, args...)))
}

func (m *docMutation) fail(n *yaml.Node, err error) error {
	return &DocError{File: m.o.Filename, Document: m.index, Line: m.fileLine(n), Column: n.Column, Err: err, FirstLine: m.doc.line}
}

// run decides for every object of the document and returns the new body,
// or nil when nothing changes.
func (m *docMutation) run() ([]byte, error) {
	var plans []planned
	for _, obj := range objects(m.root) {
		path, ok := podPaths[obj.gvk()]
		if !ok {
			continue
		}
		meta := child(obj.node, "metadata")
		res := Result{Kind: obj.kind, Name: scalar(meta, "name"), Namespace: scalar(meta, "namespace"), Document: m.index, Line: m.fileLine(obj.node)}
		if res.Namespace == "" {
			res.Namespace = m.o.Namespace
		}
		tmpl := obj.node
		for _, k := range path {
			if tmpl = child(tmpl, k); tmpl == nil {
				break
			}
		}
		if tmpl == nil || tmpl.Kind != yaml.MappingNode || child(tmpl, "spec") == nil {
			where := strings.Join(append(append([]string(nil), path...), "spec"), ".")
			m.note(obj.node, "%s %s has no %s (a patch or fragment?): passed through unchanged", obj.kind, res.Name, where)
			continue
		}
		var pod corev1.Pod
		if err := decodeInto(tmpl, &pod); err != nil {
			return nil, m.fail(errorNode(tmpl, err), fmt.Errorf("failed to read the pod of %s %s: %w", obj.kind, res.Name, err))
		}
		nsLabels, ok := m.namespaces[res.Namespace]
		if !ok {
			nsLabels = map[string]string{policy.InjectLabel: policy.InjectEnabled}
		}
		res.Decision = policy.Decide(&pod, policy.Namespace{Name: res.Namespace, Labels: nsLabels}, m.o.Policy, m.o.ClusterDNS)
		m.out.Results = append(m.out.Results, res)
		if res.Decision.Action == policy.Mutate {
			plans = append(plans, planned{obj: obj, path: path, tmpl: tmpl, pod: &pod, d: res.Decision})
		}
	}
	if len(plans) == 0 {
		return nil, nil
	}
	body, err := m.splice(plans)
	if err == nil {
		if err = m.verify(body, plans); err == nil {
			return body, nil
		}
	}
	body, rerr := m.reencode(plans)
	if rerr != nil {
		return nil, m.fail(m.root, fmt.Errorf("failed to write the change: %w", rerr))
	}
	m.note(m.root, "could not edit in place (%v); re-encoded the document: its comments and formatting may differ", err)
	return body, nil
}

// splice makes the changes as text edits on the document.
func (m *docMutation) splice(plans []planned) ([]byte, error) {
	s := newSplicer(m.doc.body, m.root)
	for _, p := range plans {
		if err := spliceDecision(s, p); err != nil {
			return nil, err
		}
	}
	return s.apply()
}

func spliceDecision(s *splicer, p planned) error {
	d := p.d
	spec := child(p.tmpl, "spec")
	if spec.Kind != yaml.MappingNode || s.isShared(spec) {
		return fmt.Errorf("%w: spec is not a plain mapping", errCannotSplice)
	}
	var specEdits []ordered // keys to add to spec (one insertion point)
	if d.SetDNSPolicy != "" {
		if v := child(spec, "dnsPolicy"); v != nil {
			if err := s.replaceScalar(v, string(d.SetDNSPolicy)); err != nil {
				return err
			}
		} else {
			specEdits = append(specEdits, ordered{"dnsPolicy", string(d.SetDNSPolicy)})
		}
	}
	if d.Nameservers != nil || d.Searches != nil || d.Options != nil {
		k, cfg := childKV(spec, "dnsConfig")
		switch {
		case cfg == nil:
			specEdits = append(specEdits, ordered{"dnsConfig", dnsConfigValue(d)})
		case isNull(cfg):
			if err := s.setNull(k, cfg, dnsConfigValue(d)); err != nil {
				return err
			}
		default:
			if err := spliceDNSConfig(s, cfg, p.pod.Spec.DNSConfig, d); err != nil {
				return err
			}
		}
	}
	if len(specEdits) > 0 {
		if err := addKeys(s, spec, specEdits); err != nil {
			return err
		}
	}
	if !d.SetProfileAnnotation {
		return nil
	}
	annotation := []ordered{{policy.ProfileLabel, d.Profile}}
	mk, meta := childKV(p.tmpl, "metadata")
	switch {
	case meta == nil:
		return addKeys(s, p.tmpl, []ordered{{"metadata", []ordered{{"annotations", annotation}}}})
	case isNull(meta):
		return s.setNull(mk, meta, []ordered{{"annotations", annotation}})
	case meta.Kind != yaml.MappingNode || s.isShared(meta):
		return fmt.Errorf("%w: metadata is not a plain mapping", errCannotSplice)
	}
	ak, ann := childKV(meta, "annotations")
	switch {
	case ann == nil:
		return addKeys(s, meta, []ordered{{"annotations", annotation}})
	case isNull(ann):
		return s.setNull(ak, ann, annotation)
	case ann.Kind == yaml.AliasNode || s.isShared(ann):
		// Others see this mapping through an alias: add through a merge key.
		return s.addThroughMerge(ann, policy.ProfileLabel, d.Profile)
	case ann.Kind != yaml.MappingNode:
		return fmt.Errorf("%w: annotations is not a mapping", errCannotSplice)
	}
	return s.setKey(ann, policy.ProfileLabel, d.Profile)
}

// addKeys adds several keys to a mapping at one insertion point.
func addKeys(s *splicer, m *yaml.Node, kvs []ordered) error {
	for i := len(kvs) - 1; i >= 0; i-- { // each goes first: add in reverse
		if err := s.addKey(m, kvs[i].key, kvs[i].value); err != nil {
			return err
		}
	}
	return nil
}

// spliceDNSConfig edits an existing dnsConfig: nameservers and searches the
// decision puts in front of the pod's own are inserted before them; options
// it adds are appended after the pod's own. The pod's entries, and their
// comments, stay as written.
func spliceDNSConfig(s *splicer, cfg *yaml.Node, have *corev1.PodDNSConfig, d policy.Decision) error {
	if cfg.Kind != yaml.MappingNode || s.isShared(cfg) || len(cfg.Content) == 0 && !isFlow(cfg) {
		return fmt.Errorf("%w: dnsConfig is not a plain mapping", errCannotSplice)
	}
	if have == nil {
		have = &corev1.PodDNSConfig{}
	}
	var add []ordered
	front := func(key string, want, had []string) error {
		if want == nil {
			return nil
		}
		n := child(cfg, key)
		if n == nil || len(had) == 0 {
			if n != nil {
				return fmt.Errorf("%w: empty %s", errCannotSplice, key)
			}
			add = append(add, ordered{key, strList(want)})
			return nil
		}
		k := len(want) - len(had)
		if k < 0 || !reflect.DeepEqual(want[k:], had) {
			return fmt.Errorf("%w: %s reordered", errCannotSplice, key)
		}
		return s.prependItems(n, want[:k])
	}
	if err := front("nameservers", d.Nameservers, have.Nameservers); err != nil {
		return err
	}
	if err := front("searches", d.Searches, have.Searches); err != nil {
		return err
	}
	if d.Options != nil {
		n := child(cfg, "options")
		switch {
		case n == nil:
			add = append(add, ordered{"options", optionList(d.Options)})
		case isNull(n) && len(have.Options) == 0:
			// "options:" with nothing (or only a comment) under it: the
			// value goes on the key's line, the comment stays.
			if err := s.setNull(keyOf(cfg, "options"), n, optionList(d.Options)); err != nil {
				return err
			}
		case len(have.Options) == 0 || len(d.Options) < len(have.Options) || !reflect.DeepEqual(d.Options[:len(have.Options)], have.Options):
			return fmt.Errorf("%w: options reordered", errCannotSplice)
		default:
			if err := s.appendItems(n, optionList(d.Options[len(have.Options):])); err != nil {
				return err
			}
		}
	}
	return addKeys(s, cfg, add)
}

func strList(v []string) []any {
	out := make([]any, len(v))
	for i, s := range v {
		out[i] = s
	}
	return out
}

func optionList(opts []corev1.PodDNSConfigOption) []any {
	out := make([]any, len(opts))
	for i, o := range opts {
		kv := []ordered{{"name", o.Name}}
		if o.Value != nil {
			kv = append(kv, ordered{"value", *o.Value})
		}
		out[i] = kv
	}
	return out
}

// dnsConfigValue is the whole dnsConfig the decision gives, for a pod that
// has none.
func dnsConfigValue(d policy.Decision) []ordered {
	var kv []ordered
	if d.Nameservers != nil {
		kv = append(kv, ordered{"nameservers", strList(d.Nameservers)})
	}
	if d.Searches != nil {
		kv = append(kv, ordered{"searches", strList(d.Searches)})
	}
	if d.Options != nil {
		kv = append(kv, ordered{"options", optionList(d.Options)})
	}
	return kv
}

// verify parses the edited body and checks it is the original document with
// exactly the decisions applied: nothing else changed, nothing missing.
func (m *docMutation) verify(body []byte, plans []planned) error {
	var want any
	if err := m.root.Decode(&want); err != nil {
		return err
	}
	want = normalize(want)
	for _, p := range plans {
		if err := applyGeneric(want, p); err != nil {
			return err
		}
	}
	var got any
	if err := yaml.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("edited document does not parse: %w", err)
	}
	if !reflect.DeepEqual(normalize(got), want) {
		return errors.New("edited document differs from the intended change")
	}
	return nil
}

// applyGeneric makes a decision's change on a generic (decoded) document.
func applyGeneric(doc any, p planned) error {
	tmpl, err := genericAt(doc, p.obj, p.path)
	if err != nil {
		return err
	}
	pod := p.pod.DeepCopy()
	p.d.Apply(&pod.Annotations, &pod.Spec)
	spec, _ := tmpl["spec"].(map[string]any)
	if spec == nil {
		return errors.New("no spec")
	}
	if p.d.SetDNSPolicy != "" {
		spec["dnsPolicy"] = string(p.d.SetDNSPolicy)
	}
	if p.d.ChangesDNS() {
		spec["dnsConfig"] = toGeneric(pod.Spec.DNSConfig)
	}
	if p.d.SetProfileAnnotation {
		meta, _ := tmpl["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			tmpl["metadata"] = meta
		}
		ann, _ := meta["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
		} else {
			ann = copyMap(ann) // never through a shared (aliased) value
		}
		ann[policy.ProfileLabel] = p.d.Profile
		meta["annotations"] = ann
	}
	return nil
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// genericAt finds an object's pod template in a generic document.
func genericAt(doc any, obj object, path []string) (map[string]any, error) {
	root, _ := doc.(map[string]any)
	target := root
	if obj.node != nil && root != nil {
		if items, ok := root["items"].([]any); ok && strings.HasSuffix(fmt.Sprint(root["kind"]), "List") {
			target = nil
			name := scalar(child(obj.node, "metadata"), "name")
			for _, it := range items {
				im, _ := it.(map[string]any)
				meta, _ := im["metadata"].(map[string]any)
				if fmt.Sprint(meta["name"]) == name && im != nil {
					target = im
					break
				}
			}
		}
	}
	for _, k := range path {
		if target == nil {
			break
		}
		target, _ = target[k].(map[string]any)
	}
	if target == nil {
		return nil, errors.New("pod template not found")
	}
	return target, nil
}

// normalize deep-copies a decoded YAML value into JSON's types (string
// keys, float64 numbers), so documents compare by meaning and shared
// (aliased) values become separate copies.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = normalize(x)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[fmt.Sprint(k)] = normalize(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = normalize(x)
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

func toGeneric(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// reencode is the fallback: the node tree with every alias expanded (so no
// change reaches another place through an anchor), the changes made on the
// nodes, and the document encoded again.
func (m *docMutation) reencode(plans []planned) ([]byte, error) {
	root := expandAliases(m.root)
	for _, p := range plans {
		tmpl := root
		var items []*yaml.Node
		if p.obj.node != m.root {
			if it := child(root, "items"); it != nil {
				items = it.Content
			}
			name := scalar(child(p.obj.node, "metadata"), "name")
			tmpl = nil
			for _, it := range items {
				if scalar(child(it, "metadata"), "name") == name {
					tmpl = it
					break
				}
			}
		}
		for _, k := range p.path {
			if tmpl == nil {
				break
			}
			tmpl = child(tmpl, k)
		}
		if tmpl == nil {
			return nil, errors.New("pod template not found")
		}
		pod := p.pod.DeepCopy()
		p.d.Apply(&pod.Annotations, &pod.Spec)
		spec := ensure(tmpl, "spec")
		if p.d.SetDNSPolicy != "" {
			set(spec, "dnsPolicy", scalarNode(string(p.d.SetDNSPolicy)))
		}
		if p.d.ChangesDNS() {
			n, err := toNode(pod.Spec.DNSConfig)
			if err != nil {
				return nil, err
			}
			set(spec, "dnsConfig", n)
		}
		if p.d.SetProfileAnnotation {
			set(ensure(ensure(tmpl, "metadata"), "annotations"), policy.ProfileLabel, scalarNode(p.d.Profile))
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("failed to encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("failed to encode YAML: %w", err)
	}
	out := b.Bytes()
	if nl := lineEnding(m.doc.body); nl != "\n" {
		out = bytes.ReplaceAll(out, []byte("\n"), []byte(nl))
	}
	return out, nil
}

// expandAliases returns a deep copy of n in which every alias is replaced
// by a copy of what it points at, and no node keeps an anchor.
func expandAliases(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return expandAliases(n.Alias)
	}
	c := *n
	c.Anchor = ""
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, x := range n.Content {
		c.Content[i] = expandAliases(x)
	}
	return &c
}

// errorNode finds the node a JSON decoding error is about (its field path,
// e.g. spec.containers), or returns n.
func errorNode(n *yaml.Node, err error) *yaml.Node {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return n
	}
	cur := n
	for _, k := range strings.Split(te.Field, ".") {
		next := child(cur, k)
		if next == nil {
			break
		}
		cur = next
	}
	return cur
}

func decodeInto(n *yaml.Node, out any) error {
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	b, err := json.Marshal(normalize(v))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func toNode(v any) (*yaml.Node, error) {
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

// childKV returns the key and value nodes of key in mapping m (nil, nil if absent).
func childKV(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
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

// keyOf is the key node of key in mapping m, or nil.
func keyOf(m *yaml.Node, key string) *yaml.Node {
	for i := 0; m != nil && m.Kind == yaml.MappingNode && i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

func child(m *yaml.Node, key string) *yaml.Node {
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

func scalar(m *yaml.Node, key string) string {
	n := child(m, key)
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

func scalarNode(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

// set replaces the value of key in mapping m, or appends key: v.
func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalarNode(key), v)
}

// ensure returns the mapping under key, creating it (or replacing a null).
func ensure(m *yaml.Node, key string) *yaml.Node {
	if c := child(m, key); c != nil && c.Kind == yaml.MappingNode {
		return c
	}
	c := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	set(m, key, c)
	return c
}
