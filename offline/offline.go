// Package offline applies a dnstune policy to Kubernetes manifests without a
// cluster: the same decision the webhook makes, on every pod-bearing object
// of a multi-document YAML stream. Documents it does not change are written
// back byte for byte; changed ones keep their key order and comments.
package offline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/dnstune/dnstune/policy"
)

// DefaultNamespace is used for objects without metadata.namespace when no
// namespace is given.
const DefaultNamespace = "default"

// templatePaths says where each kind keeps its pod (metadata + spec).
var templatePaths = map[string][]string{
	"Pod":         nil,
	"PodTemplate": {"template"},
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// Options for Mutate.
type Options struct {
	// Policy to apply; required.
	Policy *policy.Policy
	// Namespace for objects without metadata.namespace, default "default".
	Namespace string
	// ClusterDNS is used by the nodelocal mode when the policy sets none.
	ClusterDNS netip.Addr
}

// Result is what happened to one pod-bearing object.
type Result struct {
	Kind, Name, Namespace string
	Decision              policy.Decision
}

// Mutate reads a YAML stream and returns it with pod specs and templates
// changed as the policy decides. Every namespace counts as opted in
// ("enabled") unless a Namespace object in the stream gives its labels.
func Mutate(in []byte, o Options) ([]byte, []Result, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	docs, err := splitDocuments(in)
	if err != nil {
		return nil, nil, err
	}
	parsed := make([]*yaml.Node, len(docs))
	namespaces := map[string]map[string]string{}
	for i, d := range docs {
		var n yaml.Node
		if err := yaml.Unmarshal(d, &n); err != nil {
			return nil, nil, fmt.Errorf("failed to parse document %d: %w", i+1, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			continue
		}
		parsed[i] = n.Content[0]
		if scalar(parsed[i], "kind") == "Namespace" {
			meta := child(parsed[i], "metadata")
			labels := map[string]string{}
			if l := child(meta, "labels"); l != nil {
				if err := l.Decode(&labels); err != nil {
					return nil, nil, fmt.Errorf("document %d: failed to read Namespace labels: %w", i+1, err)
				}
			}
			namespaces[scalar(meta, "name")] = labels
		}
	}

	var out bytes.Buffer
	var results []Result
	for i, root := range parsed {
		if i > 0 {
			out.WriteString("---\n")
		}
		doc := docs[i]
		if root != nil {
			changed, res, err := mutateDoc(root, namespaces, o)
			if err != nil {
				return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			if res != nil {
				results = append(results, *res)
			}
			if changed {
				if doc, err = encode(root); err != nil {
					return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
				}
			}
		}
		out.Write(doc)
		if len(doc) > 0 && doc[len(doc)-1] != '\n' {
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), results, nil
}

func splitDocuments(in []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("failed to split YAML stream: %w", err)
		}
		if len(bytes.TrimSpace(d)) == 0 {
			continue
		}
		docs = append(docs, d)
	}
}

func mutateDoc(root *yaml.Node, namespaces map[string]map[string]string, o Options) (bool, *Result, error) {
	kind := scalar(root, "kind")
	path, ok := templatePaths[kind]
	if !ok {
		return false, nil, nil
	}
	tmpl := root
	for _, k := range path {
		if tmpl = child(tmpl, k); tmpl == nil {
			return false, nil, fmt.Errorf("%s has no %s", kind, strings.Join(path, "."))
		}
	}
	meta := child(root, "metadata")
	res := &Result{Kind: kind, Name: scalar(meta, "name"), Namespace: scalar(meta, "namespace")}
	if res.Namespace == "" {
		res.Namespace = o.Namespace
	}
	var pod corev1.Pod
	if err := decodeInto(tmpl, &pod); err != nil {
		return false, nil, fmt.Errorf("failed to read the pod of %s %s: %w", kind, res.Name, err)
	}
	nsLabels, ok := namespaces[res.Namespace]
	if !ok {
		nsLabels = map[string]string{policy.InjectLabel: policy.InjectEnabled}
	}
	res.Decision = policy.Decide(&pod, policy.Namespace{Name: res.Namespace, Labels: nsLabels}, o.Policy, o.ClusterDNS)
	d := &res.Decision
	if d.Action != policy.Mutate {
		return false, res, nil
	}
	spec := ensure(tmpl, "spec")
	if d.SetDNSPolicy != "" {
		set(spec, "dnsPolicy", scalarNode(string(d.SetDNSPolicy)))
	}
	if d.Nameservers != nil || d.Searches != nil || d.Options != nil {
		d.Apply(&pod.Annotations, &pod.Spec)
		n, err := toNode(pod.Spec.DNSConfig)
		if err != nil {
			return false, nil, err
		}
		set(spec, "dnsConfig", n)
	}
	if d.SetProfileAnnotation {
		set(ensure(ensure(tmpl, "metadata"), "annotations"), policy.ProfileLabel, scalarNode(d.Profile))
	}
	return true, res, nil
}

func decodeInto(n *yaml.Node, out any) error {
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	b, err := json.Marshal(v)
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
	if n.Kind == yaml.ScalarNode && n.Style&yaml.DoubleQuotedStyle != 0 {
		n.Style = 0 // quote only when YAML needs it
	}
	for _, c := range n.Content {
		clearFlow(c)
	}
}

func encode(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("failed to encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("failed to encode YAML: %w", err)
	}
	return b.Bytes(), nil
}

func child(m *yaml.Node, key string) *yaml.Node {
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
	if n := child(m, key); n != nil && n.Kind == yaml.ScalarNode {
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
