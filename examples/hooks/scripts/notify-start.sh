#!/bin/sh
# Script hook (pre_extraction): announces a migration. env: VM (the VM's name).
# Prints the notice; when NOTIFY_LOG names a file, appends it there too.
set -eu
line="migration of ${VM:?VM is not set} starting on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "$line"
if [ -n "${NOTIFY_LOG:-}" ]; then
  echo "$line" >> "$NOTIFY_LOG"
fi
