#!/usr/bin/env bash
# Renders manifests/*.yaml from the Helm chart (manifests/dnstune), the one source
# of the install: the self-managed and cert-manager installs, the
# admission-policy backend, and the optional PolicyReport CRD and RBAC.
#
# Usage: hack/render-manifests.sh HELM OUTDIR
set -euo pipefail
helm=$1 out=$2
cd "$(dirname "$0")/.."
mkdir -p "$out"
render() { # file, extra helm flags...
  local file=$1; shift
  {
    echo "# Rendered from manifests/dnstune by make manifests; do not edit (edit the chart)."
    "$helm" template dnstune manifests/dnstune --namespace dnstune-system --kube-version v1.37.1 \
      --set namespace.create=true "$@"
  } > "$out/$file"
}
render install.yaml
render install-cert-manager.yaml --set certificates.mode=cert-manager
render install-admission-policy.yaml --set backend=admission-policy
render reports.yaml --set reports.enabled=true --show-only templates/reports.yaml
