package e2e

import (
	"testing"
)

// 1. Opted-in namespace: a bare Pod gets the profile's options and annotation.
func TestOptedInNamespace(t *testing.T) {
	ns := namespace(t, "enabled", enabled())
	p, _ := create(t, newPod(ns))
	assertMutated(t, p, "resilient", resilientOptions)
}
