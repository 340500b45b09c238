#!/usr/bin/env bash
# Runs the test suite with cargo-nextest when it is installed, else with cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v cargo-nextest >/dev/null 2>&1; then
  # List each skipped test (a tool, root or OVMF missing here; build.rs decides) by name, not
  # only as a count in the summary. Not in .config/nextest.toml: a filtered run would list every
  # test it filtered out the same way.
  export NEXTEST_STATUS_LEVEL="${NEXTEST_STATUS_LEVEL:-skip}"
  exec cargo nextest run --locked --no-fail-fast "$@"
else
  exec cargo test --locked --no-fail-fast "$@"
fi
