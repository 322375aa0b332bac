//go:build tools

// Package tools pins promtool, which make builds into bin/tools to check the
// chart's PrometheusRule and run its rule unit tests; never shipped.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
