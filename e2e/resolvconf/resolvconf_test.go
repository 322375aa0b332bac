package resolvconf

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var cluster = Cluster{
	DNS:    []string{"10.96.0.10"},
	Domain: "cluster.local",
	Host:   Parse("# node\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
}

func s(v string) *string { return &v }

func TestForPod(t *testing.T) {
	tests := []struct {
		name string
		spec corev1.PodSpec
		want string
	}{
		{"ClusterFirst", corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst},
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"unset is ClusterFirst", corev1.PodSpec{},
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"hostNetwork ClusterFirst uses the node", corev1.PodSpec{HostNetwork: true},
			"search corp.example\nnameserver 192.0.2.53\noptions edns0\n"},
		{"hostNetwork ClusterFirstWithHostNet", corev1.PodSpec{HostNetwork: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet},
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"Default", corev1.PodSpec{DNSPolicy: corev1.DNSDefault}, "search corp.example\nnameserver 192.0.2.53\noptions edns0\n"},
		{"dnstune resilient options merge over ndots:5", corev1.PodSpec{DNSConfig: &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{
			{Name: "ndots", Value: s("2")}, {Name: "timeout", Value: s("1")}, {Name: "attempts", Value: s("2")}, {Name: "single-request-reopen"}}}},
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:2 timeout:1 attempts:2 single-request-reopen\n"},
		{"None with dnstune nodelocal", corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{
			Nameservers: []string{"169.254.20.10", "10.96.0.10"},
			Searches:    []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: s("2")}}}},
			"search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.20.10\nnameserver 10.96.0.10\noptions ndots:2\n"},
		{"extra nameservers deduplicated and cut at 3", corev1.PodSpec{DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{"10.96.0.10", "1.1.1.1", "8.8.8.8", "9.9.9.9"}}},
			"search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:5\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ForPod(&corev1.Pod{Spec: tt.spec}, "shop", cluster).String()
			if got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestNoClusterDNSFallsBackToHost(t *testing.T) {
	c := cluster
	c.DNS = nil
	if got := ForPod(&corev1.Pod{}, "shop", c).String(); !strings.Contains(got, "nameserver 192.0.2.53") {
		t.Fatalf("got %q", got)
	}
}

func TestSearchLimits(t *testing.T) {
	var searches []string
	for range 40 {
		searches = append(searches, strings.Repeat("x", 60)+".example")
	}
	got := ForPod(&corev1.Pod{Spec: corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{Searches: searches}}}, "shop", cluster)
	if len(got.Searches) > MaxSearches || len(strings.Join(got.Searches, " ")) > MaxSearchLength {
		t.Fatalf("limits not applied: %d searches, %d chars", len(got.Searches), len(strings.Join(got.Searches, " ")))
	}
}
