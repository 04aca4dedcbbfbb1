#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (seconds, default 20), seeded
# with lvm2-written samples. Needs a nightly toolchain and cargo-fuzz; fails
# loudly without them.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
rustup toolchain list | grep -q "^nightly" || rustup toolchain install nightly --profile minimal || { echo "fuzzing needs a nightly toolchain and could not install one" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in label mda_header metadata_text whole_pv; do
  mkdir -p "corpus/$t"
  cp -n seeds/$t/* "corpus/$t/" 2>/dev/null || true
  echo "== fuzzing $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | grep -E "^(#[0-9]+ *DONE|Done|==[0-9]+== ERROR|SUMMARY|thread .* panicked)" || true
  # cargo fuzz exits non-zero on a crash; re-check via artifacts.
  if ls artifacts/$t/crash-* >/dev/null 2>&1; then echo "fuzz target $t crashed: $(ls artifacts/$t)" >&2; exit 1; fi
done
echo "fuzzing: all targets ran ${secs}s without a crash"
