package webhook

import (
	"encoding/json"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/dnstune/dnstune/policy"
)

// patch returns the JSON patch that makes a decision's changes to pod. It
// touches only /spec/dnsPolicy, /spec/dnsConfig (or its nameservers,
// searches and options when the pod already has a dnsConfig, so fields of
// dnsConfig this version does not know survive) and one annotation. Values
// come from typed fields; "add" replaces a member that exists (RFC 6902 4.1).
func patch(pod *corev1.Pod, d *policy.Decision) []jsonpatch.Operation {
	if d.Action != policy.Mutate {
		return nil
	}
	ops := make([]jsonpatch.Operation, 0, 5)
	if d.SetDNSPolicy != "" {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/dnsPolicy", string(d.SetDNSPolicy)))
	}
	if pod.Spec.DNSConfig == nil {
		if d.Nameservers != nil || d.Searches != nil || d.Options != nil {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/dnsConfig", &corev1.PodDNSConfig{
				Nameservers: d.Nameservers, Searches: d.Searches, Options: d.Options,
			}))
		}
	} else {
		if d.Nameservers != nil {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/dnsConfig/nameservers", d.Nameservers))
		}
		if d.Searches != nil {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/dnsConfig/searches", d.Searches))
		}
		if d.Options != nil {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/dnsConfig/options", d.Options))
		}
	}
	if d.SetProfileAnnotation {
		if pod.Annotations == nil {
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations", map[string]string{policy.ProfileLabel: d.Profile}))
		} else {
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escapePointer(policy.ProfileLabel), d.Profile))
		}
	}
	return ops
}

// op mirrors jsonpatch.Operation without its MarshalJSON method, which
// makes encoding/json re-scan and compact every operation it encodes.
type op struct {
	Operation string `json:"op"`
	Path      string `json:"path"`
	Value     any    `json:"value,omitempty"`
}

// encodePatch encodes operations as a JSON patch document.
func encodePatch(ops []jsonpatch.Operation) ([]byte, error) {
	out := make([]op, len(ops))
	for i, o := range ops {
		out[i] = op{Operation: o.Operation, Path: o.Path, Value: o.Value}
	}
	return json.Marshal(out)
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escapePointer escapes one JSON pointer segment (RFC 6901).
func escapePointer(s string) string { return pointerEscaper.Replace(s) }
