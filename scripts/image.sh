#!/usr/bin/env bash
# Builds ferrolvm's container image without a Docker daemon and checks it:
# a statically linked musl binary, `buildah bud` of deploy/Containerfile
# (FROM scratch: no base image is pulled) into storage under target/image,
# then the image itself runs `ferrolvm --version`. Writes the image as an
# OCI archive, target/image/ferrolvm-VERSION.oci.tar, for `ctr import` or a
# registry push. Needs root (buildah's chroot isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "image: no version in Cargo.toml" >&2; exit 1; }
bin=$(bash scripts/build-static.sh)
ctx=target/image/context
rm -rf "$ctx" && mkdir -p "$ctx"
# Debug info stays in target/ for the developer; the image carries the code.
strip -o "$ctx/ferrolvm" "$bin"
b=(buildah --root "$PWD/target/image/storage" --runroot "$PWD/target/image/run" --storage-driver vfs)
tag=localhost/ferrolvm:$version
echo "image: buildah bud $tag"
"${b[@]}" bud -q --isolation chroot --layers=false -f deploy/Containerfile -t "$tag" "$ctx" >/dev/null
ctr=$("${b[@]}" from -q "$tag")
trap '"${b[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
said=$("${b[@]}" run --isolation chroot "$ctr" -- /ferrolvm --version)
if [ "$said" != "ferrolvm $version" ]; then
  echo "image: the image's ferrolvm --version said '$said', not 'ferrolvm $version'" >&2
  exit 1
fi
user=$("${b[@]}" inspect --format '{{.OCIv1.Config.User}}' "$tag")
[ "$user" = "65532:65532" ] || { echo "image: runs as '$user', not 65532:65532" >&2; exit 1; }
out=target/image/ferrolvm-$version.oci.tar
rm -f "$out"
"${b[@]}" push -q "$tag" "oci-archive:$out:$tag" >/dev/null
size=$(stat -c %s "$out")
echo "image: $tag runs ($said), user $user, $(( size / 1024 / 1024 )) MiB as $out"
