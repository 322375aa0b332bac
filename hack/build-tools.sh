#!/usr/bin/env bash
# Builds the upstream control-plane binaries the e2e suite runs on, from the Go
# module proxy, into the tool cache (below), linked from bin/tools/<version>/.
# A binary already in the cache is not rebuilt. kubectl comes from the
# machine (PATH).
#
# Usage: hack/build-tools.sh            control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and kubelet
#        hack/build-tools.sh apiserver-1.MINOR  kube-apiserver of the version matrix (bin/tools/kube-apiserver-<version>/kube-apiserver; hack/new-apiserver-module.sh writes its module)
#        hack/build-tools.sh kube-proxy kube-proxy v1.37.1: the real node's Services and the race lab's DNAT (bin/tools/kube-proxy-<version>/kube-proxy)
#        hack/build-tools.sh kube-router kube-router v2, only its NetworkPolicy controller runs: the real node's enforcer (bin/tools/kube-router-<version>/kube-router)
#        hack/build-tools.sh cert-manager cert-manager's controllers and CA injector in one stand-in binary (hack/tools/cert-manager; bin/tools/cert-manager-<version>/cert-manager)
#        hack/build-tools.sh coredns    CoreDNS for the effect lab (bin/tools/coredns-<version>-<plugins>/coredns)
#        hack/build-tools.sh helm       helm, for the chart (bin/tools/helm-<version>/helm)
#        hack/build-tools.sh promtool   promtool, for the chart's alert rules (bin/tools/promtool-<version>/promtool)
set -euo pipefail

KUBE_VERSION=v1.37.1
ETCD_VERSION=$(grep -oE "go.etcd.io/etcd/server/v3 v[0-9.]+" "$(dirname "$0")/tools/etcd/go.mod" | head -1 | cut -d" " -f2)
# The tools are modules of their own, outside the repository's go.work.
export GOWORK=off
root=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-kube}

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean"

# Built tools are cached outside the clone, so that a fresh clone on a
# machine that built them once rebuilds nothing: $DNSTUNE_TOOLS_CACHE,
# default ~/.cache/dnstune-tools, one directory per tool, output directory
# and key (the hash of its module's go.sum and its ldflags: a dependency
# bump or another flag is another build). bin/tools/<version>/<name> is a
# symbolic link into the cache.
cache=${DNSTUNE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dnstune-tools}

build() { # name dir pkg ldflags [source files that are part of the key]
  local name=$1 dir=$2 pkg=$3 flags=$4
  shift 4
  local key
  key=$(cat "$dir/go.sum" "$dir/go.mod" <(echo "$pkg $flags") "$@" | sha256sum | cut -c1-12)
  local cached=$cache/$(basename "$out")-$name-$key/$name
  if [ -f "$out/$name" ] && [ ! -L "$out/$name" ]; then
    # Built here before the cache existed: move it in, if it is this build.
    mkdir -p "$(dirname "$cached")"
    [ -x "$cached" ] || mv "$out/$name" "$cached"
  fi
  if [ -x "$cached" ]; then
    ln -sfn "$cached" "$out/$name"
    echo "tools: $name from the cache ($cached)"
    return
  fi
  echo "tools: building $name (cold: several minutes)..."
  local start=$SECONDS
  mkdir -p "$(dirname "$cached")"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$cached.tmp" "$pkg")
  mv "$cached.tmp" "$cached"
  ln -sfn "$cached" "$out/$name"
  echo "tools: built $name in $((SECONDS - start))s"
}

if [ "$what" = helm ] || [ "$what" = promtool ]; then
  # helm (the chart's lint, renders, installs) and promtool (its alert
  # rules' checks and unit tests), each from its own module in hack/tools.
  if [ "$what" = helm ]; then dir=$root/hack/tools/helm; mod=helm.sh/helm/v3; pkg=helm.sh/helm/v3/cmd/helm
  else dir=$root/hack/tools/prometheus; mod=github.com/prometheus/prometheus; pkg=github.com/prometheus/prometheus/cmd/promtool; fi
  version=$(grep -E "(^|\s)$mod v" "$dir/go.mod" | head -1 | awk '{print $NF}')
  out=$root/bin/tools/$what-$version
  mkdir -p "$out"
  flags="-s -w"
  if [ "$what" = helm ]; then
    # The ldflags helm's own Makefile sets: its version, and the Kubernetes
    # version it assumes without --kube-version (client-go's minor, major
    # 1); without them helm says v1.20.0 and refuses kubeVersion >= 1.30.
    k8s=$(cd "$dir" && go list -f '{{.Version}}' -m k8s.io/client-go)
    minor=$(echo "$k8s" | cut -d. -f2)
    flags="$flags -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  fi
  build "$what" "$dir" "$pkg" "$flags"
  echo "$out/$what"
  exit 0
fi

case "$what" in apiserver-*)
  # kube-apiserver of another version, for make e2e's version matrix: the
  # newest patch of each minor (MATRIX_MINORS in the Makefile); 1.36.3's
  # CEL mutation panicked on a JSONPatch value that is a list of Objects
  # (kubernetes/kubernetes#142181, fixed in 1.36.5).
  dir=$root/hack/tools/$what
  [ -d "$dir" ] || { echo "no $dir" >&2; exit 1; }
  v=$(grep -oE "k8s.io/kubernetes v[0-9.]+" "$dir/go.mod" | head -1 | cut -d" " -f2)
  out=$root/bin/tools/kube-apiserver-$v
  mkdir -p "$out"
  minor=$(echo "$v" | cut -d. -f2)
  build kube-apiserver "$dir" ./kube-apiserver "-s -w -X k8s.io/component-base/version.gitVersion=$v \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  echo "$out/kube-apiserver"
  exit 0
esac

if [ "$what" = kube-proxy ]; then
  # kube-proxy for the conntrack race lab (e2e/race): its own module, so
  # that adding it rebuilds none of the control plane.
  out=$root/bin/tools/kube-proxy-$KUBE_VERSION
  mkdir -p "$out"
  build kube-proxy "$root/hack/tools/kube-proxy" . "$ldflags"
  echo "$out/kube-proxy"
  exit 0
fi

if [ "$what" = kube-router ]; then
  # kube-router for the real node's NetworkPolicy cases: its own module
  # (hack/tools/kube-router, dependencies updated past v2.1.0's own).
  v=$(grep -oE "github.com/cloudnativelabs/kube-router/v2 v[0-9.]+" "$root/hack/tools/kube-router/go.mod" | head -1 | cut -d" " -f2)
  out=$root/bin/tools/kube-router-$v
  mkdir -p "$out"
  build kube-router "$root/hack/tools/kube-router" . "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$v" "$root/hack/tools/kube-router/main.go"
  echo "$out/kube-router"
  exit 0
fi

if [ "$what" = cert-manager ]; then
  # cert-manager's controllers from its packages: its cmd modules are not on
  # the module proxy (hack/tools/cert-manager/main.go says what runs).
  v=$(grep -oE "github.com/cert-manager/cert-manager v[0-9.]+" "$root/hack/tools/cert-manager/go.mod" | head -1 | cut -d" " -f2)
  out=$root/bin/tools/cert-manager-$v
  mkdir -p "$out"
  build cert-manager "$root/hack/tools/cert-manager" . "-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$v" "$root/hack/tools/cert-manager/main.go"
  echo "$out/cert-manager"
  exit 0
fi

if [ "$what" = coredns ]; then
  COREDNS_VERSION=$(grep -oE "github.com/coredns/coredns v[0-9.]+" "$root/hack/tools/coredns/go.mod" | head -1 | cut -d" " -f2)
  # The plugin set is part of the name, so a build with other plugins is not
  # mistaken for this one.
  plugins=$(sha256sum "$root/hack/tools/coredns/main.go" | cut -c1-8)
  out=$root/bin/tools/coredns-$COREDNS_VERSION-$plugins
  mkdir -p "$out"
  build coredns "$root/hack/tools/coredns" . "-s -w"
  echo "$out/coredns"
  exit 0
fi

out=$root/bin/tools/kube-$KUBE_VERSION-etcd-$ETCD_VERSION
mkdir -p "$out"
build etcd "$root/hack/tools/etcd" . "-s -w"
build kube-apiserver "$root/hack/tools/kube" ./kube-apiserver "$ldflags"
build kube-controller-manager "$root/hack/tools/kube" ./kube-controller-manager "$ldflags"
build kubelet "$root/hack/tools/kube" ./kubelet "$ldflags"
build kube-scheduler "$root/hack/tools/kube" ./kube-scheduler "$ldflags"

kubectl_path=$(command -v kubectl || true)
if [ -n "$kubectl_path" ] && [ ! -e "$out/kubectl" ]; then
  ln -s "$kubectl_path" "$out/kubectl"
fi
ln -sfn "$out" "$root/bin/tools/current"
echo "$out"
