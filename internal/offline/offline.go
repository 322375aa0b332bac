// Package offline applies a dnstune policy to Kubernetes manifests without a
// cluster: the same decision the webhook makes, on every pod-bearing object
// of a multi-document YAML stream.
//
// Only dnstune's changes change. A document is edited in place by
// internal/yamledit, from the positions of its YAML nodes: the new dnsPolicy, dnsConfig entries and the
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

	"github.com/dnstune/dnstune/internal/yamledit"
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
	docs, err := splitJSONStreams(yamledit.SplitStream(in), o.Filename)
	if err != nil {
		return nil, err
	}
	parsed := make([]*yaml.Node, len(docs))
	jsonStyle := make([]*yamledit.JSONStyle, len(docs))
	namespaces := map[string]map[string]string{}
	for i, d := range docs {
		if yamledit.SepContent(d.Sep) {
			continue // "--- |" documents hold no Kubernetes object
		}
		body := d.Body
		if st, ok := yamledit.DetectJSON(d.Body); ok {
			jsonStyle[i] = &st
			b, replaced, err := yamledit.ForYAML(d.Body)
			if err != nil {
				return nil, &DocError{File: o.Filename, Document: i + 1, Line: d.Line, Column: 1, Err: err}
			}
			if replaced {
				body = b
			}
		}
		var n yaml.Node
		if err := yaml.Unmarshal(body, &n); err != nil {
			de := &DocError{File: o.Filename, Document: i + 1, Line: d.Line, Err: err, FirstLine: d.Line}
			if l, c, msg, ok := yamlpos.SyntaxError(d.Body, d.Line); ok {
				de.Line, de.Column, de.Err, de.FirstLine = l, c, errors.New("invalid YAML: "+msg), 0
			} else if l, c, ok := yamlpos.UnknownAlias(d.Body, d.Line, err); ok {
				de.Line, de.Column = l, c
			}
			return nil, de
		}
		if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			continue
		}
		yamledit.RestoreSolidus(&n)
		parsed[i] = n.Content[0]
		for _, obj := range objects(parsed[i]) {
			if obj.gvk() == "v1/Namespace" {
				meta := yamledit.Child(obj.node, "metadata")
				labels := map[string]string{}
				if l := yamledit.Child(meta, "labels"); l != nil {
					if err := l.Decode(&labels); err != nil {
						return nil, &DocError{File: o.Filename, Document: i + 1, Line: d.Line + l.Line - 1, Column: l.Column, Err: fmt.Errorf("failed to read Namespace labels: %w", err), FirstLine: d.Line}
					}
				}
				namespaces[yamledit.Scalar(meta, "name")] = labels
			}
		}
	}

	out := &Output{in: in}
	var buf bytes.Buffer
	buf.Grow(len(in))
	for i, d := range docs {
		buf.Write(d.Sep)
		body := d.Body
		if root := parsed[i]; root != nil {
			m := &docMutation{o: o, doc: d, index: i + 1, root: root, namespaces: namespaces, out: out, json: jsonStyle[i]}
			newBody, err := m.run()
			if err != nil {
				return nil, err
			}
			if newBody != nil {
				out.changed = append(out.changed, changedDoc{offset: d.Offset, old: d.Body, new: newBody})
				body = newBody
			}
		}
		buf.Write(body)
	}
	out.Data = buf.Bytes()
	return out, nil
}

// splitJSONStreams makes each JSON object of a document holding several
// ("{...}\n{...}", which kubectl reads as a stream) a document of its
// own, so that each is mutated and stays JSON; a document that starts as
// such a stream and goes on with something else is refused whole.
func splitJSONStreams(docs []yamledit.Document, file string) ([]yamledit.Document, error) {
	var out []yamledit.Document
	for i, d := range docs {
		parts, at, err := yamledit.SplitJSONObjects(d.Body)
		if err != nil {
			line := d.Line + bytes.Count(d.Body[:at], []byte("\n"))
			col := at - (bytes.LastIndexByte(d.Body[:at], '\n') + 1) + 1
			return nil, &DocError{File: file, Document: i + 1, Line: line, Column: col, Err: err}
		}
		if parts == nil {
			out = append(out, d)
			continue
		}
		off, line := d.Offset, d.Line
		for j, p := range parts {
			piece := yamledit.Document{Body: p, Offset: off, Line: line}
			if j == 0 {
				piece.Sep = d.Sep
			}
			out = append(out, piece)
			off += len(p)
			line += bytes.Count(p, []byte("\n"))
		}
	}
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
	apiVersion, kind := yamledit.Scalar(root, "apiVersion"), yamledit.Scalar(root, "kind")
	items := yamledit.Child(root, "items")
	if items == nil || items.Kind != yaml.SequenceNode || !strings.HasSuffix(kind, "List") {
		return []object{{node: root, apiVersion: apiVersion, kind: kind}}
	}
	var out []object
	for _, it := range items.Content {
		if it.Kind != yaml.MappingNode {
			continue
		}
		ia, ik := yamledit.Scalar(it, "apiVersion"), yamledit.Scalar(it, "kind")
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
	doc        yamledit.Document
	index      int
	root       *yaml.Node
	namespaces map[string]map[string]string
	out        *Output
	// json is the document's style when it is JSON: edited as JSON, so it
	// stays JSON with every other byte kept.
	json *yamledit.JSONStyle
}

// planned is one object's change, ready to be spliced.
type planned struct {
	obj  object
	path []string
	tmpl *yaml.Node
	pod  *corev1.Pod // as decoded, before the change
	d    policy.Decision
}

func (m *docMutation) fileLine(n *yaml.Node) int { return m.doc.Line + n.Line - 1 }

func (m *docMutation) note(n *yaml.Node, format string, args ...any) {
	m.out.Notes = append(m.out.Notes, fmt.Sprintf("%s:%d: document %d: %s", m.o.Filename, m.fileLine(n), m.index, fmt.Sprintf(format, args...)))
}

func (m *docMutation) fail(n *yaml.Node, err error) error {
	return &DocError{File: m.o.Filename, Document: m.index, Line: m.fileLine(n), Column: n.Column, Err: err, FirstLine: m.doc.Line}
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
		meta := yamledit.Child(obj.node, "metadata")
		res := Result{Kind: obj.kind, Name: yamledit.Scalar(meta, "name"), Namespace: yamledit.Scalar(meta, "namespace"), Document: m.index, Line: m.fileLine(obj.node)}
		if res.Namespace == "" {
			res.Namespace = m.o.Namespace
		}
		tmpl := obj.node
		for _, k := range path {
			if tmpl = yamledit.Child(tmpl, k); tmpl == nil {
				break
			}
		}
		if tmpl == nil || tmpl.Kind != yaml.MappingNode || yamledit.Child(tmpl, "spec") == nil {
			where := strings.Join(append(append([]string(nil), path...), "spec"), ".")
			m.note(obj.node, "%s %s has no %s (a patch or fragment?): passed through unchanged", obj.kind, res.Name, where)
			continue
		}
		var pod corev1.Pod
		if err := yamledit.DecodeInto(tmpl, &pod); err != nil {
			return nil, m.fail(yamledit.ErrorNode(tmpl, err), fmt.Errorf("failed to read the pod of %s %s: %w", obj.kind, res.Name, err))
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
	if rerr == nil && m.json != nil {
		body, rerr = yamledit.RenderJSON(body, *m.json) // JSON in, JSON out
	}
	if rerr != nil {
		return nil, m.fail(m.root, fmt.Errorf("failed to write the change: %w", rerr))
	}
	m.note(m.root, "could not edit in place (%v); re-encoded the document: its comments and formatting may differ", err)
	return body, nil
}

// splice makes the changes as text edits on the document.
func (m *docMutation) splice(plans []planned) ([]byte, error) {
	s := yamledit.New(m.doc.Body, m.root)
	if m.json != nil {
		s.SetJSON(*m.json)
	}
	for _, p := range plans {
		if err := spliceDecision(s, p); err != nil {
			return nil, err
		}
	}
	return s.Apply()
}

func spliceDecision(s *yamledit.Editor, p planned) error {
	d := p.d
	spec := yamledit.Child(p.tmpl, "spec")
	if spec.Kind != yaml.MappingNode || s.IsShared(spec) {
		return fmt.Errorf("%w: spec is not a plain mapping", yamledit.ErrCannotEdit)
	}
	var specEdits []yamledit.KV // keys to add to spec (one insertion point)
	if d.SetDNSPolicy != "" {
		if v := yamledit.Child(spec, "dnsPolicy"); v != nil {
			if err := s.ReplaceScalar(v, string(d.SetDNSPolicy)); err != nil {
				return err
			}
		} else {
			specEdits = append(specEdits, yamledit.KV{Key: "dnsPolicy", Value: string(d.SetDNSPolicy)})
		}
	}
	if d.Nameservers != nil || d.Searches != nil || d.Options != nil {
		k, cfg := yamledit.ChildKV(spec, "dnsConfig")
		switch {
		case cfg == nil:
			specEdits = append(specEdits, yamledit.KV{Key: "dnsConfig", Value: dnsConfigValue(d)})
		case yamledit.IsNull(cfg):
			if err := s.SetNull(k, cfg, dnsConfigValue(d)); err != nil {
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
	annotation := []yamledit.KV{{Key: policy.ProfileLabel, Value: d.Profile}}
	mk, meta := yamledit.ChildKV(p.tmpl, "metadata")
	switch {
	case meta == nil:
		return addKeys(s, p.tmpl, []yamledit.KV{{Key: "metadata", Value: []yamledit.KV{{Key: "annotations", Value: annotation}}}})
	case yamledit.IsNull(meta):
		return s.SetNull(mk, meta, []yamledit.KV{{Key: "annotations", Value: annotation}})
	case meta.Kind != yaml.MappingNode || s.IsShared(meta):
		return fmt.Errorf("%w: metadata is not a plain mapping", yamledit.ErrCannotEdit)
	}
	ak, ann := yamledit.ChildKV(meta, "annotations")
	switch {
	case ann == nil:
		return addKeys(s, meta, []yamledit.KV{{Key: "annotations", Value: annotation}})
	case yamledit.IsNull(ann):
		return s.SetNull(ak, ann, annotation)
	case ann.Kind == yaml.AliasNode || s.IsShared(ann):
		// Others see this mapping through an alias: add through a merge key.
		return s.AddThroughMerge(ann, policy.ProfileLabel, d.Profile)
	case ann.Kind != yaml.MappingNode:
		return fmt.Errorf("%w: annotations is not a mapping", yamledit.ErrCannotEdit)
	}
	return s.SetKey(ann, policy.ProfileLabel, d.Profile)
}

// addKeys adds several keys to a mapping at one insertion point.
func addKeys(s *yamledit.Editor, m *yaml.Node, kvs []yamledit.KV) error {
	for i := len(kvs) - 1; i >= 0; i-- { // each goes first: add in reverse
		if err := s.AddKey(m, kvs[i].Key, kvs[i].Value); err != nil {
			return err
		}
	}
	return nil
}

// spliceDNSConfig edits an existing dnsConfig: nameservers and searches the
// decision puts in front of the pod's own are inserted before them; options
// it adds are appended after the pod's own. The pod's entries, and their
// comments, stay as written.
func spliceDNSConfig(s *yamledit.Editor, cfg *yaml.Node, have *corev1.PodDNSConfig, d policy.Decision) error {
	if cfg.Kind != yaml.MappingNode || s.IsShared(cfg) || len(cfg.Content) == 0 && !yamledit.IsFlow(cfg) {
		return fmt.Errorf("%w: dnsConfig is not a plain mapping", yamledit.ErrCannotEdit)
	}
	if have == nil {
		have = &corev1.PodDNSConfig{}
	}
	var add []yamledit.KV
	front := func(key string, want, had []string) error {
		if want == nil {
			return nil
		}
		n := yamledit.Child(cfg, key)
		if n == nil || len(had) == 0 {
			if n != nil {
				return fmt.Errorf("%w: empty %s", yamledit.ErrCannotEdit, key)
			}
			add = append(add, yamledit.KV{Key: key, Value: strList(want)})
			return nil
		}
		k := len(want) - len(had)
		if k < 0 || !reflect.DeepEqual(want[k:], had) {
			return fmt.Errorf("%w: %s reordered", yamledit.ErrCannotEdit, key)
		}
		return s.PrependItems(n, want[:k])
	}
	if err := front("nameservers", d.Nameservers, have.Nameservers); err != nil {
		return err
	}
	if err := front("searches", d.Searches, have.Searches); err != nil {
		return err
	}
	if d.Options != nil {
		n := yamledit.Child(cfg, "options")
		switch {
		case n == nil:
			add = append(add, yamledit.KV{Key: "options", Value: optionList(d.Options)})
		case yamledit.IsNull(n) && len(have.Options) == 0:
			// "options:" with nothing (or only a comment) under it: the
			// value goes on the key's line, the comment stays.
			if err := s.SetNull(yamledit.KeyOf(cfg, "options"), n, optionList(d.Options)); err != nil {
				return err
			}
		case len(have.Options) == 0 || len(d.Options) < len(have.Options) || !reflect.DeepEqual(d.Options[:len(have.Options)], have.Options):
			return fmt.Errorf("%w: options reordered", yamledit.ErrCannotEdit)
		default:
			if err := s.AppendItems(n, optionList(d.Options[len(have.Options):])); err != nil {
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
		kv := []yamledit.KV{{Key: "name", Value: o.Name}}
		if o.Value != nil {
			kv = append(kv, yamledit.KV{Key: "value", Value: *o.Value})
		}
		out[i] = kv
	}
	return out
}

// dnsConfigValue is the whole dnsConfig the decision gives, for a pod that
// has none.
func dnsConfigValue(d policy.Decision) []yamledit.KV {
	var kv []yamledit.KV
	if d.Nameservers != nil {
		kv = append(kv, yamledit.KV{Key: "nameservers", Value: strList(d.Nameservers)})
	}
	if d.Searches != nil {
		kv = append(kv, yamledit.KV{Key: "searches", Value: strList(d.Searches)})
	}
	if d.Options != nil {
		kv = append(kv, yamledit.KV{Key: "options", Value: optionList(d.Options)})
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
	want = yamledit.Normalize(want)
	for _, p := range plans {
		if err := applyGeneric(want, p); err != nil {
			return err
		}
	}
	var got any
	if m.json != nil {
		// Still JSON, and JSON's own reading of it (\/ included).
		if err := json.Unmarshal(body, &got); err != nil {
			return fmt.Errorf("edited JSON document is not JSON: %w", err)
		}
	} else if err := yaml.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("edited document does not parse: %w", err)
	}
	if !reflect.DeepEqual(yamledit.Normalize(got), want) {
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
			name := yamledit.Scalar(yamledit.Child(obj.node, "metadata"), "name")
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
	root := yamledit.ExpandAliases(m.root)
	for _, p := range plans {
		tmpl := root
		var items []*yaml.Node
		if p.obj.node != m.root {
			if it := yamledit.Child(root, "items"); it != nil {
				items = it.Content
			}
			name := yamledit.Scalar(yamledit.Child(p.obj.node, "metadata"), "name")
			tmpl = nil
			for _, it := range items {
				if yamledit.Scalar(yamledit.Child(it, "metadata"), "name") == name {
					tmpl = it
					break
				}
			}
		}
		for _, k := range p.path {
			if tmpl == nil {
				break
			}
			tmpl = yamledit.Child(tmpl, k)
		}
		if tmpl == nil {
			return nil, errors.New("pod template not found")
		}
		pod := p.pod.DeepCopy()
		p.d.Apply(&pod.Annotations, &pod.Spec)
		spec := yamledit.Ensure(tmpl, "spec")
		if p.d.SetDNSPolicy != "" {
			yamledit.Set(spec, "dnsPolicy", yamledit.ScalarNode(string(p.d.SetDNSPolicy)))
		}
		if p.d.ChangesDNS() {
			n, err := yamledit.ToNode(pod.Spec.DNSConfig)
			if err != nil {
				return nil, err
			}
			yamledit.Set(spec, "dnsConfig", n)
		}
		if p.d.SetProfileAnnotation {
			yamledit.Set(yamledit.Ensure(yamledit.Ensure(tmpl, "metadata"), "annotations"), policy.ProfileLabel, yamledit.ScalarNode(p.d.Profile))
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
	if nl := yamledit.LineEnding(m.doc.Body); nl != "\n" {
		out = bytes.ReplaceAll(out, []byte("\n"), []byte(nl))
	}
	return out, nil
}
