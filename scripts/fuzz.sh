#!/usr/bin/env bash
# A libFuzzer campaign of every parser (docs/fuzzing.md), on the stable toolchain: the fuzz/
# crate built with the coverage instrumentation cargo-fuzz would ask for (sancov passes through
# -C llvm-args; no nightly, no cargo-fuzz, no AddressSanitizer: the crate forbids unsafe code),
# then each target run in turn until FUZZ_RUNS executions or FUZZ_TIME seconds, whichever comes
# first. Every unit has a 1 s timeout and the process a 100 MiB RSS limit; libFuzzer stops at the first
# panic, timeout or out-of-memory and writes the input to the artifacts directory.
#
#   scripts/fuzz.sh                    every target, 1,000,000 runs or 600 s each
#   scripts/fuzz.sh manifest batch     these targets only
#   FUZZ_RUNS=N FUZZ_TIME=S FUZZ_MAX_LEN=BYTES FUZZ_DIR=DIR scripts/fuzz.sh
#
# The working corpus and the artifacts live in FUZZ_DIR (default ~/.cache/hyper2kvm-fuzz), seeded
# from fuzz/corpus/<target> and fuzz/regressions/<target>, so a campaign never writes into the
# checkout. Each target's last lines are its figures: executions, exec/s, peak RSS, the slowest
# unit of the final corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${FUZZ_RUNS:-1000000}"
TIME="${FUZZ_TIME:-600}"
MAX_LEN="${FUZZ_MAX_LEN:-16384}"
DIR="${FUZZ_DIR:-$HOME/.cache/hyper2kvm-fuzz}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
ALL=(manifest config batch profile template libvirt_xml)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

SANCOV="-Cllvm-args=-sanitizer-coverage"
export RUSTFLAGS="-Cpasses=sancov-module $SANCOV-level=4 $SANCOV-inline-8bit-counters $SANCOV-pc-table $SANCOV-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
# FUZZ_NO_BUILD=1 runs the targets as last built.
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  cargo build --manifest-path fuzz/Cargo.toml --release --locked --target "$TRIPLE" --bins
fi
BIN="$TARGET_DIR/$TRIPLE/release"

# FUZZ_KEEP_GOING=1: run in libFuzzer's fork mode and go on past timeouts and out-of-memory
# inputs (each is still written to the artifacts directory and counted as a finding).
KEEP_GOING=""
if [ -n "${FUZZ_KEEP_GOING:-}" ]; then
  KEEP_GOING="-fork=1 -ignore_timeouts=1 -ignore_ooms=1"
fi

status=0
for t in "${TARGETS[@]}"; do
  corpus="$DIR/corpus/$t"
  artifacts="$DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  cp -n fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  log="$DIR/$t.log"
  echo "== $t: up to $RUNS runs or $TIME s, max_len $MAX_LEN, corpus $corpus"
  set +e
  /usr/bin/time -f "process peak RSS %M KiB, %e s" -o "$DIR/$t.time" \
    "$BIN/$t" "$corpus" -runs="$RUNS" -max_total_time="$TIME" -max_len="$MAX_LEN" \
    -timeout=1 -rss_limit_mb="${FUZZ_RSS_MB:-100}" -print_final_stats=1 $KEEP_GOING \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  # Fork mode prints no final stats: its last progress line has the executions and exec/s.
  grep -E '^#[0-9]+: ' "$log" | tail -1 || true
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|stat::new_units_added)' "$log" || true
  cat "$DIR/$t.time"
  found="$(find "$artifacts" -type f | wc -l)"
  echo "findings: $found in $artifacts"
  [ "$found" -eq 0 ] || status=1
  if [ "$rc" -ne 0 ]; then
    echo "** $t: libFuzzer stopped with exit $rc; the finding:"
    grep -E 'panicked|ERROR: libFuzzer|Test unit written|SUMMARY' "$log" | head -8 || true
    status=1
  fi
  # The slowest unit of the final corpus, each file run once on its own.
  find "$corpus" -type f -print0 | xargs -0 -n 500 "$BIN/$t" -runs=1 2>&1 |
    sed -n 's/^Executed \(.*\) in \([0-9]*\) ms$/\2 \1/p' | sort -n | tail -1 |
    awk '{print "slowest unit of the final corpus: " $1 " ms (" $2 ")"}'
  echo "corpus: $(find "$corpus" -type f | wc -l) units"
done
exit "$status"
