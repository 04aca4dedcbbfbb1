#!/usr/bin/env bash
# Builds the peer of the side-by-side benchmark, TopoLVM's own binaries
# (`lvmd`, `hypertopolvm`), from the published Go module into OUT/bin, and
# copies its LogicalVolume CRD into OUT/crd.
#
# `go install …/cmd/lvmd@v0.41.0` does not resolve here (the module proxy
# refuses the version list), so a throw-away wrapper module requires the
# version and builds both commands as tools. Static (CGO off): they run in
# the VM, whose root holds only what the initramfs carries. Rebuilds only
# when the version changes.
set -euo pipefail
out=${1:?usage: build.sh OUT}
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)
TOPOLVM=v0.41.0
if [ "$(cat "$out/bin/TOPOLVM_VERSION" 2>/dev/null)" = "$TOPOLVM" ] &&
  [ -s "$out/crd/topolvm.io_logicalvolumes.yaml" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "peer build: go (1.26+) is required" >&2; exit 1; }
mod="$out/module"
rm -rf "$mod"
mkdir -p "$mod"
cd "$mod"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
go mod init ferrolvm.invalid/topolvm-peer >/dev/null 2>&1
printf '// Package tools exists only so that the wrapper module has a package.\npackage tools\n' >tools.go
go get -tool \
  "github.com/topolvm/topolvm/cmd/lvmd@$TOPOLVM" \
  "github.com/topolvm/topolvm/cmd/hypertopolvm@$TOPOLVM" >&2
for cmd in lvmd hypertopolvm; do
  echo "peer build: $cmd $TOPOLVM" >&2
  go build -trimpath -ldflags "-s -w -X github.com/topolvm/topolvm.Version=${TOPOLVM#v}" \
    -o "$out/bin/$cmd" "github.com/topolvm/topolvm/cmd/$cmd"
done
src=$(go list -m -f '{{.Dir}}' github.com/topolvm/topolvm)
mkdir -p "$out/crd"
cp "$src/config/crd/bases/topolvm.io_logicalvolumes.yaml" "$out/crd/"
echo "$TOPOLVM" >"$out/bin/TOPOLVM_VERSION"
