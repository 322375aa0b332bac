package policy

import (
	"strconv"
	"strings"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

// Warning is the text of a warning Decide gives, with named slots
// ({namespace}, {container}, ...), written once: Decide fills the slots
// with values (Text), and the compiled admission policies with CEL
// expressions (admissionpolicy renders each Warning as CEL), so both
// backends give the same words.
type Warning string

// The warnings and the slots each has. Their words are what users see in
// kubectl's output, the audit annotations and the PolicyReports.
var (
	// WarnUnknownProfile: {namespace}, {profile}.
	WarnUnknownProfile = Warning(`dnstune: namespace {namespace} names profile "{profile}", which the policy does not define; pod left unchanged`)
	// WarnMuslSingleRequestReopen: {container}, {image}.
	WarnMuslSingleRequestReopen = Warning(muslPrefix + `musl ignores single-request-reopen; use the ` + v1alpha1.NodeLocalProfileName + ` profile (node-local DNS cache) to avoid 5-second DNS stalls`)
	// WarnMuslNdotsKept: {container}, {image}, {profile}, {ndots}.
	WarnMuslNdotsKept = Warning(muslPrefix + `this pod gets ndots:` + kubeletNdots + `, not profile {profile}'s ndots:{ndots}, because with a lower ndots musl fails name.namespace.svc lookups (it does not fall back to the search list); profile {profile}'s musl: apply gives it ndots:{ndots} anyway`)
	// WarnMuslOwnNdots: {container}, {image}, {ndots} (the pod's own).
	WarnMuslOwnNdots = Warning(muslPrefix + `this pod sets ndots:{ndots} itself, which dnstune keeps, and with it musl fails name.namespace.svc lookups (it does not fall back to the search list); remove the pod's ndots option or set it to ` + kubeletNdots)
	// WarnTooManyNameservers: {count}.
	WarnTooManyNameservers = Warning(`dnstune: nameservers would number {count}, over the limit of ` + maxNameservers + `; pod left unchanged`)
	// WarnTooManySearches: {count}.
	WarnTooManySearches = Warning(`dnstune: searches would number {count}, over the limit of ` + maxSearches + `; pod left unchanged`)
	// WarnSearchListTooLong: {count} (characters).
	WarnSearchListTooLong = Warning(`dnstune: the search list would be {count} characters, over the limit of ` + maxSearchListChars + `; pod left unchanged`)
	// WarnAudit: {change} (Decision.Summary).
	WarnAudit = Warning(`dnstune audit: would apply {change}`)
)

var (
	muslPrefix         = `dnstune: container "{container}" uses "{image}", which looks musl-based (Alpine): `
	kubeletNdots       = strconv.Itoa(v1alpha1.KubeletNdots)
	maxNameservers     = strconv.Itoa(MaxNameservers)
	maxSearches        = strconv.Itoa(MaxSearches)
	maxSearchListChars = strconv.Itoa(MaxSearchListChars)
)

// Text is w with its slots filled: pairs of slot name and value, as in
// w.Text("namespace", ns, "profile", p).
func (w Warning) Text(slotValues ...string) string {
	pairs := make([]string, 0, len(slotValues))
	for i := 0; i+1 < len(slotValues); i += 2 {
		pairs = append(pairs, "{"+slotValues[i]+"}", slotValues[i+1])
	}
	return strings.NewReplacer(pairs...).Replace(string(w))
}

// Parts splits w into its literal text and its slots, in order: odd
// indexes are slot names. admissionpolicy builds its CEL from them.
func (w Warning) Parts() []string {
	var parts []string
	rest := string(w)
	for {
		i := strings.IndexByte(rest, '{')
		j := strings.IndexByte(rest[max(i, 0):], '}')
		if i < 0 || j < 0 {
			return append(parts, rest)
		}
		parts = append(parts, rest[:i], rest[i+1:i+j])
		rest = rest[i+j+1:]
	}
}
