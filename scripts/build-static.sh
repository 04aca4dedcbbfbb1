#!/usr/bin/env bash
# Builds ferrolvm as one statically linked musl executable and checks that it
# is: no interpreter, no shared library. Prints its path. The container image
# ships it (scripts/image.sh); the benchmarks race it against the glibc build
# (the static-binary lever, README "The single-op path").
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
# bindgen (devicemapper-sys) reads the kernel's dm-ioctl.h from the host's
# headers; clang needs its own include directory named for a musl target.
clang_inc=$(ls -d /usr/lib/llvm-*/lib/clang/*/include | sort -V | tail -1)
export PKG_CONFIG_ALLOW_CROSS=1 CC_x86_64_unknown_linux_musl=musl-gcc
export BINDGEN_EXTRA_CLANG_ARGS_x86_64_unknown_linux_musl="-I$clang_inc -I/usr/include -I/usr/include/x86_64-linux-gnu"
echo "build-static: cargo build --release --target $target" >&2
cargo build --release -q --target "$target" --bin ferrolvm >&2
bin=target/$target/release/ferrolvm
if readelf -l "$bin" | grep -q INTERP || readelf -d "$bin" | grep -q NEEDED; then
  echo "build-static: $bin is not statically linked" >&2
  exit 1
fi
echo "$bin"
