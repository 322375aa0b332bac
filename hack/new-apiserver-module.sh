#!/usr/bin/env bash
# Writes hack/tools/apiserver-<minor>/, the module make test's version matrix
# builds kube-apiserver <version> from (hack/build-tools.sh apiserver-<minor>):
# k8s.io/kubernetes at <version>, each staging module it replaces with
# ./staging/src/... pinned to the matching v0 release instead, and a main
# that runs the upstream command. Run it when a new patch or minor is
# served (go list -m -versions k8s.io/kubernetes), then add the minor to
# MATRIX_MINORS in the Makefile.
#
# Usage: hack/new-apiserver-module.sh v1.35.4
set -euo pipefail
v=${1:?usage: $0 v1.MINOR.PATCH}
[[ $v =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "not a release version: $v" >&2; exit 1; }
minor=${BASH_REMATCH[1]}
staging=v0.$minor.${BASH_REMATCH[2]}
# The tools are modules of their own, outside the repository's go.work.
export GOWORK=off
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/hack/tools/apiserver-1.$minor
mkdir -p "$dir/kube-apiserver"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && go mod init tmp > /dev/null 2>&1 && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$v" > info.json)
gomod=$(sed -n 's/.*"GoMod": "\(.*\)",/\1/p' "$tmp/info.json")
{
  echo "module github.com/dnstune/dnstune/hack/tools/apiserver-1.$minor"
  echo
  echo "go 1.26.0"
  echo
  echo "require ("
  echo "	k8s.io/component-base $staging"
  echo "	k8s.io/kubernetes $v"
  echo ")"
  echo
  echo "replace ("
  grep -oE '^\s*k8s.io/[a-z0-9./-]+ => ./staging/src/k8s.io/[a-z0-9./-]+' "$gomod" | awk -v s="$staging" '{print "\t" $1 " => " $1 " " s}'
  echo ")"
} > "$dir/go.mod"
cat > "$dir/kube-apiserver/main.go" <<GO
// Command kube-apiserver is the upstream kube-apiserver $v, built from
// the Go module proxy for dnstune's e2e suite. It is never shipped.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO
(cd "$dir" && go mod tidy)
echo "$dir"
