//go:build tools

// Package tools pins the helm CLI that make builds into bin/tools (the chart's
// lint, renders and installs); never shipped.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
