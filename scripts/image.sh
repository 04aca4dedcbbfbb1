#!/usr/bin/env bash
# Builds ferrolvm's container image without a Docker daemon and checks it:
# a statically linked musl binary, `buildah bud` of deploy/Containerfile
# (FROM scratch: no base image is pulled) into storage under target/image,
# then the image itself runs `ferrolvm --version`. Writes the image as an
# OCI archive, target/image/ferrolvm-VERSION.oci.tar, for `ctr import` or a
# registry push. Needs root (buildah's chroot isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "image: no version in Cargo.toml" >&2; exit 1; }
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
# bindgen (devicemapper-sys) reads the kernel's dm-ioctl.h from the host's
# headers; clang needs its own include directory named for a musl target.
clang_inc=$(ls -d /usr/lib/llvm-*/lib/clang/*/include | sort -V | tail -1)
export PKG_CONFIG_ALLOW_CROSS=1 CC_x86_64_unknown_linux_musl=musl-gcc
export BINDGEN_EXTRA_CLANG_ARGS_x86_64_unknown_linux_musl="-I$clang_inc -I/usr/include -I/usr/include/x86_64-linux-gnu"
echo "image: cargo build --release --target $target"
cargo build --release -q --target "$target" --bin ferrolvm
bin=target/$target/release/ferrolvm
if readelf -l "$bin" | grep -q INTERP || readelf -d "$bin" | grep -q NEEDED; then
  echo "image: $bin is not statically linked" >&2
  exit 1
fi
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
