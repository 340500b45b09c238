#!/bin/sh
# Script hook: copies a VM's source disk into a backup directory before it is converted.
#   args: <source disk> <backup directory>   env: VM_NAME, OUTPUT_PATH
# Exits non-zero (failing the hook) when the copy cannot be made.
set -eu
src="$1"
dest="$2"
mkdir -p "$dest"
cp --sparse=always "$src" "$dest/"
echo "backed up ${VM_NAME:-?} ($src) to $dest before writing ${OUTPUT_PATH:-?}"
