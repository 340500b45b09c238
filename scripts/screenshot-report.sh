#!/usr/bin/env bash
# Makes docs/batch-report.png: runs a real batch with the built binary (six VMs on disks made
# by qemu-img, one of them listed in the wrong format so it fails at inspect, two at a time)
# in a temporary directory, and has headless Chromium take a picture of its batch_report.html.
#
# Usage: scripts/screenshot-report.sh [hyper2kvm binary] [output png]
#   The binary defaults to $CARGO_TARGET_DIR (or target/) release, then debug, build.
# Needs: qemu-img, qemu-io, chromium (scripts/install-deps.sh full).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="${1:-}"
if [ -z "$bin" ]; then
  for b in "$target/release/hyper2kvm" "$target/debug/hyper2kvm"; do
    if [ -x "$b" ]; then bin="$b"; break; fi
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "screenshot-report: no hyper2kvm binary; run cargo build first" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
png="${2:-$root/docs/batch-report.png}"
for tool in qemu-img qemu-io chromium; do
  command -v "$tool" >/dev/null || { echo "screenshot-report: $tool is missing (scripts/install-deps.sh full)" >&2; exit 1; }
done

work="$(mktemp -d /tmp/hyper2kvm-screenshot.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/disks" "$work/vms"

# name, qemu-img driver, manifest format, MiB of data written (bigger disks take longer, so the
# bars differ), vm section. app02 is a qcow2 listed as vmdk: inspect refuses it.
vms=(
  "web01 qcow2 qcow2 96 {firmware: bios, cpu: 2, mem_gb: 4}"
  "web02 vpc vhd 64 {firmware: bios, cpu: 2, mem_gb: 4}"
  "db01 raw raw 192 {firmware: bios}"
  "app01 vdi vdi 48 {firmware: bios}"
  "app02 qcow2 vmdk 32 {firmware: bios, cpu: 1, mem_gb: 2}"
  "cache01 vhdx vhdx 128 {firmware: bios, cpu: 1, mem_gb: 1}"
)
entries=""
for line in "${vms[@]}"; do
  read -r name driver format mib vm <<<"$line"
  disk="$work/disks/$name.img"
  qemu-img create -q -f "$driver" "$disk" 512M
  # Distinct data in several regions, so the conversion has something to copy.
  qemu-io -f "$driver" -c "write -P 0x5a 0 ${mib}M" -c "write -P 0xa5 300M 16M" "$disk" >/dev/null
  size="$(stat -c %s "$disk")"
  cat > "$work/vms/$name.yaml" <<YAML
manifest_version: "1.0"
source: {provider: vsphere, vm_name: $name}
vm: $vm
disks:
  - {id: $name-disk0, source_format: $format, bytes: $size, local_path: ../disks/$name.img}
YAML
  entries="$entries{\"manifest\": \"vms/$name.yaml\", \"id\": \"$name\"},"
done
cat > "$work/batch.json" <<JSON
{
  "batch_version": "1.0",
  "batch_metadata": {"batch_id": "dc-east-wave-1", "parallel_limit": 2, "continue_on_error": true},
  "shared_config": {
    "output_directory": "converted",
    "pipeline": {
      "inspect": {"enabled": true},
      "convert": {"enabled": true, "compress": true},
      "validate": {"enabled": true}
    }
  },
  "vms": [${entries%,}]
}
JSON

set +e
"$bin" --batch-manifest "$work/batch.json" --progress none >"$work/stdout.txt" 2>"$work/stderr.txt"
code=$?
set -e
# 3: some VMs failed, as intended.
if [ "$code" -ne 3 ]; then
  cat "$work/stdout.txt" "$work/stderr.txt" >&2
  echo "screenshot-report: the batch exited $code, expected 3 (one VM fails)" >&2
  exit 1
fi
page="$work/converted/batch_report.html"
[ -f "$page" ] || { echo "screenshot-report: $page was not written" >&2; exit 1; }

mkdir -p "$(dirname "$png")"
chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
  --user-data-dir="$work/chromium" --window-size=1280,900 \
  --screenshot="$png" "file://$page" >/dev/null 2>"$work/chromium.log" || {
  tail -n 20 "$work/chromium.log" >&2
  echo "screenshot-report: chromium failed" >&2
  exit 1
}
echo "screenshot-report: wrote $png ($(stat -c %s "$png") bytes)"
