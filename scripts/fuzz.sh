#!/usr/bin/env bash
# A libFuzzer campaign of every parser (docs/fuzzing.md), on the stable toolchain: the fuzz/
# crate built with the coverage instrumentation cargo-fuzz would ask for (sancov passes through
# -C llvm-args; no nightly, no cargo-fuzz, no AddressSanitizer: the crate forbids unsafe code),
# then each target run in turn by FUZZ_WORKERS processes sharing one corpus, until FUZZ_RUNS
# executions between them or FUZZ_TIME seconds, whichever comes first. libFuzzer stops a worker
# at the first panic, hang or out-of-memory and writes the input to the artifacts directory.
#
# Time and memory bounds are checked twice. In the campaign, on the instrumented build (several
# times slower than the binary, and sharing the machine with the other worker), a unit over
# FUZZ_UNIT_TIMEOUT seconds is a hang and a worker over FUZZ_RSS_MB an out-of-memory. After it,
# every unit of the final corpus and every artifact is run once, each in its own process, on an
# uninstrumented release build of the same targets (the code the binary runs): a unit over 1 s
# or 100 MiB there is a finding too.
#
#   scripts/fuzz.sh                    every target, 1,000,000 runs or 1,800 s each
#   scripts/fuzz.sh manifest batch     these targets only
#   FUZZ_RUNS=N FUZZ_TIME=S FUZZ_WORKERS=N FUZZ_MAX_LEN=BYTES FUZZ_DIR=DIR scripts/fuzz.sh
#   FUZZ_BOUNDS_ONLY=1 scripts/fuzz.sh  only the bounds check, on the corpus a campaign left
#
# The working corpus and the artifacts live in FUZZ_DIR (default ~/.cache/hyper2kvm-fuzz), seeded
# from fuzz/corpus/<target> and fuzz/regressions/<target>, so a campaign never writes into the
# checkout. Each target's last lines are its figures: executions, exec/s, peak RSS, findings, and
# the slowest and largest unit of the final corpus on the uninstrumented build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${FUZZ_RUNS:-1000000}"
TIME="${FUZZ_TIME:-1800}"
WORKERS="${FUZZ_WORKERS:-$(nproc)}"
# Longest input libFuzzer makes: 16 KiB, except template values (a hook argument or header),
# for which 2 KiB reaches more of the parser in a run than 16 KiB does (the 20 KB seed of
# unknown variables is still run whole by the short run and the bounds benchmark).
max_len_of() {
  if [ -n "${FUZZ_MAX_LEN:-}" ]; then echo "$FUZZ_MAX_LEN"
  elif [ "$1" = template ]; then echo 2048
  else echo 16384
  fi
}
UNIT_TIMEOUT="${FUZZ_UNIT_TIMEOUT:-5}"
RSS_MB="${FUZZ_RSS_MB:-200}"
# The bounds of docs/performance.md, on the uninstrumented build.
BOUND_MS=1000
BOUND_KIB=$((100 * 1024))
DIR="${FUZZ_DIR:-$HOME/.cache/hyper2kvm-fuzz}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PLAIN_DIR="$TARGET_DIR/fuzz-plain"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
ALL=(manifest config batch profile template libvirt_xml vmware_export)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

SANCOV="-Cllvm-args=-sanitizer-coverage"
INSTRUMENTED="-Cpasses=sancov-module $SANCOV-level=4 $SANCOV-inline-8bit-counters $SANCOV-pc-table $SANCOV-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
# FUZZ_NO_BUILD=1 runs the targets as last built.
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  RUSTFLAGS="$INSTRUMENTED" cargo build --manifest-path fuzz/Cargo.toml --release --locked \
    --target "$TRIPLE" --bins
  RUSTFLAGS="" cargo build --manifest-path fuzz/Cargo.toml --release --locked \
    --target "$TRIPLE" --bins --target-dir "$PLAIN_DIR"
fi
BIN="$TARGET_DIR/$TRIPLE/release"
PLAIN="$PLAIN_DIR/$TRIPLE/release"

# FUZZ_KEEP_GOING=1: libFuzzer's fork mode, which goes on past hangs and out-of-memory inputs
# (each is still written to the artifacts directory and counted as a finding).
KEEP_GOING=""
if [ -n "${FUZZ_KEEP_GOING:-}" ]; then
  KEEP_GOING="-fork=1 -ignore_timeouts=1 -ignore_ooms=1"
fi

# Wall milliseconds and peak RSS (KiB) of one unit, run alone on the uninstrumented build.
measure() {
  local bin="$1" unit="$2" out
  out="$(/usr/bin/time -f '%e %M' "$bin" -runs=1 "$unit" 2>&1 >/dev/null | tail -1)"
  awk -v u="$unit" '{printf "%d %d %s\n", $1 * 1000, $2, u}' <<<"$out"
}
export -f measure

status=0
for t in "${TARGETS[@]}"; do
  corpus="$DIR/corpus/$t"
  artifacts="$DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  cp -n fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  if [ -z "${FUZZ_BOUNDS_ONLY:-}" ]; then
    max_len="$(max_len_of "$t")"
    echo "== $t: up to $RUNS runs or $TIME s, $WORKERS workers, max_len $max_len, corpus $corpus"
    per_worker=$(((RUNS + WORKERS - 1) / WORKERS))
    pids=()
    for w in $(seq 1 "$WORKERS"); do
      log="$DIR/$t.$w.log"
      # Energy scaled by execution time: libFuzzer mutates fast units more often, so the units
      # that expand aliases for half a second do not set the pace of the whole campaign.
      /usr/bin/time -f "process peak RSS %M KiB, %e s" -o "$DIR/$t.$w.time" \
        "$BIN/$t" "$corpus" -runs="$per_worker" -max_total_time="$TIME" -max_len="$max_len" \
        -timeout="$UNIT_TIMEOUT" -rss_limit_mb="$RSS_MB" -entropic_scale_per_exec_time=1 \
        -print_final_stats=1 -seed="$w" $KEEP_GOING -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 &
      pids+=("$!")
    done
    rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    total=0
    for w in $(seq 1 "$WORKERS"); do
      log="$DIR/$t.$w.log"
      # Fork mode prints no final stats: its last progress line has the executions.
      n="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
      [ -n "$n" ] || n="$(grep -E '^#[0-9]+' "$log" | tail -1 | sed 's/^#\([0-9]*\).*/\1/')"
      total=$((total + ${n:-0}))
      echo "worker $w: $(grep -E '^#[0-9]+' "$log" | tail -1)"
      grep -E '^stat::(average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' ' || true
      cat "$DIR/$t.$w.time"
      if grep -qE 'panicked|ERROR: libFuzzer' "$log"; then
        echo "** $t worker $w: the finding:"
        grep -E 'panicked|ERROR: libFuzzer|Test unit written|SUMMARY' "$log" | head -8 || true
      fi
    done
    echo "executions: $total"
    [ "$rc" -eq 0 ] || { echo "** $t: a worker stopped with exit $rc"; status=1; }
    found="$(find "$artifacts" -type f | wc -l)"
    echo "campaign findings: $found in $artifacts"
    [ "$found" -eq 0 ] || status=1
  fi

  # The bounds on the code the binary runs: every unit and artifact alone, uninstrumented.
  if [ ! -x "$PLAIN/$t" ]; then
    echo "** $t: no uninstrumented build at $PLAIN/$t: the bounds were not checked"
    status=1
    continue
  fi
  measured="$DIR/$t.bounds"
  find "$corpus" "$artifacts" -type f -print0 |
    xargs -0 -P "$WORKERS" -I{} bash -c 'measure "$@"' _ "$PLAIN/$t" {} >"$measured"
  echo "final corpus: $(find "$corpus" -type f | wc -l) units, each run alone uninstrumented"
  sort -n "$measured" | tail -1 | awk '{print "slowest unit: " $1 " ms, " int($2 / 1024) " MiB (" $3 ")"}'
  sort -k2 -n "$measured" | tail -1 | awk '{print "largest unit: " int($2 / 1024) " MiB, " $1 " ms (" $3 ")"}'
  over="$(awk -v ms="$BOUND_MS" -v kib="$BOUND_KIB" '$1 > ms || $2 > kib' "$measured")"
  if [ -n "$over" ]; then
    echo "** $t: units over 1 s or 100 MiB uninstrumented:"
    head -5 <<<"$over"
    status=1
  fi
done
exit "$status"
