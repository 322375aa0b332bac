package node

import (
	"errors"
	"fmt"
)

// TuneOptions say what Tune does.
type TuneOptions struct {
	Proc Proc
	// Target thresholds, default DefaultTargets.
	Target Thresholds
	// Families to tune, default IPv4 and IPv6.
	Families []Family
	// DryRun reads and plans but writes nothing.
	DryRun bool
}

// Change is one threshold's outcome.
type Change struct {
	Family Family
	// Index is 0, 1 or 2 for gc_thresh1, 2, 3.
	Index         int
	Before, After int
}

// Sysctl is the change's sysctl name, e.g. net.ipv4.neigh.default.gc_thresh3.
func (c Change) Sysctl() string {
	return fmt.Sprintf("net.%s.neigh.default.gc_thresh%d", c.Family, c.Index+1)
}

func (c Change) String() string {
	if c.Before == c.After {
		return fmt.Sprintf("%s: %d (kept)", c.Sysctl(), c.Before)
	}
	return fmt.Sprintf("%s: %d -> %d", c.Sysctl(), c.Before, c.After)
}

// TuneResult is what Tune did.
type TuneResult struct {
	Changes []Change
	// Skipped explains families that were not tuned (disabled on the node).
	Skipped []string
}

// Tune raises the neighbour-table thresholds of each family to the target,
// never lowering a value that is already higher. It is idempotent: a second
// run keeps every value. It fails, with the fix in the message, when not in
// the host network namespace or without the privilege to write.
func Tune(o TuneOptions) (TuneResult, error) {
	if o.Target == (Thresholds{}) {
		o.Target = DefaultTargets
	}
	if err := o.Target.Validate(); err != nil {
		return TuneResult{}, err
	}
	if o.Families == nil {
		o.Families = []Family{IPv4, IPv6}
	}
	var res TuneResult
	for _, f := range o.Families {
		cur, err := o.Proc.Thresholds(f)
		if errors.Is(err, ErrFamilyDisabled) {
			res.Skipped = append(res.Skipped, err.Error())
			continue
		}
		if err != nil {
			return res, err
		}
		want, err := planTune(cur, o.Target)
		if err != nil {
			return res, fmt.Errorf("%s: %w", f, err)
		}
		// Highest first, so the values stay ordered after every write.
		for i := 2; i >= 0; i-- {
			if want[i] != cur[i] && !o.DryRun {
				if err := o.Proc.SetThreshold(f, i, want[i]); err != nil {
					return res, err
				}
			}
		}
		if !o.DryRun {
			got, err := o.Proc.Thresholds(f)
			if err != nil {
				return res, err
			}
			if got != want {
				return res, fmt.Errorf("%s: wrote %s but the kernel reports %s", f, want, got)
			}
		}
		for i := range cur {
			res.Changes = append(res.Changes, Change{Family: f, Index: i, Before: cur[i], After: want[i]})
		}
	}
	if len(res.Changes) == 0 {
		return res, fmt.Errorf("no address family could be tuned: %v", res.Skipped)
	}
	return res, nil
}
