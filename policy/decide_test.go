package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

var (
	enabledNS   = Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled}}
	auditNS     = Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectAudit}}
	kubeDNSAddr = netip.MustParseAddr("10.96.0.10")
)

func opt(name string, v ...string) corev1.PodDNSConfigOption {
	o := corev1.PodDNSConfigOption{Name: name}
	if len(v) > 0 {
		o.Value = &v[0]
	}
	return o
}

func pod(mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			DNSPolicy:  corev1.DNSClusterFirst,
			Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}},
		},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func resilientOpts() []corev1.PodDNSConfigOption {
	return []corev1.PodDNSConfigOption{opt("ndots", "2"), opt("timeout", "1"), opt("attempts", "3"), opt("single-request-reopen")}
}

func withProfiles(pol *Policy) *Policy {
	pol.Profiles["audited"] = &Profile{Name: "audited", Mode: v1alpha1.ModeOptions, Options: Options{Ndots: intPtr(3)}}
	pol.Rules = []Rule{
		{Namespaces: []string{"payments-*"}, Profile: "nodelocal"},
		{Namespaces: []string{"legacy"}, Profile: "audited", Enforcement: v1alpha1.Audit},
	}
	return pol
}

func osAffinity(terms ...[]string) *corev1.Affinity {
	sel := &corev1.NodeSelector{}
	for _, values := range terms {
		sel.NodeSelectorTerms = append(sel.NodeSelectorTerms, corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: OSLabel, Operator: corev1.NodeSelectorOpIn, Values: values},
		}})
	}
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: sel}}
}

func TestRunsOnWindows(t *testing.T) {
	tests := []struct {
		name string
		spec corev1.PodSpec
		want bool
	}{
		{"plain", corev1.PodSpec{}, false},
		{"os linux", corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Linux}}, false},
		{"os windows", corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Windows}}, true},
		{"nodeSelector linux", corev1.PodSpec{NodeSelector: map[string]string{OSLabel: "linux"}}, false},
		{"nodeSelector windows", corev1.PodSpec{NodeSelector: map[string]string{OSLabel: "windows"}}, true},
		{"affinity windows only", corev1.PodSpec{Affinity: osAffinity([]string{"windows"})}, true},
		{"affinity windows or linux", corev1.PodSpec{Affinity: osAffinity([]string{"windows", "linux"})}, false},
		{"one term windows, another linux", corev1.PodSpec{Affinity: osAffinity([]string{"windows"}, []string{"linux"})}, false},
		{"affinity without terms", corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{}}}}, false},
		{"preferred windows only is not required", corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 1, Preference: corev1.NodeSelectorTerm{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: OSLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"windows"}}}}}}}}}, false},
	}
	for _, tt := range tests {
		if got := RunsOnWindows(&tt.spec); got != tt.want {
			t.Errorf("%s: RunsOnWindows = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecideSkips(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
		ns   Namespace
		pol  func(*Policy)
		want Reason
	}{
		{"namespace without label", pod(), Namespace{Name: "shop"}, nil, ReasonNotOptedIn},
		{"namespace label other value", pod(), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: "yes"}}, nil, ReasonNotOptedIn},
		{"excluded namespace even when labelled", pod(), Namespace{Name: "kube-system", Labels: enabledNS.Labels}, nil, ReasonNamespaceExcluded},
		{"policy's own exclude list", pod(), enabledNS, func(p *Policy) { p.ExcludeNamespaces = []string{"shop"} }, ReasonNamespaceExcluded},
		{"pod opts out", pod(func(p *corev1.Pod) { p.Labels[InjectLabel] = InjectDisabled }), enabledNS, nil, ReasonPodOptOut},
		{"kube-dns pod", pod(func(p *corev1.Pod) { p.Labels["k8s-app"] = "kube-dns" }), enabledNS, nil, ReasonDNSServer},
		{"node-local-dns pod", pod(func(p *corev1.Pod) { p.Labels["k8s-app"] = "node-local-dns" }), enabledNS, nil, ReasonDNSServer},
		{"dnsPolicy Default", pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }), enabledNS, nil, ReasonDNSPolicyDefault},
		{"dnsPolicy None", pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSNone }), enabledNS, nil, ReasonDNSPolicyNone},
		{"hostNetwork with ClusterFirst", pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), enabledNS, nil, ReasonHostNetwork},
		{"hostNetwork with empty dnsPolicy", pod(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, "" }), enabledNS, nil, ReasonHostNetwork},
		{"unknown profile label", pod(), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "fast"}}, nil, ReasonUnknownProfile},
		{"nodelocal without cluster DNS", pod(), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}, nil, ReasonNoClusterDNS},
		{"pod already has every option", pod(func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} }), enabledNS, nil, ReasonAlreadyConfigured},
		{"pod sets its own values for every option", pod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{opt("ndots", "5"), opt("timeout", "3"), opt("attempts", "3"), opt("single-request-reopen")}}
		}), enabledNS, nil, ReasonAlreadyConfigured},
		{"windows by spec.os", pod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }), enabledNS, nil, ReasonWindows},
		{"windows by nodeSelector", pod(func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{OSLabel: "windows"} }), enabledNS, nil, ReasonWindows},
		{"windows by required node affinity", pod(func(p *corev1.Pod) { p.Spec.Affinity = osAffinity([]string{"windows"}, []string{"windows"}) }), enabledNS, nil, ReasonWindows},
		{"windows pod in nodelocal namespace", pod(func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} }),
			Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}, func(p *Policy) { p.ClusterDNS = kubeDNSAddr }, ReasonWindows},
		{"pod's own search is invalid", pod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"Bad..Domain"}}
		}), enabledNS, nil, ReasonInvalidResult},
		{"pod's own nameserver is IPv4-mapped (nodelocal)", pod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"::ffff:1.1.1.1"}}
		}), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}, func(p *Policy) { p.ClusterDNS = kubeDNSAddr }, ReasonInvalidResult},
		{"pod's own option has no name", pod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: ""}}}
		}), enabledNS, nil, ReasonInvalidResult},
		{"nodelocal search too long for a DNS name (policy built by hand)", pod(), Namespace{Name: strings.Repeat("n", 63), Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}},
			func(p *Policy) {
				p.ClusterDNS, p.ClusterDomain = kubeDNSAddr, strings.Repeat("d", 63)+"."+strings.Repeat("e", 63)+"."+strings.Repeat("f", 63)
			}, ReasonInvalidResult},
		{"IPv4-mapped node-local address (policy built by hand)", pod(), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}},
			func(p *Policy) {
				p.ClusterDNS, p.NodeLocalDNS = kubeDNSAddr, netip.MustParseAddr("::ffff:169.254.20.10")
			}, ReasonInvalidResult},
		{"nodelocal over the nameserver limit", pod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "8.8.8.8"}}
		}), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}, func(p *Policy) { p.ClusterDNS = kubeDNSAddr }, ReasonOverLimits},
		{"nodelocal over the search limit", pod(func(p *corev1.Pod) {
			s := make([]string, 30)
			for i := range s {
				s[i] = fmt.Sprintf("d%d.example", i)
			}
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: s}
		}), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}, func(p *Policy) { p.ClusterDNS = kubeDNSAddr }, ReasonOverLimits},
		{"nodelocal over the search length limit", pod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63), strings.Repeat("x", 2000)}}
		}), Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}, func(p *Policy) { p.ClusterDNS = kubeDNSAddr }, ReasonOverLimits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := Default()
			if tt.pol != nil {
				tt.pol(pol)
			}
			before := tt.pod.DeepCopy()
			d := Decide(tt.pod, tt.ns, pol, netip.Addr{})
			if d.Action != Skip || d.Reason != tt.want {
				t.Fatalf("got %s/%s, want skip/%s", d.Action, d.Reason, tt.want)
			}
			if d.ChangesDNS() || d.SetProfileAnnotation {
				t.Errorf("skip decision carries changes: %+v", d)
			}
			if !reflect.DeepEqual(before, tt.pod) {
				t.Errorf("Decide modified its input")
			}
		})
	}
}

func TestDecideMutations(t *testing.T) {
	nodelocalNS := Namespace{Name: "shop", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "nodelocal"}}
	tests := []struct {
		name     string
		pod      *corev1.Pod
		ns       Namespace
		pol      *Policy
		dns      netip.Addr
		want     func(*corev1.Pod)
		action   Action
		reason   Reason
		profile  string
		warnings []string
	}{
		{
			name: "options mode adds every option", pod: pod(), ns: enabledNS, pol: Default(), action: Mutate, profile: "resilient",
			want: func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} },
		},
		{
			name: "empty dnsPolicy is ClusterFirst", pod: pod(func(p *corev1.Pod) { p.Spec.DNSPolicy = "" }), ns: enabledNS, pol: Default(), action: Mutate, profile: "resilient",
			want: func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} },
		},
		{
			name: "hostNetwork with ClusterFirstWithHostNet", action: Mutate, profile: "resilient", ns: enabledNS, pol: Default(),
			pod:  pod(func(p *corev1.Pod) { p.Spec.HostNetwork, p.Spec.DNSPolicy = true, corev1.DNSClusterFirstWithHostNet }),
			want: func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} },
		},
		{
			name: "pod's own options win, nameservers and searches kept", action: Mutate, profile: "resilient", ns: enabledNS, pol: Default(),
			pod: pod(func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"corp.example"}, Options: []corev1.PodDNSConfigOption{opt("ndots", "1"), opt("edns0")}}
			}),
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig.Options = []corev1.PodDNSConfigOption{opt("ndots", "1"), opt("edns0"), opt("timeout", "1"), opt("attempts", "3"), opt("single-request-reopen")}
			},
		},
		{
			name: "nodelocal mode with discovered cluster DNS", action: Mutate, profile: "nodelocal", ns: nodelocalNS, pol: Default(), dns: kubeDNSAddr,
			pod: pod(),
			want: func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"169.254.20.10", "10.96.0.10"},
					Searches:    []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"},
					Options:     []corev1.PodDNSConfigOption{opt("ndots", "2"), opt("timeout", "1"), opt("attempts", "2")},
				}
			},
		},
		{
			name: "nodelocal mode: policy clusterDNS beats discovery, pod's extras kept after ours", action: Mutate, profile: "nodelocal", ns: nodelocalNS,
			pol: func() *Policy {
				p := Default()
				p.ClusterDNS = netip.MustParseAddr("10.0.0.10")
				p.ClusterDomain = "corp.local"
				return p
			}(), dns: kubeDNSAddr,
			pod: pod(func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"corp.example", "svc.corp.local"}, Options: []corev1.PodDNSConfigOption{opt("timeout", "3")}}
			}),
			want: func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"169.254.20.10", "10.0.0.10"},
					Searches:    []string{"shop.svc.corp.local", "svc.corp.local", "corp.local", "corp.example"},
					Options:     []corev1.PodDNSConfigOption{opt("timeout", "3"), opt("ndots", "2"), opt("attempts", "2")},
				}
			},
		},
		{
			name: "rule glob chooses nodelocal", action: Mutate, profile: "nodelocal", pol: withProfiles(Default()), dns: kubeDNSAddr,
			ns: Namespace{Name: "payments-eu", Labels: enabledNS.Labels}, pod: pod(),
			want: func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"169.254.20.10", "10.96.0.10"},
					Searches:    []string{"payments-eu.svc.cluster.local", "svc.cluster.local", "cluster.local"},
					Options:     []corev1.PodDNSConfigOption{opt("ndots", "2"), opt("timeout", "1"), opt("attempts", "2")},
				}
			},
		},
		{
			name: "namespace profile label beats rules", action: Mutate, profile: "resilient", pol: withProfiles(Default()),
			ns: Namespace{Name: "payments-eu", Labels: map[string]string{InjectLabel: InjectEnabled, ProfileLabel: "resilient"}}, pod: pod(),
			want: func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} },
		},
		{
			name: "rule selector matches labels", action: Mutate, profile: "audited-enforced",
			pol: func() *Policy {
				p := Default()
				p.Profiles["audited-enforced"] = &Profile{Name: "audited-enforced", Mode: v1alpha1.ModeOptions, Options: Options{Ndots: intPtr(3)}}
				sel, _ := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"team": "legacy"}})
				p.Rules = []Rule{{Selector: sel, Profile: "audited-enforced"}}
				return p
			}(),
			ns: Namespace{Name: "old", Labels: map[string]string{InjectLabel: InjectEnabled, "team": "legacy"}}, pod: pod(),
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{opt("ndots", "3")}}
			},
		},
		{
			name: "namespace audit label: nothing changes", action: AuditOnly, profile: "resilient", ns: auditNS, pol: Default(), pod: pod(),
			warnings: []string{"dnstune audit: would apply profile resilient (options): add options ndots:2 timeout:1 attempts:3 single-request-reopen"},
		},
		{
			name: "rule enforcement audit", action: AuditOnly, profile: "audited", pol: withProfiles(Default()), pod: pod(),
			ns:       Namespace{Name: "legacy", Labels: enabledNS.Labels},
			warnings: []string{"dnstune audit: would apply profile audited (options): add options ndots:3"},
		},
		{
			name: "global audit", action: AuditOnly, profile: "resilient", ns: enabledNS, pod: pod(),
			pol:      func() *Policy { p := Default(); p.Enforcement = v1alpha1.Audit; return p }(),
			warnings: []string{"dnstune audit: would apply"},
		},
		{
			name: "musl image: ndots kept (musl: keepNdots, the default), and warned", action: Mutate, profile: "resilient", ns: enabledNS, pol: Default(),
			pod:  pod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "docker.io/library/alpine:3.20" }),
			want: func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()[1:]} },
			warnings: []string{
				`dnstune: container "app" uses "docker.io/library/alpine:3.20", which looks musl-based (Alpine): musl ignores single-request-reopen`,
				`dnstune: container "app" uses "docker.io/library/alpine:3.20", which looks musl-based (Alpine): this pod gets ndots:5, not profile resilient's ndots:2, because with a lower ndots musl fails name.namespace.svc lookups (it does not fall back to the search list); profile resilient's musl: apply gives it ndots:2 anyway`,
			},
		},
		{
			name: "musl init container counts too", action: Mutate, profile: "resilient", ns: enabledNS, pol: Default(),
			pod: pod(func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "alpine"}}
			}),
			want:     func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()[1:]} },
			warnings: []string{`dnstune: container "init" uses "alpine"`, `dnstune: container "init" uses "alpine", which looks musl-based (Alpine): this pod gets ndots:5, not profile resilient's ndots:2`},
		},
		{
			name: "musl image, musl: apply", action: Mutate, profile: "resilient", ns: enabledNS,
			pol:      func() *Policy { p := Default(); p.Profiles["resilient"].Musl = v1alpha1.MuslApply; return p }(),
			pod:      pod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "python:3.12-alpine" }),
			want:     func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} },
			warnings: []string{`dnstune: container "app" uses "python:3.12-alpine", which looks musl-based (Alpine): musl ignores single-request-reopen`},
		},
		{
			name: "musl image, musl: skip", action: Skip, reason: ReasonMusl, profile: "resilient", ns: enabledNS,
			pol: func() *Policy { p := Default(); p.Profiles["resilient"].Musl = v1alpha1.MuslSkip; return p }(),
			pod: pod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "alpine:3.20" }),
		},
		{
			name: "musl image, nodelocal: ndots:5 set (dnsPolicy None has no kubelet ndots)", action: Mutate, profile: "nodelocal", ns: nodelocalNS, pol: Default(), dns: kubeDNSAddr,
			pod: pod(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "alpine:3.20" }),
			want: func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"169.254.20.10", "10.96.0.10"},
					Searches:    []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"},
					Options:     []corev1.PodDNSConfigOption{opt("ndots", "5"), opt("timeout", "1"), opt("attempts", "2")},
				}
			},
			warnings: []string{`dnstune: container "app" uses "alpine:3.20", which looks musl-based (Alpine): this pod gets ndots:5, not profile nodelocal's ndots:2, because with a lower ndots musl fails name.namespace.svc lookups (it does not fall back to the search list); profile nodelocal's musl: apply gives it ndots:2 anyway`},
		},
		{
			// The pod's own ndots wins: the warning says what it really
			// gets (it once said "ndots kept at 5" here).
			name: "musl image with its own ndots:2: the warning names the pod's value", action: Mutate, profile: "resilient", ns: enabledNS, pol: Default(),
			pod: pod(func(p *corev1.Pod) {
				p.Spec.Containers[0].Image = "alpine:3.20"
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{opt("ndots", "2")}}
			}),
			want: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: append([]corev1.PodDNSConfigOption{opt("ndots", "2")}, resilientOpts()[1:]...)}
			},
			warnings: []string{
				`dnstune: container "app" uses "alpine:3.20", which looks musl-based (Alpine): musl ignores single-request-reopen`,
				`dnstune: container "app" uses "alpine:3.20", which looks musl-based (Alpine): this pod sets ndots:2 itself, which dnstune keeps, and with it musl fails name.namespace.svc lookups (it does not fall back to the search list); remove the pod's ndots option or set it to 5`,
			},
		},
		{
			name: "musl image with its own ndots:5: nothing to warn about ndots", action: Mutate, profile: "nodelocal", ns: nodelocalNS, pol: Default(), dns: kubeDNSAddr,
			pod: pod(func(p *corev1.Pod) {
				p.Spec.Containers[0].Image = "alpine:3.20"
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{opt("ndots", "6")}}
			}),
			want: func(p *corev1.Pod) {
				p.Spec.DNSPolicy = corev1.DNSNone
				p.Spec.DNSConfig = &corev1.PodDNSConfig{
					Nameservers: []string{"169.254.20.10", "10.96.0.10"},
					Searches:    []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"},
					Options:     []corev1.PodDNSConfigOption{opt("ndots", "6"), opt("timeout", "1"), opt("attempts", "2")},
				}
			},
		},
		{
			name: "annotation kept when already right", action: Mutate, profile: "resilient", ns: enabledNS, pol: Default(),
			pod:  pod(func(p *corev1.Pod) { p.Annotations = map[string]string{ProfileLabel: "resilient"} }),
			want: func(p *corev1.Pod) { p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: resilientOpts()} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.pod.DeepCopy()
			d := Decide(tt.pod, tt.ns, tt.pol, tt.dns)
			if d.Action != tt.action || d.Profile != tt.profile || d.Reason != tt.reason {
				t.Fatalf("got %s/%s profile %q, want %s/%s profile %q (warnings %q)", d.Action, d.Reason, d.Profile, tt.action, tt.reason, tt.profile, d.Warnings)
			}
			if !reflect.DeepEqual(in, tt.pod) {
				t.Fatalf("Decide modified its input")
			}
			if len(d.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %d", d.Warnings, len(tt.warnings))
			}
			for i, w := range tt.warnings {
				if !strings.HasPrefix(d.Warnings[i], w) {
					t.Errorf("warning %d = %q, want prefix %q", i, d.Warnings[i], w)
				}
			}
			got := tt.pod.DeepCopy()
			d.Apply(&got.Annotations, &got.Spec)
			want := tt.pod.DeepCopy()
			if tt.action == Mutate {
				tt.want(want)
				if want.Annotations == nil {
					want.Annotations = map[string]string{}
				}
				want.Annotations[ProfileLabel] = tt.profile
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("applied pod differs:\n got %+v\nwant %+v", got.Spec.DNSConfig, want.Spec.DNSConfig)
			}
			// Idempotence: a second pass over the output changes nothing.
			if tt.action == Mutate {
				if d2 := Decide(got, tt.ns, tt.pol, tt.dns); d2.Action != Skip {
					t.Fatalf("second pass: got %s (%v), want skip", d2.Action, d2.Changes)
				}
			}
		})
	}
}

func TestLooksMusl(t *testing.T) {
	for image, want := range map[string]bool{
		"alpine":                                true,
		"alpine:3.20":                           true,
		"docker.io/library/alpine@sha256:abc":   true,
		"python:3.12-alpine":                    true,
		"registry:5000/team/app:1.0-alpine3.19": true,
		"nginx:1.27":                            false,
		"registry:5000/alpine-tools/app":        false,
		"gcr.io/distroless/static":              false,
		"myalpine:latest":                       false,
	} {
		if got := LooksMusl(image); got != want {
			t.Errorf("LooksMusl(%q) = %v, want %v", image, got, want)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	pol := withProfiles(Default())
	p := pod()
	b.ReportAllocs()
	for b.Loop() {
		d := Decide(p, enabledNS, pol, kubeDNSAddr)
		if d.Action != Mutate {
			b.Fatal(d.Action)
		}
	}
}

func intPtr(i int) *int { return &i }
