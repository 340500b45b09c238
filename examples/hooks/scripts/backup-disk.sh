#!/bin/sh
# Script hook (pre_fix): copies the source disk into a backup directory before guest repair.
#   args: <source disk> <backup directory>
set -eu
src="$1"
dest="$2"
mkdir -p "$dest"
cp --sparse=always "$src" "$dest/"
echo "backed up $src to $dest"
