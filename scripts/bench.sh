#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs when it is missing (hyperfine, /usr/bin/time,
# openssl; virt-v2v, nbdkit and nbdcopy when libguestfs is present), builds the release binary,
# and runs scripts/bench.py, which writes docs/performance.md. Fully automatic and idempotent:
# generated images are cached outside the checkout (BENCH_DIR, default ~/.cache/hyper2kvm-bench)
# and every scratch output is recreated. See scripts/bench.py for the environment variables
# (BENCH_QUICK=1 for a short trial run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh bench
elif command -v sudo >/dev/null 2>&1; then
  sudo scripts/install-deps.sh bench
else
  scripts/install-deps.sh bench
fi

cargo build --release --locked
python3 scripts/bench.py "$@"
# Hostile documents up to the size limit: time and peak RSS per input (fails when a bound breaks).
python3 scripts/bench_bounds.py
# Shards on this host, and the planning of a 10,000-VM sharded dry run.
exec python3 scripts/bench_scale_out.py
