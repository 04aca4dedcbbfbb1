#!/usr/bin/env bash
# Builds the real Kubernetes parts the cluster harness runs — etcd,
# kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, kubelet,
# the CSI sidecars csi-provisioner, csi-resizer, csi-snapshotter with the
# snapshot-controller, helm, and containerd with its runc shim and ctr (for
# the kubelets in the VM) — from their published Go modules, into OUT/bin.
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
# with local paths, so neither `go install` nor a plain `require` resolves it.
# A throw-away wrapper module requires it and replaces every staging module
# with its published v0.<minor>.<patch>; etcd and the sidecars join the same
# module, so one build cache serves them all. Nothing is downloaded but Go
# modules from the module proxy. Rebuilds only when VERSIONS changes.
set -euo pipefail
out=${1:?usage: build.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
K8S=v1.37.2
STAGING=v0.37.2
ETCD=v3.7.0
PROVISIONER=v6.4.0
RESIZER=v2.3.0
SNAPSHOTTER=v8.7.0
VERSIONS="k8s=$K8S kubelet etcd=$ETCD provisioner=$PROVISIONER resizer=$RESIZER snapshotter=$SNAPSHOTTER"

mkdir -p "$out/bin"
# helm, for the chart's lint, render and apply: its own module (its
# Kubernetes dependencies are its own versions, not the wrapper's).
HELM=v3.22.0
if [ "$(cat "$out/bin/HELM_VERSION" 2>/dev/null)" != "$HELM" ]; then
  command -v go >/dev/null || { echo "cluster build: go (1.26+) is required" >&2; exit 1; }
  echo "cluster build: helm $HELM" >&2
  GOTOOLCHAIN=local GOBIN="$out/bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM" \
    "helm.sh/helm/v3/cmd/helm@$HELM"
  echo "$HELM" >"$out/bin/HELM_VERSION"
fi
# containerd for the VM's kubelets: kubelet 1.37 needs a CRI with the
# RuntimeConfig call (containerd 2.x); Debian 12's containerd is 1.6. Its own
# module (its Kubernetes dependencies are not the wrapper's), static (the
# guest has no libc beyond what the initramfs carries), without btrfs's cgo.
CONTAINERD=v2.2.9
if [ "$(cat "$out/bin/CONTAINERD_VERSION" 2>/dev/null)" != "$CONTAINERD" ]; then
  command -v go >/dev/null || { echo "cluster build: go (1.26+) is required" >&2; exit 1; }
  echo "cluster build: containerd $CONTAINERD" >&2
  cmod="$out/containerd-module"
  rm -rf "$cmod"
  mkdir -p "$cmod"
  (
    cd "$cmod"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    go mod init ferrolvm.invalid/containerd-tools >/dev/null 2>&1
    printf '// Package tools exists only so that the wrapper module has a package.\npackage tools\n' >tools.go
    go get -tool \
      "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD" \
      "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD" \
      "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD" >&2
    for cmd in containerd containerd-shim-runc-v2 ctr; do
      echo "cluster build: $cmd" >&2
      go build -trimpath -tags no_btrfs -ldflags "-s -w" -o "$out/bin/$cmd" \
        "github.com/containerd/containerd/v2/cmd/$cmd"
    done
  )
  echo "$CONTAINERD" >"$out/bin/CONTAINERD_VERSION"
fi
if [ -f "$out/bin/VERSIONS" ] && [ "$(cat "$out/bin/VERSIONS")" = "$VERSIONS" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "cluster build: go (1.26+) is required" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mod="$out/module"
rm -rf "$mod"
mkdir -p "$mod"
cd "$mod"
echo "cluster build: wrapper module for Kubernetes $K8S, etcd $ETCD, provisioner $PROVISIONER, resizer $RESIZER, snapshotter $SNAPSHOTTER" >&2
go mod init ferrolvm.invalid/cluster-tools >/dev/null 2>&1
cat >tools.go <<'GO'
// Package tools exists only so that the wrapper module has a package.
package tools
GO
go mod edit -require="k8s.io/kubernetes@$K8S"
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S" | jq -r .GoMod)
staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
[ -n "$staging" ] || { echo "cluster build: no staging modules found in $gomod" >&2; exit 1; }
for m in $staging; do
  go mod edit -replace="$m=$m@$STAGING"
done
go mod edit -replace="github.com/kubernetes-csi/external-snapshotter/client/v8=github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER"
go get -tool \
  "k8s.io/kubernetes/cmd/kube-apiserver@$K8S" \
  "k8s.io/kubernetes/cmd/kube-scheduler@$K8S" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S" \
  "k8s.io/kubernetes/cmd/kubectl@$K8S" \
  "k8s.io/kubernetes/cmd/kubelet@$K8S" \
  "go.etcd.io/etcd/server/v3@$ETCD" \
  "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner@$PROVISIONER" \
  "github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer@$RESIZER" \
  "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter@$SNAPSHOTTER" \
  "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller@$SNAPSHOTTER" >&2
minor=${K8S#v1.}; minor=${minor%%.*}
ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S"
build() { # NAME PACKAGE
  echo "cluster build: $1" >&2
  go build -trimpath -ldflags "$ld" -o "$out/bin/$1" "$2"
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl k8s.io/kubernetes/cmd/kubectl
build kubelet k8s.io/kubernetes/cmd/kubelet
build csi-provisioner github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
build csi-resizer github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer
build csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter
build snapshot-controller github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
# The VolumeSnapshot CRDs ship as YAML in the snapshotter's client module.
crd=$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER" | jq -r .Dir)/config/crd
mkdir -p "$out/crd"
cp "$crd"/snapshot.storage.k8s.io_*.yaml "$out/crd/"
echo "$VERSIONS" >"$out/bin/VERSIONS"
echo "cluster build: done" >&2
