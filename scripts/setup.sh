#!/usr/bin/env bash
# Installs what ferrolvm's demo and tests need on a Debian machine, and says
# what it installs. Sourced by scripts/demo.sh and scripts/test.sh; safe to
# run again (it installs only what is missing).
set -euo pipefail

# lvm2 and the thin tools to compare against; libdevmapper-dev, pkg-config
# and libclang to build the devicemapper crate; QEMU, busybox and the
# filesystem tools for the VM; openssl (certificates) and jq (Go module
# metadata) for the cluster harness; musl-tools and buildah for the
# container image (a static binary, built into an image without a daemon);
# runc and the CNI plugins for the kubelets in the cluster VM.
FERROLVM_PACKAGES=(lvm2 thin-provisioning-tools util-linux dmsetup libdevmapper-dev pkg-config
  libclang-dev qemu-system-x86 busybox-static e2fsprogs xfsprogs btrfs-progs binutils
  openssl jq musl-tools buildah runc containernetworking-plugins)

[ "$(id -u)" = 0 ] || { echo "setup: run as root (apt-get, loop devices)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in "${FERROLVM_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# Always refresh the lists: vm-tests asks apt which kernel linux-image-amd64 is.
echo "setup: apt-get update"
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: every Debian package is already installed"
fi
command -v lvm >/dev/null || { echo "setup: lvm2 did not install" >&2; exit 1; }
command -v cargo >/dev/null || { echo "setup: cargo (Rust 1.89+) is required; install it with rustup" >&2; exit 1; }
# Loop devices must be available: the interop tests fail loudly without them.
if [ ! -e /dev/loop-control ]; then
  echo "setup: loading the loop module"
  modprobe loop
fi
