#!/usr/bin/env bash
# Every test CI runs (.ci/run calls this): installs what is missing, checks
# style, runs the host suite, builds and checks the container image, runs
# the device-mapper suite and csi-sanity in the VM, the Kubernetes suite
# (the Helm chart, its RBAC and /metrics included) against a real control
# plane, and a bounded
# fuzzing pass; ends with one `N passed, N failed` line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
command -v go >/dev/null || { echo "test: go is required to build csi-sanity" >&2; exit 1; }

# CI checks correctness, not speed: the release profile's thin LTO and single
# codegen unit (Cargo.toml) shape the binaries operators run and the
# benchmarks measure, but on a 2-core machine they make every test binary's
# link a whole-program optimisation, and this run builds the workspace four
# ways (host tests, musl image, the VM suite with failpoints, the cluster).
# Same optimisation level, parallel codegen, no LTO; set any of these to keep
# the operator's profile.
: "${CARGO_PROFILE_RELEASE_LTO:=false}"
: "${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:=16}"
: "${CARGO_PROFILE_RELEASE_DEBUG:=line-tables-only}"
export CARGO_PROFILE_RELEASE_LTO CARGO_PROFILE_RELEASE_CODEGEN_UNITS CARGO_PROFILE_RELEASE_DEBUG

# Each stage says when it started, so a slow CI run shows where its time went.
stage() { echo "== [$(date -u +%H:%M:%S), ${SECONDS}s] $*"; }

log=target/ferrolvm-test.log
mkdir -p target
: >"$log"

stage "style: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -q -- -D warnings

stage "host: unit, property, golden, interop, crash and tidy tests"
cargo test --workspace --release 2>&1 | tee -a "$log"

stage "image: static musl build, buildah FROM scratch, the image runs ferrolvm --version"
bash scripts/image.sh

stage "VM: the device-mapper suite on a real kernel (QEMU TCG), side by side with lvm2"
cargo run --release -q -p vm-tests -- test 2>&1 | tee -a "$log"

stage "VM: csi-sanity against ferrolvm node --standalone"
cargo run --release -q -p vm-tests -- csi-sanity 2>&1 | tee -a "$log"

stage "cluster: the Kubernetes suite against a real control plane built from its Go modules"
cargo run --release -q -p vm-tests -- cluster-test 2>&1 | tee -a "$log"

stage "fuzzing every parser, seeded with lvm2-written samples"
bash fuzz/run.sh 20

stage "tally"

# One closing line for the whole run: cargo's "test result:" lines plus
# csi-sanity's "N Passed | N Failed".
awk '/^test result:/ { p += $4; f += $6 }
     /(SUCCESS|FAIL)! -- / { for (i = 1; i <= NF; i++) { if ($i == "Passed") p += $(i-1); if ($i == "Failed") f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log"
