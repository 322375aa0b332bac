//go:build e2e

package kubenode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/dnstune/dnstune/e2e/framework"
)

// lookupNames are the name forms pods use: a Service by its short name (in
// the pod's own namespace), name.namespace, name.namespace.svc, and an
// external FQDN.
var lookupNames = []string{ServiceName, ServiceName + "." + ServiceNamespace, ServiceName + "." + ServiceNamespace + ".svc", ExternalName}

// resolverClient is one client Deployment of the resolver table.
type resolverClient struct {
	ns, app, image, binary string
	dnsConfig              *corev1.PodDNSConfig // the pod's own, beside dnstune's
	label                  string
}

// lookupResult is one row of the table.
type lookupResult struct {
	client  resolverClient
	name    string
	ok      bool
	answer  string
	queries float64
}

func corednsQueries(t *testing.T, c *Cluster) float64 {
	t.Helper()
	return kubeDNSMetric(t, c, "coredns_dns_requests_total", nil) // absent before the first query
}

// stepResolvers runs getaddrinfo from glibc and musl in running pods
// against CoreDNS (a pod behind the kube-dns Service), plain and with
// dnstune, and counts the queries each lookup sends.
func stepResolvers(t *testing.T, ctx context.Context, c *Cluster) {
	clients := []resolverClient{
		{ns: "e2e-plain", app: "glibc", image: GlibcClientImage, binary: "resolve-glibc", label: "plain (ndots:5)"},
		{ns: "e2e-plain", app: "musl", image: MuslClientImage, binary: "resolve-musl", label: "plain (ndots:5)"},
		{ns: "e2e-plain", app: "musl-ndots2", image: MuslClientImage, binary: "resolve-musl", label: "pod's own ndots:2, no dnstune",
			dnsConfig: &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}}}},
		{ns: "e2e-enabled", app: "glibc", image: GlibcClientImage, binary: "resolve-glibc", label: "dnstune resilient"},
		{ns: "e2e-enabled", app: "musl", image: MuslClientImage, binary: "resolve-musl", label: "dnstune resilient"},
	}
	for _, cl := range clients {
		d := ClientDeployment(cl.ns, cl.app, cl.image)
		d.Spec.Template.Spec.DNSConfig = cl.dnsConfig
		if err := c.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	var results []lookupResult
	for _, cl := range clients {
		if err := c.WaitDeploymentReady(ctx, cl.ns, cl.app, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		pod, err := c.RunningPod(ctx, cl.ns, cl.app)
		if err != nil {
			t.Fatal(err)
		}
		conf, text, err := c.ReadResolvConf(pod)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s/%s (%s): %s", cl.ns, cl.app, cl.label, strings.ReplaceAll(strings.TrimSpace(text), "\n", " | "))
		_ = conf
		for _, name := range lookupNames {
			before := corednsQueries(t, c)
			l := lookup(t, c, cl.ns, pod.Name, cl.binary, name)
			// CoreDNS counts a query when it answers; a lookup's last
			// answers may land a moment after the client returns.
			time.Sleep(100 * time.Millisecond)
			results = append(results, lookupResult{client: cl, name: name, ok: l.ok, answer: l.answer, queries: corednsQueries(t, c) - before})
		}
	}
	table := resolverTable(results, c.ProxyMode)
	t.Logf("lookups on the real node (kube-proxy %s mode):\n%s", c.ProxyMode, table)
	out := filepath.Join(framework.RepoRoot(), "bin", "node-resolvers-"+c.ProxyMode+".md")
	if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
		t.Error(err)
	}
	find := func(ns, app, name string) lookupResult {
		for _, r := range results {
			if r.client.ns == ns && r.client.app == app && r.name == name {
				return r
			}
		}
		t.Fatalf("no result for %s/%s %s", ns, app, name)
		return lookupResult{}
	}
	// Every form resolves, to the right address, for both libcs, with and
	// without dnstune: musl pods keep ndots (the profile's musl setting).
	for _, r := range results {
		want := ServiceIP
		if r.name == ExternalName {
			want = ExternalIP
		}
		if r.client.app == "musl-ndots2" {
			continue
		}
		if !r.ok || r.answer != want {
			t.Errorf("%s/%s (%s) %s: got %v %s, want %s", r.client.ns, r.client.app, r.client.label, r.name, r.ok, r.answer, want)
		}
	}
	// The finding that shaped the musl setting: musl with ndots:2 does not
	// fall back to the search list, so name.namespace.svc fails.
	if r := find("e2e-plain", "musl-ndots2", lookupNames[2]); r.ok {
		t.Errorf("musl with ndots:2 resolved %s (%s): the search-list finding no longer holds; revisit the musl profile setting", r.name, r.answer)
	}
	// What dnstune is for: fewer queries for an external name from glibc.
	plain, tuned := find("e2e-plain", "glibc", ExternalName), find("e2e-enabled", "glibc", ExternalName)
	if tuned.queries >= plain.queries {
		t.Errorf("glibc %s: %v queries with dnstune, %v without; the profile's ndots:2 should send fewer", ExternalName, tuned.queries, plain.queries)
	}
}

func resolverTable(rs []lookupResult, mode string) string {
	var b strings.Builder
	b.WriteString("| kube-proxy | namespace | libc | resolv.conf | name | result | queries |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		res := "ok " + r.answer
		if !r.ok {
			res = "**fails** (" + r.answer + ")"
		}
		libc := "glibc"
		if r.client.binary == "resolve-musl" {
			libc = "musl"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | `%s` | %s | %.0f |\n", mode, r.client.ns, libc, r.client.label, r.name, res, r.queries)
	}
	return b.String()
}
