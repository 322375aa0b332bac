//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/policy"
)

// dryRunCreate asks the real kube-apiserver to validate pod (server-side
// dry run: full validation and admission, nothing stored).
func dryRunCreate(pod *corev1.Pod) error {
	return env.Client.Create(context.Background(), pod.DeepCopy(), client.DryRunAll)
}

// plainNamespace creates a namespace of exactly this name, not opted in (the
// webhook leaves its pods alone), deleted when the test ends.
func plainNamespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ns) })
	return name
}

// Every decision dnstune can produce, for a table of edge policies and
// pods, gives a pod the real kube-apiserver accepts: the policy's own
// validation keeps what it emits valid, and what a pod's own entries would
// push past the limits is skipped, never emitted.
func TestDecisionsPassAPIServerValidation(t *testing.T) {
	longNS := plainNamespace(t, "n"+strings.Repeat("x", 61)+"n") // 63 characters, the longest
	shortNS := plainNamespace(t, fmt.Sprintf("edge-%d", len(t.Name())))
	maxDomain := strings.Repeat("d", 61) + "." + strings.Repeat("e", 61) + "." + strings.Repeat("f", 61) // 185, the policy's limit

	policies := map[string]string{
		"default":            "",
		"longest domain":     "clusterDomain: " + maxDomain + "\nclusterDNS: 10.96.0.10\n",
		"IPv6 addresses":     "clusterDNS: fd00:10:96::a\nnodeLocalDNS: fd00::10\n",
		"IPv6 cluster DNS":   "clusterDNS: \"2001:db8::53\"\n",
		"all options, max":   "clusterDNS: 10.96.0.10\nprofiles:\n  resilient: {options: {ndots: 15, timeout: 30, attempts: 5, singleRequestReopen: true}}\n  nodelocal: {mode: nodelocal, options: {ndots: 0, timeout: 1, attempts: 1}}\n",
		"same address twice": "clusterDNS: 169.254.20.10\n",
	}
	searches := func(n, size int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("s%d.%s", i, strings.Repeat("a", size))
		}
		return out
	}
	pods := map[string]func(*corev1.Pod){
		"plain":                   func(*corev1.Pod) {},
		"hostNetwork WithHostNet": func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet },
		"own options, values, dupes": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts("ndots:5", "edns0", "edns0", "timeout")}
		},
		"one extra nameserver": func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}} },
		"two extra nameservers": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}}
		},
		"29 extra searches":        func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: searches(29, 10)} },
		"30 extra searches":        func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: searches(30, 10)} },
		"searches near 2048 chars": func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: searches(12, 150)} },
		"trailing-dot and underscore": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"corp.example.", "_srv.example"}}
		},
		"own nodelocal address": func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"169.254.20.10"}} },
		"windows":               func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} },
	}
	loaded := map[string]*policy.Policy{}
	for pname, body := range policies {
		pol, err := policy.Load(pname, []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\n"+body))
		if err != nil {
			t.Fatalf("policy %q: %v", pname, err)
		}
		loaded[pname] = pol
	}
	// Policies that policy check now refuses, built by hand as older
	// releases loaded them: the decision's own check must still keep the
	// pods valid (admitted unchanged, reason invalid-result).
	mapped := policy.Default()
	mapped.NodeLocalDNS = netip.MustParseAddr("::ffff:169.254.20.10")
	loaded["hand-built: IPv4-mapped node-local"] = mapped
	long := policy.Default()
	long.ClusterDomain = strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 63)
	loaded["hand-built: domain too long for the namespace search"] = long
	var checked, mutated int
	for pname, pol := range loaded {
		for _, nsName := range []string{longNS, shortNS} {
			for _, profile := range []string{"resilient", "nodelocal"} {
				ns := policy.Namespace{Name: nsName, Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled, policy.ProfileLabel: profile}}
				for podName, mod := range pods {
					p := newPod(nsName, mod)
					if err := dryRunCreate(p); err != nil {
						t.Fatalf("the unmodified pod %q is already invalid: %v", podName, err)
					}
					d := policy.Decide(p, ns, pol, netip.MustParseAddr("10.96.0.10"))
					out := p.DeepCopy()
					d.Apply(&out.Annotations, &out.Spec)
					checked++
					if d.Action == policy.Mutate {
						mutated++
					}
					if err := dryRunCreate(out); err != nil {
						t.Errorf("policy %q, namespace %d chars, profile %s, pod %q: decision %s/%s gives a pod kube-apiserver rejects: %v",
							pname, len(nsName), profile, podName, d.Action, d.Reason, err)
					}
				}
			}
		}
	}
	t.Logf("%d decisions (%d mutating) accepted by kube-apiserver", checked, mutated)
	if mutated < checked/3 {
		t.Errorf("only %d of %d decisions mutate: the table no longer exercises the changes", mutated, checked)
	}
}

func opts(words ...string) []corev1.PodDNSConfigOption {
	out := make([]corev1.PodDNSConfigOption, len(words))
	for i, w := range words {
		name, value, ok := strings.Cut(w, ":")
		out[i].Name = name
		if ok {
			out[i].Value = &value
		}
	}
	return out
}

// policy.ValidatePodDNS, the check the webhook and mutate make before
// answering, agrees with the real kube-apiserver on valid and invalid
// dnsPolicy/dnsConfig pairs.
func TestValidatePodDNSAgreesWithAPIServer(t *testing.T) {
	ns := plainNamespace(t, "edge-validate")
	cases := map[string]func(*corev1.Pod){
		"none without config": func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSNone },
		"none without nameservers": func(p *corev1.Pod) {
			p.Spec.DNSPolicy, p.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Searches: []string{"a"}}
		},
		"none with one": func(p *corev1.Pod) {
			p.Spec.DNSPolicy, p.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.1"}}
		},
		"four nameservers": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"}}
		},
		"IPv4-mapped": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"::ffff:169.254.20.10"}}
		},
		"leading zeros":                  func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"010.1.1.1"}} },
		"unspecified (valid to the API)": func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"0.0.0.0"}} },
		"non-canonical IPv6": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"FD00:0:0:0:0:0:0:10"}}
		},
		"33 searches": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: strings.Split(strings.Repeat("a,", 32)+"a", ",")}
		},
		"32 searches": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: strings.Split(strings.Repeat("a,", 31)+"a", ",")}
		},
		"2049 characters": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{strings.Repeat("a.", 500), strings.Repeat("b.", 524) + "b"}}
		},
		"a search of 254 characters": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 62)}}
		},
		"search of 253 characters": func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)}}
		},
		"uppercase search":  func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"Corp.example"}} },
		"dot search":        func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"."}} },
		"underscore search": func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"_tcp.example"}} },
		"empty option name": func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{}}} },
		"valid options":     func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: opts("ndots:2", "edns0")} },
	}
	for name, mod := range cases {
		p := newPod(ns, mod)
		ours := policy.ValidatePodDNS(p.Spec.DNSPolicy, p.Spec.DNSConfig)
		theirs := dryRunCreate(p)
		if (len(ours) == 0) != (theirs == nil) {
			t.Errorf("%s: ValidatePodDNS = %v, kube-apiserver = %v", name, ours, theirs)
		}
	}
}
