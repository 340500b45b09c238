#!/usr/bin/env bash
# Runs the test suite with cargo-nextest when it is installed, else with cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --locked --no-fail-fast "$@"
else
  exec cargo test --locked --no-fail-fast "$@"
fi
