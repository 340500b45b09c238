#!/usr/bin/env bash
# Installs the system packages hyper2kvm's demo and test suite need, only when they are missing.
#
# Debian 12 machines of this kind ship qemu-utils 10 from bookworm-backports; its
# "Breaks: qemu-system-common (<< 8.0)" makes a plain `apt-get install libguestfs-tools` fail,
# so when qemu-utils is a backports build the qemu system emulator is pinned to backports too
# (per package, so nothing else is upgraded).
#
# Usage: scripts/install-deps.sh [core|full|bench]
#   core:  qemu-img, qemu-io, e2fsprogs, fdisk, openssl, python3 (conversion and hook tests, demo),
#          make and groff (`make install` and its test)
#   full:  core + libguestfs, qemu-system, OVMF, libvirt-clients, libvirtd, xmllint, debootstrap,
#          chromium (the HTML report tests and scripts/screenshot-report.sh, headless),
#          Python's jsonschema (the tests validate manifests, reports and events against schemas/),
#          ansible-core and kubernetes-validate (pinned, from PyPI) for the scale-out tests
#   bench: core + hyperfine, /usr/bin/time, coreutils' sha256sum (`make bench`); and, only when
#          libguestfs is already installed, virt-v2v with nbdkit and nbdcopy, which it needs but
#          does not pull in (virt-v2v would otherwise drag in libguestfs and a qemu that clashes
#          with the backports qemu-utils: install `full` first for item 7 of the benchmark)
set -euo pipefail

level="${1:-full}"
export DEBIAN_FRONTEND=noninteractive

need=()
want() { # want <command> <package...>: queue the packages when the command is missing
  local cmd="$1"; shift
  command -v "$cmd" >/dev/null 2>&1 || need+=("$@")
}
want_file() { # want_file <path> <package...>
  local path="$1"; shift
  [ -e "$path" ] || need+=("$@")
}

want qemu-img qemu-utils
want qemu-io qemu-utils
want mkfs.ext4 e2fsprogs
want sfdisk fdisk
want openssl openssl
want python3 python3
# `make install` and its test; groff renders the man page in that test.
want make make
want groff groff-base

if [ "$level" = full ]; then
  want guestfish libguestfs-tools
  # The appliance formats and repairs XFS guests only with this package.
  dpkg-query -W -f='${Status}' libguestfs-xfs 2>/dev/null | grep -q "ok installed" || need+=(libguestfs-xfs)
  # NTFS (the Windows guest fixture, Windows inspection) comes from the host's ntfs-3g.
  want mkntfs ntfs-3g
  want virt-customize libguestfs-tools
  want virt-xml-validate libvirt-clients
  want virsh libvirt-clients
  # The libvirt tests start their own libvirtd (qemu driver) and virtlogd; no systemd needed.
  want libvirtd libvirt-daemon-system
  want virtlogd libvirt-daemon-system
  want xmllint libxml2-utils
  want debootstrap debootstrap
  want cryptsetup cryptsetup-bin
  want_file /usr/share/OVMF/OVMF_CODE.fd ovmf
  # supermin needs a kernel in /boot; this machine's own kernel has no files there.
  ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
  want qemu-system-x86_64 qemu-system-x86
  # The HTML report tests load the pages in headless Chromium.
  want chromium chromium
  # The scale-out tests run the Ansible playbook for real (local connection).
  want ansible-playbook ansible-core
  # Debian's package serves /usr/bin/python3; see pip_jsonschema below for another python3.
  python3 -c 'import jsonschema' >/dev/null 2>&1 || need+=(python3-jsonschema)
fi

if [ "$level" = bench ]; then
  want hyperfine hyperfine
  want_file /usr/bin/time time
  want sha256sum coreutils
  if command -v guestfish >/dev/null 2>&1; then
    want virt-v2v virt-v2v
    want nbdkit nbdkit
    want nbdcopy libnbd-bin
  fi
fi

# The Kubernetes OpenAPI schemas the scale-out tests validate the emitted Job against: from
# PyPI, pinned, with the pip of the python3 on PATH (the one the tests run).
KUBERNETES_VALIDATE_VERSION=1.37.0
install_kubernetes_validate() {
  if kubernetes-validate --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    echo "install-deps: kubernetes-validate $KUBERNETES_VALIDATE_VERSION is missing; run as root" >&2
    return 1
  fi
  echo "install-deps: installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION with $(command -v python3)'s pip"
  local klog
  klog="$(mktemp /tmp/hyper2kvm-install-deps.XXXXXX.log)"
  if ! python3 -m pip install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >"$klog" 2>&1; then
    tail -n 20 "$klog" >&2
    echo "install-deps: pip install kubernetes-validate failed; full log in $klog" >&2
    return 1
  fi
  # pyenv puts new console scripts on PATH only through its shims.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
}

if [ "${#need[@]}" -eq 0 ]; then
  if [ "$level" = full ]; then install_kubernetes_validate; fi
  echo "install-deps: everything for '$level' is present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${need[*]}; run as root (or install them yourself)" >&2
  exit 1
fi

# De-duplicate, keep order.
mapfile -t need < <(printf '%s\n' "${need[@]}" | awk '!seen[$0]++')

qemu_utils_version="$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)"
backports=0
case "$qemu_utils_version" in *bpo12*) backports=1 ;; esac

if [ "$backports" -eq 1 ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Copy the URI of the existing Debian entry so the same mirror is used.
  uri="$(grep -rhs '^URIs:.*debian' /etc/apt/sources.list.d/*.sources | grep -v security | head -n1 | awk '{print $2}')"
  [ -n "$uri" ] || uri="$(grep -hs '^deb .*debian' /etc/apt/sources.list | grep -v security | head -n1 | awk '{print $2}')"
  [ -n "$uri" ] || uri="http://deb.debian.org/debian"
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

pkgs=()
for p in "${need[@]}"; do
  case "$p" in
    qemu-system-x86|libguestfs-tools)
      if [ "$backports" -eq 1 ]; then
        pkgs+=("$p" qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports
               qemu-system-data/bookworm-backports seabios/bookworm-backports)
      else
        pkgs+=("$p")
      fi ;;
    *) pkgs+=("$p") ;;
  esac
done
mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | awk '!seen[$0]++')

echo "install-deps: installing ${pkgs[*]}"
log="$(mktemp /tmp/hyper2kvm-install-deps.XXXXXX.log)"
if ! { apt-get update -qq && apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${pkgs[@]}"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "install-deps: apt-get failed; full log in $log" >&2
  exit 1
fi
# The tests run the python3 on PATH. When that is not Debian's (pyenv, a virtualenv), Debian's
# python3-jsonschema is not on its path: it gets the module from PyPI with its own pip.
if [ "$level" = full ] && ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
  echo "install-deps: $(command -v python3) is not Debian's python3; installing jsonschema with its pip"
  if ! python3 -m pip install --quiet jsonschema >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install-deps: pip install jsonschema failed; full log in $log" >&2
    exit 1
  fi
fi
if [ "$level" = full ]; then install_kubernetes_validate; fi
echo "install-deps: done (log in $log)"
