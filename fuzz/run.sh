#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (seconds, default 20), seeded
# with lvm2-written samples. Needs a nightly toolchain and cargo-fuzz; fails
# loudly without them. Fails when a target does not build, when cargo fuzz
# exits non-zero, and when libFuzzer leaves any finding (crash, oom,
# timeout, leak) in artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
rustup toolchain list | grep -q "^nightly" || rustup toolchain install nightly --profile minimal || { echo "fuzzing needs a nightly toolchain and could not install one" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p logs
for t in label mda_header metadata_text whole_pv; do
  mkdir -p "corpus/$t"
  cp -n seeds/$t/* "corpus/$t/" 2>/dev/null || true
  # Only this run's findings count.
  rm -rf "artifacts/$t"
  echo "== fuzzing $t for ${secs}s"
  log="logs/$t.log"
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  grep -E "^(#[0-9]+ *DONE|Done|==[0-9]+== ERROR|SUMMARY|thread .* panicked)" "$log" || echo "(no libFuzzer summary in $log)"
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed (cargo fuzz exited $status): a build failure or a finding" >&2
    exit 1
  fi
  findings=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) 2>/dev/null || true)
  if [ -n "$findings" ]; then
    echo "fuzz target $t left findings: $findings" >&2
    exit 1
  fi
done
echo "fuzzing: all targets ran ${secs}s without a finding"
