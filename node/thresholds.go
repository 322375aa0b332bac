// Package node is dnstune's node agent: it raises the kernel's neighbour
// (ARP/NDP) table thresholds, which are one table for every network
// namespace of a node, and watches how full that table is. Decisions
// (Plan, AutoRaise, ParseStat) are pure; Proc does the file I/O, against
// /proc or any tree laid out like it (--proc-root); Serve is the monitor's
// HTTP server and ForNode its Kubernetes Events and Node condition.
package node

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Thresholds are gc_thresh1, gc_thresh2 and gc_thresh3 of a neighbour table:
// below 1 the garbage collector leaves entries alone; above 2 it collects
// stale entries within 5 s; 3 is the hard cap, past which no entry can be
// added ("neighbor table overflow").
type Thresholds [3]int

// DefaultTargets are the thresholds dnstune raises to by default, as
// OpenShift's node tuning does: 8192 / 32768 / 65536. The kernel's own
// defaults are 128 / 512 / 1024. A neighbour entry costs the kernel ~400 B
// on x86-64 (struct neighbour plus its hardware-header cache), served from
// a 512-byte slab: 65536 entries cap the table at ~32 MiB, and memory is
// only used by entries that exist.
var DefaultTargets = Thresholds{8192, 32768, 65536}

// MaxThreshold is the largest value the kernel holds in a gc_thresh sysctl:
// they are C ints (proc_dointvec), so INT_MAX. A larger write fails or wraps.
const MaxThreshold = math.MaxInt32

func (t Thresholds) String() string {
	return fmt.Sprintf("%d,%d,%d", t[0], t[1], t[2])
}

// ParseThresholds reads "T1,T2,T3", e.g. "8192,32768,65536".
func ParseThresholds(s string) (Thresholds, error) {
	var t Thresholds
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return t, fmt.Errorf("want three comma-separated values gc_thresh1,gc_thresh2,gc_thresh3, got %q", s)
	}
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 1 || v > MaxThreshold {
			return t, fmt.Errorf("gc_thresh%d must be an integer from 1 to %d (the kernel's INT_MAX), got %q", i+1, MaxThreshold, p)
		}
		t[i] = v
	}
	return t, t.Validate()
}

// Validate checks that every value fits the kernel's int (1..MaxThreshold)
// and that gc_thresh1 <= gc_thresh2 <= gc_thresh3.
func (t Thresholds) Validate() error {
	for i, v := range t {
		if v < 1 || v > MaxThreshold {
			return fmt.Errorf("gc_thresh%d must be from 1 to %d (the kernel's INT_MAX), got %d", i+1, MaxThreshold, v)
		}
	}
	if t[0] > t[1] || t[1] > t[2] {
		return fmt.Errorf("thresholds must satisfy gc_thresh1 <= gc_thresh2 <= gc_thresh3, got %s", t)
	}
	return nil
}

// planTune returns the thresholds to set given the current ones: each value is
// the larger of current and target, so nothing is ever lowered. The merged
// result must still be ordered; if a value kept from the node breaks the
// order, Plan says which and how to fix it.
func planTune(current, target Thresholds) (Thresholds, error) {
	var out Thresholds
	for i := range out {
		out[i] = max(current[i], target[i])
	}
	if err := out.Validate(); err != nil {
		return out, fmt.Errorf("keeping the node's higher values (%s) and raising the rest to %s gives %s, which is out of order; raise --gc-thresh so every value is at least the node's", current, target, out)
	}
	return out, nil
}

// AutoRaise doubles the thresholds, keeping their ratios, when the table
// is past 80% of gc_thresh3 or has overflowed. gc_thresh3 never passes
// limit; if it is already there, ok is false.
func AutoRaise(current Thresholds, entries uint64, overflowed bool, limit int) (Thresholds, bool) {
	pressured := overflowed || float64(entries) > 0.8*float64(current[2])
	if !pressured || current[2] >= limit || current[2] <= 0 {
		return current, false
	}
	factor := min(2.0, float64(limit)/float64(current[2]))
	var out Thresholds
	for i, v := range current {
		out[i] = int(float64(v) * factor)
	}
	out[2] = min(out[2], limit)
	return out, out != current
}
