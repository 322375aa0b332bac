package node

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Verdict is what the agent concludes about the node-local cache from its
// probes.
type Verdict int

const (
	// VerdictUnknown is the verdict until DefaultProbesToChange probes agree.
	VerdictUnknown Verdict = iota
	// VerdictUp means the cache answers.
	VerdictUp
	// VerdictDown means the cache does not answer.
	VerdictDown
)

func (v Verdict) String() string {
	switch v {
	case VerdictUp:
		return "up"
	case VerdictDown:
		return "down"
	default:
		return "unknown"
	}
}

// DefaultProbesToChange is the hysteresis: the verdict changes after this
// many probes in a row disagree with it (a cache counts as down after two
// failed probes and as up after two good ones), so one lost probe packet
// does not flip the Node's condition.
const DefaultProbesToChange = 2

// hysteresis turns probe results into a verdict.
type hysteresis struct {
	need int
	run  int  // probes in a row with the same result
	last bool // that result
	v    Verdict
}

// observe records one probe; it returns the verdict and whether it changed.
func (h *hysteresis) observe(up bool) (Verdict, bool) {
	if h.run > 0 && up == h.last {
		h.run++
	} else {
		h.run, h.last = 1, up
	}
	want := VerdictDown
	if up {
		want = VerdictUp
	}
	if h.v != want && h.run >= h.need {
		h.v = want
		return h.v, true
	}
	return h.v, false
}

// settled says whether the last probe agreed with the verdict (else the
// next probe comes sooner, to confirm the change).
func (h *hysteresis) settled() bool {
	return h.run > 0 && (h.v == VerdictUp) == h.last && h.v != VerdictUnknown
}

// ConditionType is the Node condition the agent keeps: status True while
// the node-local cache answers at the policy's address, False while it does
// not (reason NoAnswer, or Covered while the agent answers there itself),
// Unknown until the probes agree.
const ConditionType corev1.NodeConditionType = "dnstune.io/NodeLocalDNS"

// Condition reasons.
const (
	ReasonAnswers  = "Answers"
	ReasonNoAnswer = "NoAnswer"
	ReasonCovered  = "Covered"
	ReasonProbing  = "Probing"
)

// WellKnownAddress is a node-local DNS address some platform uses.
type WellKnownAddress struct {
	Address  string
	Platform string
}

// DefaultWellKnown are the node-local addresses the agent probes besides
// the policy's, so that a cluster whose cache answers elsewhere says where:
// upstream NodeLocal DNSCache (and GKE's), and AKS LocalDNS's pod and node
// addresses.
var DefaultWellKnown = []WellKnownAddress{
	{"169.254.20.10", "NodeLocal DNSCache"},
	{"169.254.10.11", "AKS LocalDNS (pod traffic)"},
	{"169.254.10.10", "AKS LocalDNS (node traffic)"},
}

// CacheStatus is what the agent knows about the node's cache: the
// content of its Node condition.
type CacheStatus struct {
	// Address is the policy's nodeLocalDNS, host:port.
	Address string
	Verdict Verdict
	// Last is the last probe's result at Address.
	Last ProbeResult
	// Failures is how many probes in a row failed.
	Failures int
	// Covering: the agent answers at Address, forwarding to Upstream.
	Covering bool
	Upstream string
	// Answering lists the well-known addresses that answered the last
	// probe, as "address (platform)".
	Answering []string
}

// Condition is the Node condition for s; since is when its status last
// changed.
func (s CacheStatus) Condition(since, now time.Time) corev1.NodeCondition {
	c := corev1.NodeCondition{Type: ConditionType, LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(since)}
	wk := "none"
	if len(s.Answering) > 0 {
		wk = strings.Join(s.Answering, ", ")
	}
	switch {
	case s.Verdict == VerdictUp && !s.Last.Up:
		// One failed probe does not change the verdict (hysteresis); say so.
		c.Status, c.Reason = corev1.ConditionTrue, ReasonAnswers
		c.Message = fmt.Sprintf("node-local DNS cache %s answered until the last probe, which failed (%s); probing again", s.Address, s.Last.Detail)
	case s.Verdict == VerdictUp:
		c.Status, c.Reason = corev1.ConditionTrue, ReasonAnswers
		c.Message = fmt.Sprintf("node-local DNS cache %s answers (%s in %s)", s.Address, s.Last.Detail, s.Last.Duration.Round(time.Microsecond))
	case s.Verdict == VerdictDown && s.Covering:
		c.Status, c.Reason = corev1.ConditionFalse, ReasonCovered
		c.Message = fmt.Sprintf("node-local DNS cache %s does not answer (last failure: %s); dnstune answers there, forwarding to kube-dns at %s, until the cache listens again", s.Address, s.Last.Detail, s.Upstream)
	case s.Verdict == VerdictDown:
		c.Status, c.Reason = corev1.ConditionFalse, ReasonNoAnswer
		c.Message = fmt.Sprintf("node-local DNS cache %s does not answer (last failure: %s, %d probes in a row)", s.Address, s.Last.Detail, s.Failures)
	default:
		c.Status, c.Reason = corev1.ConditionUnknown, ReasonProbing
		c.Message = fmt.Sprintf("probing node-local DNS cache %s (last: %s)", s.Address, s.Last.Detail)
	}
	c.Message += wellKnownPrefix + wk
	return c
}

// wellKnownPrefix ends the condition's message, before the well-known
// addresses that answer ("none", or "address (platform), …").
const wellKnownPrefix = "; well-known node-local addresses answering: "

// AnsweringInCondition returns the well-known addresses a condition's
// message says answer (the agent's Condition writes them).
func AnsweringInCondition(c corev1.NodeCondition) []string {
	_, list, ok := strings.Cut(c.Message, wellKnownPrefix)
	if !ok || list == "none" {
		return nil
	}
	var out []string
	for _, item := range strings.Split(list, "), ") {
		if a, _, ok := strings.Cut(item, " ("); ok && a != "" {
			out = append(out, a)
		}
	}
	return out
}
