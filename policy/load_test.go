package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

const validPolicy = `apiVersion: dnstune.io/v1alpha1
kind: Policy
clusterDomain: corp.local
clusterDNS: 10.96.0.10
nodeLocalDNS: 169.254.20.10
enforcement: enforce
defaultProfile: resilient
profiles:
  resilient:
    mode: options
    options: {ndots: 2, timeout: 1, attempts: 2, singleRequestReopen: true}
  nodelocal:
    mode: nodelocal
    options: {ndots: 2, timeout: 1, attempts: 2}
rules:
  - namespaces: ["payments-*"]
    profile: nodelocal
  - namespaceSelector: {matchLabels: {team: legacy}}
    profile: resilient
    enforcement: audit
excludeNamespaces: [kube-system, kube-public, kube-node-lease]
`

func TestLoadValid(t *testing.T) {
	pol, err := Load("policy.yaml", []byte(validPolicy))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if pol.ClusterDomain != "corp.local" {
		t.Errorf("clusterDomain = %q", pol.ClusterDomain)
	}
	if pol.ClusterDNS != netip.MustParseAddr("10.96.0.10") {
		t.Errorf("clusterDNS = %v", pol.ClusterDNS)
	}
	if got := pol.Profiles["resilient"].Options; *got.Ndots != 2 || *got.Timeout != 1 || *got.Attempts != 2 || !got.SingleRequestReopen {
		t.Errorf("resilient options = %+v", got)
	}
	if pol.Profiles["nodelocal"].Mode != v1alpha1.ModeNodeLocal {
		t.Errorf("nodelocal mode = %q", pol.Profiles["nodelocal"].Mode)
	}
	if len(pol.Rules) != 2 || pol.Rules[1].Enforcement != v1alpha1.Audit || pol.Rules[1].Selector == nil {
		t.Errorf("rules = %+v", pol.Rules)
	}
}

func TestLoadDefaults(t *testing.T) {
	pol, err := Load("p.yaml", []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\n"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	def := Default()
	if pol.ClusterDomain != def.ClusterDomain || pol.NodeLocalDNS != def.NodeLocalDNS || pol.Enforcement != v1alpha1.Enforce ||
		pol.DefaultProfile != "resilient" || pol.ClusterDNS.IsValid() {
		t.Errorf("defaults not applied: %+v", pol)
	}
	if len(pol.Profiles) != 2 || pol.Profiles["resilient"] == nil || pol.Profiles["nodelocal"] == nil {
		t.Errorf("built-in profiles missing: %v", pol.Profiles)
	}
	if strings.Join(pol.ExcludeNamespaces, ",") != "kube-system,kube-public,kube-node-lease" {
		t.Errorf("excludeNamespaces = %v", pol.ExcludeNamespaces)
	}
}

// TestLoadErrors proves each validation error names the right line, column and field.
func TestLoadErrors(t *testing.T) {
	const head = "apiVersion: dnstune.io/v1alpha1\nkind: Policy\n"
	tests := []struct {
		name string
		doc  string
		want []string // "line:col: field: message-substring"
	}{
		{"unknown top-level key", head + "clusterDomian: x\n", []string{"3:1: clusterDomian: unknown field"}},
		{"unknown nested key", head + "profiles:\n  resilient:\n    options:\n      ndot: 2\n", []string{"6:7: profiles.resilient.options.ndot: unknown field"}},
		{"ndots out of range", head + "defaultProfile: fast\nprofiles:\n  fast:\n    options:\n      ndots: 20\n",
			[]string{"7:14: profiles.fast.options.ndots: must be between 0 and 15, got 20"}},
		{"timeout zero", head + "defaultProfile: a\nprofiles:\n  a: {options: {timeout: 0}}\n", []string{"5:26: profiles.a.options.timeout: must be between 1 and 30, got 0"}},
		{"attempts too many", head + "defaultProfile: a\nprofiles:\n  a: {options: {attempts: 6}}\n", []string{"5:27: profiles.a.options.attempts: must be between 1 and 5, got 6"}},
		{"wrong type int", head + "defaultProfile: a\nprofiles:\n  a: {options: {ndots: two}}\n", []string{`5:24: profiles.a.options.ndots: must be an integer, got "two"`}},
		{"wrong type bool", head + "defaultProfile: a\nprofiles:\n  a: {options: {singleRequestReopen: yes}}\n", []string{`profiles.a.options.singleRequestReopen: must be true or false`}},
		{"bad mode", head + "defaultProfile: a\nprofiles:\n  a: {mode: fast}\n", []string{`5:13: profiles.a.mode: must be "options" or "nodelocal", got "fast"`}},
		{"bad ip", head + "nodeLocalDNS: 169.254.20\n", []string{`3:15: nodeLocalDNS: must be an IPv4 or IPv6 address, got "169.254.20"`}},
		{"bad cluster dns", head + "clusterDNS: kube-dns\n", []string{`3:13: clusterDNS: must be an IPv4 or IPv6 address`}},
		{"rule names missing profile", head + "rules:\n  - namespaces: [a]\n    profile: nope\n", []string{`5:14: rules[0].profile: no profile named "nope"`}},
		{"rule without profile", head + "rules:\n  - namespaces: [a]\n", []string{`4:5: rules[0].profile: required`}},
		{"rule with both matchers", head + "rules:\n  - namespaces: [a]\n    namespaceSelector: {matchLabels: {a: b}}\n    profile: resilient\n",
			[]string{`4:5: rules[0]: set exactly one of namespaces and namespaceSelector`}},
		{"bad glob", head + "rules:\n  - namespaces: [\"a[\"]\n    profile: resilient\n", []string{`4:18: rules[0].namespaces[0]: bad glob`}},
		{"bad selector operator", head + "rules:\n  - namespaceSelector:\n      matchExpressions: [{key: a, operator: Near}]\n    profile: resilient\n",
			[]string{`5:7: rules[0].namespaceSelector: invalid selector`}},
		{"duplicate profile", head + "profiles:\n  resilient: {}\n  resilient: {}\n", []string{`5:3: profiles.resilient: duplicate key`}},
		{"missing default profile", head + "defaultProfile: gone\n", []string{`3:17: defaultProfile: no profile named "gone"`}},
		{"profiles without resilient", head + "profiles:\n  a: {}\n", []string{`1:1: defaultProfile: no profile named "resilient"`}},
		{"bad enforcement", head + "enforcement: dry\n", []string{`3:14: enforcement: must be "enforce" or "audit", got "dry"`}},
		{"wrong apiVersion", "apiVersion: v1\nkind: Policy\n", []string{`1:13: apiVersion: must be "dnstune.io/v1alpha1"`}},
		{"missing kind", "apiVersion: dnstune.io/v1alpha1\n", []string{`1:1: kind: required`}},
		{"rules not a list", head + "rules: {a: b}\n", []string{`3:8: rules: must be a list of rules, got a mapping`}},
		{"empty file", "", []string{`1:1: empty policy`}},
		{"syntax error", head + "profiles: [\n", []string{`3:11: invalid YAML`}},
		// goccy counted a blank CRLF line twice: one line late after each.
		{"syntax error after blank CRLF lines", strings.ReplaceAll(head+"\n\n# c\nprofiles: @x\n", "\n", "\r\n"), []string{`6:11: invalid YAML: '@' is a reserved character`}},
		{"unclosed brace", head + "profiles:\n  fast: {mode: options\n  slow: {}\n", []string{`4:9: invalid YAML: "{" opened here is not closed`}},
		{"unclosed brace, nested", head + "profiles:\n  fast:\n    options: {ndots: 2, timeout: 1\n  slow: {}\n", []string{`5:14: invalid YAML: "{" opened here is not closed`}},
		{"unclosed bracket", head + "excludeNamespaces: [a, b\nprofiles: {}\n", []string{`3:20: invalid YAML: "[" opened here is not closed`}},
		{"extra brace", head + "profiles:\n  fast: {mode: options}}\n  slow: {}\n", []string{`4:24: invalid YAML: "}" closes nothing`}},
		{"unclosed double quote", head + "clusterDomain: \"abc\nprofiles: {}\n", []string{`3:16: invalid YAML`}},
		{"unclosed single quote", head + "profiles:\n  a: {mode: 'options}\n", []string{`4:13: invalid YAML`}},
		{"bad indentation", head + "profiles:\n  a: {}\n b: {}\n", []string{`5:2: invalid YAML`}},
		{"IPv4-mapped node-local address", head + "nodeLocalDNS: \"::ffff:169.254.20.10\"\n", []string{`3:15: nodeLocalDNS: must not be an IPv4-mapped IPv6 address (kube-apiserver rejects it in pod nameservers); write 169.254.20.10`}},
		{"IPv4-mapped cluster DNS", head + "clusterDNS: \"::ffff:10.96.0.10\"\n", []string{`3:13: clusterDNS: must not be an IPv4-mapped IPv6 address`}},
		{"unspecified IPv4", head + "nodeLocalDNS: 0.0.0.0\n", []string{`3:15: nodeLocalDNS: must not be the unspecified address`}},
		{"unspecified IPv6", head + "clusterDNS: \"::\"\n", []string{`3:13: clusterDNS: must not be the unspecified address`}},
		{"multicast", head + "nodeLocalDNS: 224.0.0.251\n", []string{`3:15: nodeLocalDNS: must not be a multicast address`}},
		{"zoned address", head + "nodeLocalDNS: fe80::1%eth0\n", []string{`3:15: nodeLocalDNS: must not have a zone`}},
		{"IPv6 link-local", head + "nodeLocalDNS: \"fe80::10\"\n", []string{`3:15: nodeLocalDNS: must not be an IPv6 link-local address`}},
		{"cluster domain too long for namespace searches", head + "clusterDomain: " + strings.Repeat("d", 62) + "." + strings.Repeat("e", 62) + "." + strings.Repeat("f", 62) + "\n",
			[]string{`3:16: clusterDomain: must be at most 185 characters`}},
		{"ndots in range as hex is a number", head + "defaultProfile: a\nprofiles:\n  a: {options: {ndots: 0x20}}\n", []string{`5:24: profiles.a.options.ndots: must be between 0 and 15, got 0x20 (32)`}},
		{"two documents", head + "---\nkind: Policy\n", []string{`3:1: a policy file holds exactly one YAML document`}},
		{"undefined alias, at the alias", head + "clusterDomain: *nosuch\n", []string{`3:16: invalid YAML: unknown anchor 'nosuch' referenced`}},
		{"clusterDomain label over 63 characters", head + "clusterDomain: " + strings.Repeat("a", 64) + ".local\n", []string{`3:16: clusterDomain: each label must be at most 63 characters`}},
		{"excludeNamespaces glob", head + "excludeNamespaces: [kube-system, \"kube-*\"]\n", []string{`3:34: excludeNamespaces[1]: must be a namespace name, not a pattern: excludeNamespaces takes exact names`}},
		{"excludeNamespaces with a slash", head + "excludeNamespaces:\n  - team/x\n", []string{`4:5: excludeNamespaces[0]: must be a namespace name (a lowercase DNS label of at most 63 characters)`}},
		{"excludeNamespaces too long", head + "excludeNamespaces: [" + strings.Repeat("n", 64) + "]\n", []string{`3:21: excludeNamespaces[0]: must be a namespace name (a lowercase DNS label of at most 63 characters): must be no more than 63 characters`}},
		{"excludeNamespaces upper case", head + "excludeNamespaces: [Kube-System]\n", []string{`3:21: excludeNamespaces[0]: must be a namespace name`}},
		{"several errors in file order", head + "nodeLocalDNS: x\nclusterDomain: Bad_Domain\n", []string{"3:15: nodeLocalDNS", "4:16: clusterDomain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("p.yaml", []byte(tt.doc))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want ErrorList, got %v", err)
			}
			if len(list) != len(tt.want) {
				t.Fatalf("want %d errors, got %d:\n%v", len(tt.want), len(list), err)
			}
			for i, want := range tt.want {
				if got := list[i].Error(); !strings.HasPrefix(got, "p.yaml:") || !strings.Contains(got, want) {
					t.Errorf("error %d = %q, want it to contain %q", i, got, want)
				}
			}
		})
	}
}

// YAML 1.1 integer forms are the numbers they are.
func TestLoadIntegerForms(t *testing.T) {
	for _, v := range []string{"0x2", "0o2", "+2", "2"} {
		pol, err := Load("p.yaml", []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles:\n  resilient: {options: {ndots: "+v+"}}\n"))
		if err != nil {
			t.Errorf("ndots: %s: %v", v, err)
			continue
		}
		if n := *pol.Profiles["resilient"].Options.Ndots; n != 2 {
			t.Errorf("ndots: %s loaded as %d", v, n)
		}
	}
}

// The longest cluster domain that fits is accepted.
func TestLoadClusterDomainAtLimit(t *testing.T) {
	d := strings.Repeat("d", 61) + "." + strings.Repeat("e", 61) + "." + strings.Repeat("f", 61) // 185
	if _, err := Load("p.yaml", []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nclusterDomain: "+d+"\n")); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(validPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(file); err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "failed to read policy") {
		t.Fatalf("want read error, got %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(validPolicy))
	f.Add([]byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles: {a: &x {mode: options}, b: *x}\n"))
	f.Add([]byte("[1, 2"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pol, err := Load("fuzz.yaml", data)
		if (pol == nil) == (err == nil) {
			t.Fatalf("want exactly one of policy and error, got %v and %v", pol, err)
		}
		if err == nil && pol.Profiles[pol.DefaultProfile] == nil {
			t.Fatalf("loaded policy without its default profile")
		}
	})
}

// The example policies for clusters that already run a node-local cache
// load, and point nodelocal pods at that cache's address.
func TestNodeLocalExamples(t *testing.T) {
	for file, want := range map[string]string{
		"../examples/nodelocal/nodelocaldns.yaml": "169.254.20.10",
		"../examples/nodelocal/aks-localdns.yaml": "169.254.10.11",
	} {
		p, err := LoadFile(file)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if got := p.NodeLocalDNS.String(); got != want {
			t.Errorf("%s: nodeLocalDNS %s, want %s", file, got, want)
		}
	}
}

// profiles: {} defines no profiles, so it gets the defaults, as its doc says.
func TestEmptyProfilesGetDefaults(t *testing.T) {
	p, err := Load("p.yaml", []byte("apiVersion: dnstune.io/v1alpha1\nkind: Policy\nprofiles: {}\n"))
	if err != nil {
		t.Fatalf("profiles: {} refused: %v", err)
	}
	if p.Profiles["resilient"] == nil || p.Profiles["nodelocal"] == nil || len(p.Profiles) != 2 {
		t.Errorf("profiles %v, want resilient and nodelocal", p.Profiles)
	}
}
