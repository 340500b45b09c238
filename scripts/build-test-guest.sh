#!/usr/bin/env bash
# Builds (once) a real Debian 12 guest that looks like a VMware guest, for the boot tests, the
# demo and benchmarks: debootstrap minbase with a kernel, systemd and GRUB on an MBR disk with
# one ext4 partition; /etc/fstab and the kernel command line in grub.cfg name the root
# /dev/sda1 (as on VMware's SCSI/SATA disks), the console is on the serial port, and the disk is
# saved as a streamOptimized VMDK (what a vSphere export gives). On KVM's virtio-blk the disk is
# /dev/vda, so this guest does not boot there until hyper2kvm's fix stage has repaired it.
#
# Contract: prints the absolute path of the cached VMDK as the LAST line of stdout (everything
# else goes to stderr), building it only when it is missing. The cache is
#   ${HYPER2KVM_TEST_CACHE:-~/.cache/hyper2kvm-test}/debian-guest-<hash of this recipe>/disk.vmdk
# built in a temporary directory next to it and renamed into place, so a half-built guest is
# never seen; concurrent callers wait for one build (flock). Editing the recipe (anything but
# comments) changes the hash and builds a new guest.
#
# Needs root (debootstrap, device nodes in the guest tree) and the packages debootstrap,
# qemu-utils, fdisk, e2fsprogs and libguestfs-tools (scripts/install-deps.sh full). Takes about
# 3 minutes and 1.5 GB of scratch space; the cached VMDK is about 350 MB.
#
# Layouts (the argument; default basic):
#   basic        the guest above: its initramfs (initramfs-tools, MODULES=most) carries virtio.
#   modules-dep  the same with initramfs-tools set to MODULES=dep and an image built host-only on
#                "VMware": only the VMware storage drivers (vmw_pvscsi, mptspi, ahci), no virtio,
#                so it does not find its root on KVM until the fix stage rebuilds the image.
#   uefi         GPT: the ESP (vfat) as /dev/sda1, the root (ext4) as /dev/sda2, grub-efi
#                installed as the removable EFI/BOOT/BOOTX64.EFI (no NVRAM entry, as a cloned
#                VM has none); booted under OVMF.
#
# Usage: scripts/build-test-guest.sh [LAYOUT]
set -euo pipefail
export LC_ALL=C
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

script="$(realpath -- "${BASH_SOURCE[0]}")"
say() { printf 'build-test-guest: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

layout="${1:-basic}"
case "$layout" in
  basic | modules-dep | uefi) ;;
  *) die "unknown layout '$layout' (expected: basic, modules-dep, uefi)" ;;
esac
# What the layout puts where.
if [ "$layout" = uefi ]; then
  grub_pkg=grub-efi-amd64 rootdev=/dev/sda2 grubroot=hd0,gpt2 partmod=part_gpt
else
  grub_pkg=grub-pc rootdev=/dev/sda1 grubroot=hd0,msdos1 partmod=part_msdos
fi

# The recipe is this file without its comments, and the layout: comment edits do not rebuild
# the guest.
recipe_hash="$({ grep -v '^[[:space:]]*#' "$script"; echo "layout=$layout"; } | sha256sum | cut -c1-16)"
cache_root="${HYPER2KVM_TEST_CACHE:-${HOME:-/root}/.cache/hyper2kvm-test}"
name="debian-guest"
[ "$layout" = basic ] || name="debian-guest-$layout"
final="$cache_root/$name-$recipe_hash"

if [ -f "$final/disk.vmdk" ]; then
  printf '%s\n' "$final/disk.vmdk"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the guest needs root (debootstrap); run it as root"
tools="debootstrap qemu-img sfdisk mkfs.ext4 e2fsck dumpe2fs guestfish flock sha256sum"
[ "$layout" != uefi ] || tools="$tools mkfs.fat"
for tool in $tools; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is not installed; run scripts/install-deps.sh full"
done

mkdir -p "$cache_root"
exec 9>"$cache_root/$name-$recipe_hash.lock"
flock 9
if [ -f "$final/disk.vmdk" ]; then # another caller built it while we waited
  printf '%s\n' "$final/disk.vmdk"
  exit 0
fi

work="$(mktemp -d "$cache_root/.$name-$recipe_hash.build.XXXXXX")"
cleanup() { rm -rf -- "$work"; }
trap cleanup EXIT
started=$SECONDS

# The mirror of the machine's existing Debian entry (deb822 first, then one-line format).
mirror="$(grep -rhs '^URIs:.*debian' /etc/apt/sources.list.d/*.sources | grep -v security |
  head -n1 | awk '{print $2}')"
[ -n "$mirror" ] ||
  mirror="$(grep -hs '^deb .*debian' /etc/apt/sources.list | grep -v security | head -n1 | awk '{print $2}')"
[ -n "$mirror" ] || mirror="http://deb.debian.org/debian"

hostname=h2k-debian12
root="$work/root"
say "debootstrap bookworm (minbase + kernel, GRUB, systemd) from $mirror"
debootstrap --variant=minbase \
  --include=linux-image-amd64,$grub_pkg,systemd-sysv,initramfs-tools,udev \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  die "debootstrap failed"
}

kernel="$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)")"
kver="${kernel#vmlinuz-}"
[ -f "$root/boot/initrd.img-$kver" ] || die "debootstrap left no initramfs for $kver"

if [ "$layout" = modules-dep ]; then
  # initramfs-tools as a host-only install leaves it, and an image built on VMware, where
  # MODULES=dep finds the VMware controllers only: built here from an explicit list, since dep
  # would look at this machine's own (virtio) devices.
  say "building a host-only initramfs without virtio (MODULES=dep)"
  conf="$root/etc/initramfs-tools/initramfs.conf"
  sed -i 's/^MODULES=.*/MODULES=list/' "$conf"
  printf '%s\n' vmw_pvscsi mptspi ahci sd_mod ext4 >"$root/etc/initramfs-tools/modules"
  mount -t proc proc "$root/proc"
  chroot "$root" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 || {
    umount "$root/proc"
    cat "$work/initramfs.log" >&2
    die "update-initramfs failed"
  }
  umount "$root/proc"
  sed -i 's/^MODULES=.*/MODULES=dep/' "$conf"
  # Listed to a file first: grep -q ending the pipe early would fail it under pipefail.
  chroot "$root" lsinitramfs "/boot/initrd.img-$kver" >"$work/initramfs.list"
  if grep -q '/virtio' "$work/initramfs.list"; then
    die "the host-only initramfs still carries virtio drivers"
  fi
  grep -q 'vmw_pvscsi' "$work/initramfs.list" || die "the host-only initramfs lacks vmw_pvscsi"
fi

# What a VMware guest installed with device names looks like.
printf '%s\n' "$hostname" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$hostname" >"$root/etc/hosts"
cat >"$root/etc/fstab" <<EOF
# /etc/fstab: static file system information.
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
$rootdev       /               ext4    errors=remount-ro 0       1
EOF
if [ "$layout" = uefi ]; then
  mkdir -p "$root/boot/efi"
  printf '/dev/sda1       /boot/efi       vfat    umask=0077      0       1\n' >>"$root/etc/fstab"
fi
cat >"$root/etc/default/grub" <<'EOF'
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
# The admin wanted kernel device names on the kernel command line.
GRUB_DISABLE_LINUX_UUID=true
EOF
# As grub-mkconfig writes it on VMware with GRUB_DISABLE_LINUX_UUID=true.
cat >"$root/boot/grub/grub.cfg" <<EOF
# Generated for the hyper2kvm test guest (as grub-mkconfig would on VMware)
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod $partmod
insmod ext2
set root='$grubroot'
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os {
	insmod $partmod
	insmod ext2
	set root='$grubroot'
	echo	'Loading Linux $kver ...'
	linux	/boot/vmlinuz-$kver root=$rootdev ro console=ttyS0,115200
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-$kver
}
EOF
# A login prompt on the serial console (systemd would also start it for console=ttyS0).
mkdir -p "$root/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/serial-getty@.service \
  "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
# A fresh machine id on first boot, as after a clone.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Package caches are not part of the guest.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/debootstrap"

# MBR disk, one bootable Linux partition from 1 MiB to the end, ext4 filled from the tree
# (mke2fs -d: no loop device, no mount). 3 GiB leaves more than 1 GiB free in the root
# filesystem, which an initramfs rebuild needs.
disk_mib=3072
raw="$work/disk.raw"
truncate -s "${disk_mib}M" "$raw"
if [ "$layout" = uefi ]; then
  # GPT: a 260 MiB EFI System Partition from 1 MiB (enough clusters for FAT32), then the root
  # to 1 MiB before the end (the backup GPT is there).
  esp_offset=1048576 esp_mib=260
  part_offset=$((esp_offset + esp_mib * 1048576))
  root_mib=$((disk_mib - 1 - esp_mib - 1))
  printf 'label: gpt\nstart=%d, size=%d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP\nstart=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' \
    $((esp_offset / 512)) $((esp_mib * 2048)) $((part_offset / 512)) $((root_mib * 2048)) |
    sfdisk -q "$raw"
  root_kib=$((root_mib * 1024))
  mkfs.fat -F 32 -n ESP --offset $((esp_offset / 512)) "$raw" $((esp_mib * 1024)) >/dev/null
else
  part_offset=1048576
  printf 'label: dos\nstart=%d, type=83, bootable\n' $((part_offset / 512)) | sfdisk -q "$raw"
  root_kib=$((disk_mib * 1024 - part_offset / 1024))
fi
say "writing the root filesystem ($(du -sh "$root" | cut -f1) of files)"
mkfs.ext4 -q -F -b 4096 -L rootfs -d "$root" -E "offset=$part_offset" "$raw" "${root_kib}k"
e2fsck -fn "$raw?offset=$part_offset" >/dev/null 2>&1 || die "e2fsck found problems in the new filesystem"
free_bytes="$(dumpe2fs -h "$raw?offset=$part_offset" 2>/dev/null |
  awk -F: '/^Free blocks/{f=$2} /^Block size/{b=$2} END{printf "%d", f*b}')"
[ "$free_bytes" -ge $((1024 * 1024 * 1024)) ] || die "only $free_bytes bytes free in the root filesystem"

# GRUB by the guest's own grub-install, run in the libguestfs appliance where the disk is
# /dev/sda: the boot code into the MBR and the gap after it, or, for UEFI, GRUB as the removable
# EFI/BOOT/BOOTX64.EFI on the ESP. Then the GRUB_DISABLE_LINUX_UUID-style grub.cfg is checked to
# still name the root by its device.
say "installing GRUB (libguestfs appliance)"
export LIBGUESTFS_BACKEND="${LIBGUESTFS_BACKEND:-direct}"
export LIBGUESTFS_BACKEND_SETTINGS="${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}"
if [ "$layout" = uefi ]; then
  grub_script='run
mount /dev/sda2 /
mount /dev/sda1 /boot/efi
command "/usr/sbin/grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram --no-uefi-secure-boot"
-rm-f /boot/grub/device.map
is-file /boot/efi/EFI/BOOT/BOOTX64.EFI
umount-all'
else
  grub_script='run
mount /dev/sda1 /
command "/usr/sbin/grub-install --target=i386-pc /dev/sda"
-rm-f /boot/grub/device.map
umount-all'
fi
guestfish --format=raw -a "$raw" >"$work/grub-install.log" 2>&1 <<<"$grub_script" || {
  cat "$work/grub-install.log" >&2
  die "grub-install failed"
}
if [ "$layout" = uefi ] && ! grep -qx true "$work/grub-install.log"; then
  cat "$work/grub-install.log" >&2
  die "grub-install wrote no EFI/BOOT/BOOTX64.EFI"
fi
grep -q "root=$rootdev" "$root/boot/grub/grub.cfg" || die "grub.cfg lost root=$rootdev"

say "saving as a streamOptimized VMDK"
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$raw" "$work/disk.vmdk"
rm -f "$raw"
{
  echo "recipe $recipe_hash, built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - started)) s"
  echo "layout $layout; kernel $kver; mirror $mirror; disk ${disk_mib} MiB, root $rootdev ext4"
  echo "root filesystem free: $((free_bytes / 1024 / 1024)) MiB"
} >"$work/info.txt"

mkdir "$work/guest"
mv "$work/disk.vmdk" "$work/info.txt" "$work/guest/"
mv -T "$work/guest" "$final"
say "built $final/disk.vmdk in $((SECONDS - started)) s ($(du -h "$final/disk.vmdk" | cut -f1))"
printf '%s\n' "$final/disk.vmdk"
