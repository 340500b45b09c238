#!/usr/bin/env bash
# hyper2kvm demo: build three small VMs with real guest filesystems, describe each with an
# Artifact Manifest v1, convert them to qcow2 with the release binary, and check the results.
#
# Part 1 runs as root or as a normal user: no libguestfs, no loop devices, no mount. The ext4
# filesystems are written straight into the partition of a raw image with `mkfs.ext4 -d`.
#
# Part 2 (root only) is a real conversion end to end: a Debian 12 guest that looks like a VMware
# VM (scripts/build-test-guest.sh: fstab and grub.cfg say root=/dev/sda1; built once and cached)
# is converted twice with the boot test on: without repairs it does not boot on virtio, with the
# production profile (inspect, fix, convert, validate) it reaches its login prompt. Under TCG
# this takes several minutes, most of it the initramfs rebuild in the libguestfs appliance.
#
# Usage: scripts/demo.sh        (normally through `make demo`, which installs the tools and builds)
#
# Layout of demo-output/ (recreated on every run):
#   <vm>/                  source disks (VMDK, VHDX or VHD) and the VM's manifest
#   converted/<vm>/        the qcow2 outputs and report.json
#   debian12-vmware/       part 2: manifests, and converted/<unrepaired|repaired>/ with the
#                          outputs, report.json and the boot test's console log
set -euo pipefail

export LC_ALL=C
# mkfs.ext4, sfdisk, e2fsck and debugfs live in /usr/sbin, which a normal user may not have.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo_root/target/release/hyper2kvm"
out="$repo_root/demo-output"
work="$out/.build"

heading() { printf '\n=== %s ===\n' "$*"; }
note() { printf '  %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
rel() { # a path relative to the repository root, with . and .. resolved
  local p; p="$(realpath -m -- "$1")"; printf '%s' "${p#"$repo_root"/}"
}
human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

# ---------------------------------------------------------------------------------------------
heading "Checking prerequisites"

[ -x "$bin" ] || die "release binary $(rel "$bin") not found; run 'make demo' (it builds it)"
for tool in qemu-img sfdisk mkfs.ext4 e2fsck debugfs sha256sum python3; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is not installed; run 'make demo' (it installs the tools via scripts/install-deps.sh core)"
done
note "binary:   $(rel "$bin") ($("$bin" --version))"
note "qemu-img: $(qemu-img --version | head -n1)"
note "mke2fs:   $(mkfs.ext4 -V 2>&1 | head -n1)"

rm -rf -- "$out"
mkdir -p "$work"

# ---------------------------------------------------------------------------------------------
# The three VMs. Per VM: name, provider, manifest format, source disk format, cpu, mem_gb,
# and the /etc/os-release it carries.

vms=(debian12-web ubuntu2204-app rocky9-db)
declare -A provider=([debian12-web]=vsphere [ubuntu2204-app]=hyperv [rocky9-db]=hyperv)
declare -A mformat=([debian12-web]=yaml [ubuntu2204-app]=json [rocky9-db]=yaml)
declare -A srcfmt=([debian12-web]=vmdk [ubuntu2204-app]=vhdx [rocky9-db]=vhd)
declare -A cpus=([debian12-web]=2 [ubuntu2204-app]=4 [rocky9-db]=2)
declare -A mem=([debian12-web]=2 [ubuntu2204-app]=4 [rocky9-db]=8)
declare -A osver=([debian12-web]="Debian 12" [ubuntu2204-app]="Ubuntu 22.04" [rocky9-db]="Rocky Linux 9")
declare -A osrel
osrel[debian12-web]='PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"'
osrel[ubuntu2204-app]='PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"'
osrel[rocky9-db]='NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"
HOME_URL="https://rockylinux.org/"'
declare -A kernel=([debian12-web]=6.1.0-18-amd64 [ubuntu2204-app]=5.15.0-101-generic [rocky9-db]=5.14.0-362.8.1.el9_3.x86_64)

disk_mib=64           # size of every sample disk
part_offset=1048576   # the single partition starts at 1 MiB (sector 2048)
part_kib=$(( disk_mib * 1024 - part_offset / 1024 ))

# Every disk of every VM, in order: "<vm> <disk id> <source format> <path> <disk type> <boot order>"
all_disks=()

# make_guest_tree <vm> <dir>: a directory that looks like the root of a Linux guest.
make_guest_tree() {
  local vm="$1" t="$2" k="${kernel[$1]}"
  mkdir -p "$t"/{etc,boot/grub,home/admin,var/log,root,tmp}
  printf '%s\n' "${osrel[$vm]}" > "$t/etc/os-release"
  printf '%s\n' "$vm" > "$t/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$vm" > "$t/etc/hosts"
  {
    printf '# /etc/fstab: static file system information.\n'
    printf '/dev/sda1 / ext4 defaults 0 1\n'
    [ "$vm" != debian12-web ] || printf '/dev/sdb1 /srv/data ext4 defaults 0 2\n'
  } > "$t/etc/fstab"
  cat > "$t/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=5
menuentry '${osver[$vm]}' {
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	linux /boot/vmlinuz-$k root=/dev/sda1 ro quiet
	initrd /boot/initrd.img-$k
}
EOF
  printf 'placeholder kernel %s\n' "$k" > "$t/boot/vmlinuz-$k"
  printf 'placeholder initrd %s\n' "$k" > "$t/boot/initrd.img-$k"
  printf 'Welcome to %s. Migrated from %s.\n' "$vm" "${provider[$vm]}" > "$t/home/admin/README.txt"
  printf 'export EDITOR=vi\n' > "$t/home/admin/.profile"
  for i in 1 2 3; do
    printf '%s %s systemd[1]: Started session %d of user admin.\n' "2024-05-0$i" "$vm" "$i"
  done > "$t/var/log/syslog"
  printf 'root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\n' > "$t/etc/passwd"
}

# make_data_tree <dir>: a data volume with a few files.
make_data_tree() {
  local t="$1"
  mkdir -p "$t/www/html" "$t/backups"
  printf '<html><body><h1>It works</h1></body></html>\n' > "$t/www/html/index.html"
  printf 'user_id,name\n1,alice\n2,bob\n3,carol\n' > "$t/backups/users.csv"
  head -c 2097152 /dev/urandom > "$t/backups/blob.bin" # 2 MiB that does not compress
}

# make_raw_disk <tree> <raw> <fs label>: MBR with one Linux partition at 1 MiB, ext4 inside it
# filled from <tree>, then checked with e2fsck (read-only) through the same offset.
make_raw_disk() {
  local tree="$1" raw="$2" label="$3"
  truncate -s "${disk_mib}M" "$raw"
  printf 'label: dos\nstart=%d, type=83, bootable\n' $(( part_offset / 512 )) | sfdisk -q "$raw"
  # With an offset, mke2fs must be told the size, or it sizes the fs to the whole file and it
  # would run past the end of the partition.
  mkfs.ext4 -q -F -b 4096 -L "$label" -d "$tree" -E "offset=$part_offset,root_owner=0:0" \
    "$raw" "${part_kib}k"
  e2fsck -fn "$raw?offset=$part_offset" >/dev/null 2>&1 ||
    die "e2fsck found problems in the filesystem of $(rel "$raw")"
}

# ---------------------------------------------------------------------------------------------
heading "Building sample source disks (MBR + ext4, no root needed)"

for vm in "${vms[@]}"; do
  dir="$out/$vm"
  mkdir -p "$dir"
  make_guest_tree "$vm" "$work/$vm-root"
  raw="$work/$vm-disk0.raw"
  make_raw_disk "$work/$vm-root" "$raw" rootfs
  part="$(sfdisk -d "$raw" | awk -F'[=,]' '/start=/{gsub(/ /,""); print "start " $2 ", size " $4 " sectors"}')"
  files="$(find "$work/$vm-root" -type f | wc -l)"

  case "${srcfmt[$vm]}" in
    vmdk) src="$dir/$vm-disk0.vmdk"; qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$raw" "$src"; how="VMDK streamOptimized" ;;
    vhdx) src="$dir/$vm-disk0.vhdx"; qemu-img convert -q -f raw -O vhdx "$raw" "$src"; how="VHDX" ;;
    vhd)  src="$dir/$vm-disk0.vhd";  qemu-img convert -q -f raw -O vpc -o subformat=dynamic,force_size=on "$raw" "$src"; how="VHD dynamic" ;;
  esac
  rm -f "$raw"
  all_disks+=("$vm disk0 ${srcfmt[$vm]} $src boot 0")
  note "$(printf '%-15s disk0  %-21s %s  (partition 1: %s; ext4 "rootfs", %d files, e2fsck clean)' \
    "$vm" "$how" "$(human "$(stat -c %s "$src")")" "$part" "$files")"

  if [ "$vm" = debian12-web ]; then
    make_data_tree "$work/$vm-data"
    raw="$work/$vm-disk1.raw"
    make_raw_disk "$work/$vm-data" "$raw" data
    src="$dir/$vm-disk1.vmdk"
    qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse "$raw" "$src"
    rm -f "$raw"
    all_disks+=("$vm disk1 vmdk $src data 1")
    files="$(find "$work/$vm-data" -type f | wc -l)"
    note "$(printf '%-15s disk1  %-21s %s  (partition 1; ext4 "data", %d files, e2fsck clean)' \
      "$vm" "VMDK monolithicSparse" "$(human "$(stat -c %s "$src")")" "$files")"
  fi
done
rm -rf -- "$work"

# ---------------------------------------------------------------------------------------------
heading "Writing Artifact Manifests v1"

declare -A manifest
for vm in "${vms[@]}"; do
  dir="$out/$vm"
  m="$dir/$vm.${mformat[$vm]}"
  manifest[$vm]="$m"
  # Disk entries for this VM: id format file bytes sha256 type boot_order
  entries=()
  for d in "${all_disks[@]}"; do
    read -r dvm id fmt path dtype order <<<"$d"
    [ "$dvm" = "$vm" ] || continue
    entries+=("$id $fmt $(basename "$path") $(stat -c %s "$path") $(sha256sum "$path" | cut -d' ' -f1) $dtype $order")
  done

  if [ "${mformat[$vm]}" = yaml ]; then
    {
      cat <<EOF
# Artifact Manifest v1 for $vm (written by scripts/demo.sh)
manifest_version: "1.0"
source:
  provider: ${provider[$vm]}
  vm_name: $vm
vm:
  cpu: ${cpus[$vm]}
  mem_gb: ${mem[$vm]}
  firmware: bios
  os_hint: linux
  os_version: "${osver[$vm]}"
disks:
EOF
      for e in "${entries[@]}"; do
        read -r id fmt file bytes sum dtype order <<<"$e"
        cat <<EOF
  - id: $id
    source_format: $fmt
    bytes: $bytes
    local_path: ./$file
    checksum: "sha256:$sum"
    boot_order_hint: $order
    disk_type: $dtype
EOF
      done
      cat <<EOF
profile: production
profile_overrides:
  pipeline:
    fix:
      enabled: false   # guest repair is not in this version
output:
  directory: ../converted/$vm
EOF
    } > "$m"
  else
    disks_json=""
    for e in "${entries[@]}"; do
      read -r id fmt file bytes sum dtype order <<<"$e"
      [ -z "$disks_json" ] || disks_json+=","
      disks_json+="
    {
      \"id\": \"$id\",
      \"source_format\": \"$fmt\",
      \"bytes\": $bytes,
      \"local_path\": \"./$file\",
      \"checksum\": \"sha256:$sum\",
      \"boot_order_hint\": $order,
      \"disk_type\": \"$dtype\"
    }"
    done
    cat > "$m" <<EOF
{
  "manifest_version": "1.0",
  "source": { "provider": "${provider[$vm]}", "vm_name": "$vm" },
  "vm": { "cpu": ${cpus[$vm]}, "mem_gb": ${mem[$vm]}, "firmware": "bios", "os_hint": "linux", "os_version": "${osver[$vm]}" },
  "disks": [$disks_json
  ],
  "profile": "production",
  "profile_overrides": { "pipeline": { "fix": { "enabled": false } } },
  "output": { "directory": "../converted/$vm" }
}
EOF
  fi
  note "$(rel "$m")"
done

printf '\n--- %s ---\n' "$(rel "${manifest[debian12-web]}")"
cat "${manifest[debian12-web]}"

# ---------------------------------------------------------------------------------------------
heading "Dry run of ${vms[0]} (plan only, nothing is written)"

dry_rc=0
"$bin" --manifest "${manifest[${vms[0]}]}" --dry-run || dry_rc=$?
[ "$dry_rc" -eq 0 ] || note "dry run exited with $dry_rc"

# ---------------------------------------------------------------------------------------------
declare -A rc
for vm in "${vms[@]}"; do
  heading "Converting $vm (${srcfmt[$vm]} -> qcow2)"
  r=0
  "$bin" --manifest "${manifest[$vm]}" --progress lines || r=$?
  rc[$vm]=$r
  note "exit code $r"
done

# ---------------------------------------------------------------------------------------------
heading "Summary"

failed=0
[ "$dry_rc" -eq 0 ] || failed=1
fmt_row='%-15s %-6s %-10s %-5s %-7s %-50s %s\n'
# shellcheck disable=SC2059
printf "$fmt_row" VM DISK STATUS EXIT SOURCE OUTPUT SIZE
declare -A status output
for vm in "${vms[@]}"; do
  report="$out/converted/$vm/report.json"
  st="no-report"
  if [ -f "$report" ]; then
    st="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$report")"
    # disk id -> output path, from the report's artifacts
    while IFS=$'\t' read -r id path; do
      output[$vm/$id]="$path"
    done < <(python3 -c '
import json, sys
for a in json.load(open(sys.argv[1])).get("artifacts", []):
    print(a["disk_id"], a["path"], sep="\t")' "$report")
  fi
  status[$vm]="$st"
  [ "$st" = succeeded ] && [ "${rc[$vm]}" -eq 0 ] || failed=1
  for d in "${all_disks[@]}"; do
    read -r dvm id fmt path _ _ <<<"$d"
    [ "$dvm" = "$vm" ] || continue
    o="${output[$vm/$id]:-}"
    if [ -n "$o" ] && [ -f "$o" ]; then
      size="$(human "$(stat -c %s "$o")")"
    else
      o="-"; size="-"
    fi
    # shellcheck disable=SC2059
    printf "$fmt_row" "$vm" "$id" "$st" "${rc[$vm]}" "$fmt" "$(rel "$o")" "$size"
  done
done

echo
echo "Reports:"
for vm in "${vms[@]}"; do
  report="$out/converted/$vm/report.json"
  if [ -f "$report" ]; then note "$(rel "$report")"; else note "$vm: no report.json written"; fi
done

# ---------------------------------------------------------------------------------------------
heading "Verifying outputs against their sources (qemu-img compare)"

for d in "${all_disks[@]}"; do
  read -r vm id fmt path _ _ <<<"$d"
  o="${output[$vm/$id]:-}"
  drv="$fmt"; [ "$fmt" != vhd ] || drv=vpc # qemu's driver for VHD is "vpc"
  if [ -z "$o" ] || [ ! -f "$o" ]; then
    note "$(printf '%-15s %-6s no output to compare' "$vm" "$id")"
    failed=1
    continue
  fi
  if qemu-img compare -q -f "$drv" -F qcow2 "$path" "$o"; then
    note "$(printf '%-15s %-6s %-5s vs qcow2: content identical' "$vm" "$id" "$fmt")"
  else
    note "$(printf '%-15s %-6s %-5s vs qcow2: CONTENT DIFFERS' "$vm" "$id" "$fmt")"
    failed=1
  fi
done

# The guest filesystems survived: read /etc/os-release back out of each converted boot disk.
heading "Reading the guest filesystems back from the qcow2 outputs"
for vm in "${vms[@]}"; do
  o="${output[$vm/disk0]:-}"
  [ -n "$o" ] && [ -f "$o" ] || { note "$vm: no output"; continue; }
  tmp="$out/.readback.raw"
  qemu-img convert -q -f qcow2 -O raw "$o" "$tmp"
  if e2fsck -fn "$tmp?offset=$part_offset" >/dev/null 2>&1; then
    pretty="$(debugfs -R 'cat /etc/os-release' "$tmp?offset=$part_offset" 2>/dev/null |
      sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p')"
    host="$(debugfs -R 'cat /etc/hostname' "$tmp?offset=$part_offset" 2>/dev/null)"
    note "$(printf '%-15s ext4 clean, hostname %s, %s' "$vm" "$host" "$pretty")"
  else
    note "$(printf '%-15s e2fsck reports problems in the converted filesystem' "$vm")"
    failed=1
  fi
  rm -f "$tmp"
done

# ---------------------------------------------------------------------------------------------
# Part 2: a real guest, converted without and with repairs, and booted.

real_done=0
# boot_line <report>: the boot test's result, reason and the console lines that decided it.
boot_line() {
  python3 - "$1" <<'PY'
import json, sys
stage = json.load(open(sys.argv[1]))["pipeline"]["stages"].get("validate", {})
bt = (stage.get("result") or {}).get("boot_test")
if not bt:
    print("  no boot test result in the report")
    sys.exit()
print(f"  boot test: {bt['result']} ({bt['reason']}, {bt['accel']}, {bt['firmware']}) after {bt['seconds']} s")
print(f"  {bt['message']}")
print("  last console lines:")
for line in [l for l in bt["console_tail"] if l.strip()][-6:]:
    print(f"    | {line}")
PY
}

heading "Part 2: a real Debian 12 guest, exported from VMware, booted on KVM"
if [ "$(id -u)" -ne 0 ]; then
  note "skipped: building and repairing a real guest needs root (debootstrap, libguestfs);"
  note "run 'sudo make demo' to see it"
else
  note "building the guest once (debootstrap; about 4-5 minutes the first time, then cached) ..."
  guest="$("$repo_root/scripts/build-test-guest.sh" | tail -n1)"
  note "guest: $guest ($(human "$(stat -c %s "$guest")"), streamOptimized VMDK)"
  note "its /etc/fstab and grub.cfg name the root /dev/sda1, as on VMware; on virtio it is /dev/vda1"
  real="$out/debian12-vmware"
  mkdir -p "$real"
  for variant in unrepaired repaired; do
    {
      cat <<EOF
# Artifact Manifest v1 (written by scripts/demo.sh): the real guest, $variant
manifest_version: "1.0"
source: {provider: vsphere, vm_name: debian12-$variant}
vm: {cpu: 1, mem_gb: 1, firmware: bios, os_hint: linux, os_version: "Debian 12"}
disks:
  - id: boot
    source_format: vmdk
    bytes: $(stat -c %s "$guest")
    local_path: $guest
    boot_order_hint: 0
    disk_type: boot
profile: production
EOF
      if [ "$variant" = unrepaired ]; then
        printf 'profile_overrides:\n  pipeline:\n    fix: {enabled: false}   # no guest repair\n'
      fi
      cat <<EOF
pipeline:
  validate:
    boot_test: {enabled: true, timeout: 900, success_pattern: 'login: *\$'}
output:
  directory: converted/$variant
EOF
    } >"$real/$variant.yaml"
  done
  printf '\n--- %s ---\n' "$(rel "$real/repaired.yaml")"
  cat "$real/repaired.yaml"

  heading "Converting it without repairs (fix disabled): the boot test must fail"
  r=0
  "$bin" --manifest "$real/unrepaired.yaml" --progress lines || r=$?
  note "exit code $r (1 expected: the VM failed its boot test)"
  report="$real/converted/unrepaired/report.json"
  [ ! -f "$report" ] || boot_line "$report"
  [ "$r" -eq 1 ] || failed=1

  heading "Converting it with the production profile: inspect, fix, convert, validate, boot"
  note "(several minutes under TCG: the guest's initramfs is rebuilt in the libguestfs appliance)"
  r=0
  "$bin" --manifest "$real/repaired.yaml" --progress lines || r=$?
  note "exit code $r"
  report="$real/converted/repaired/report.json"
  if [ -f "$report" ]; then
    echo "  what the fix stage changed in the guest's root and boot configuration:"
    python3 - "$report" <<'PY'
import json, sys
fix = json.load(open(sys.argv[1]))["pipeline"]["stages"].get("fix", {}).get("result") or {}
seen = set()
for c in fix.get("changes", []):
    key = (c["path"], c["before"].strip(), c["after"].strip())
    # grub.cfg is rewritten, regenerated by the guest's grub-mkconfig and rewritten again.
    if c["path"] in ("/etc/fstab", "/boot/grub/grub.cfg") and key not in seen:
        seen.add(key)
        print(f"    {c['path']} ({c['reason']})")
        print(f"      - {key[1]}")
        print(f"      + {key[2]}")
PY
    boot_line "$report"
  fi
  [ "$r" -eq 0 ] || failed=1
  real_done=1
fi

echo
if [ "$failed" -ne 0 ]; then
  echo "Demo FAILED: see the output above and the report.json files."
  exit 1
fi
echo "Demo finished: ${#vms[@]} VMs, ${#all_disks[@]} disks converted to qcow2 under $(rel "$out")/converted/."
if [ "$real_done" -eq 1 ]; then
  echo "The real Debian guest booted to its login prompt only after repair: $(rel "$out")/debian12-vmware/."
fi
