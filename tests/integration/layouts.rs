//! Real guests beyond the basic layout, each built by `scripts/build-test-guest.sh LAYOUT`,
//! converted with the production profile and booted to the login prompt on virtio; each with
//! a negative control that fails without the repair its layout needs, for the reason the layout
//! predicts.

use std::path::PathBuf;

use crate::boot::{boot_test_of, tail_text};
use crate::support::*;

/// Long enough for a guest whose initramfs waits for a root that never comes (initramfs-tools
/// gives up after 30 s) and for a full boot under TCG.
const BOOT_TIMEOUT: u64 = 900;

/// A manifest for the guest's VMDK, the production profile and the boot test, plus `extra`
/// (YAML, at the top level).
fn production_manifest(dir: &TestDir, name: &str, disk: &std::path::Path, extra: &str) -> PathBuf {
    manifest_with_firmware(dir, name, disk, "bios", extra)
}

/// [`production_manifest`] with the VM's firmware (`bios` or `uefi`).
fn manifest_with_firmware(
    dir: &TestDir,
    name: &str,
    disk: &std::path::Path,
    firmware: &str,
    extra: &str,
) -> PathBuf {
    dir.write(
        &format!("{name}.yaml"),
        &format!(
            "manifest_version: '1.0'\nsource: {{provider: vsphere, vm_name: {name}}}\n\
             vm: {{firmware: {firmware}, os_hint: linux}}\n\
             disks:\n  - {{id: boot, source_format: vmdk, bytes: {}, local_path: '{}', boot_order_hint: 0, disk_type: boot}}\n\
             output: {{format: qcow2}}\nprofile: production\n{extra}\
             pipeline:\n  validate:\n    boot_test: {{enabled: true, timeout: {BOOT_TIMEOUT}, success_pattern: 'login: *$'}}\n",
            file_size(disk),
            disk.display()
        ),
    )
}

/// Runs the manifest at `path` (`--config`, no progress display).
fn convert(path: &std::path::Path) -> Run {
    run(hyper2kvm()
        .arg("--config")
        .arg(path)
        .args(["--progress", "none"]))
}

/// Layout 5: initramfs-tools with `MODULES=dep` and an image built host-only on VMware (no
/// virtio). `initramfs_rebuild: auto` finds the drivers missing, rebuilds the image with the
/// guest's own update-initramfs (virtio added to its modules list), and the guest boots.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        not_root,
        missing_tool = "debootstrap",
        missing_tool = "qemu-img",
        missing_tool = "sfdisk",
        missing_tool = "mkfs.ext4",
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs root and what scripts/build-test-guest.sh runs (install: scripts/install-deps.sh full)"
)]
fn e2e_modules_dep_host_only_initramfs_is_rebuilt_and_boots() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest_layout("modules-dep") else {
        return;
    };
    let dir = TestDir::new();
    let path = production_manifest(&dir, "hostonly", &guest, "");
    let r = convert(&path);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let fix = &report["pipeline"]["stages"]["fix"]["result"];
    let images = fix["initramfs"].as_array().expect("initramfs decisions");
    assert_eq!(images.len(), 1, "{fix:#}");
    assert_eq!(images[0]["rebuilt"], true, "{fix:#}");
    assert!(
        images[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("virtio_blk")),
        "{fix:#}"
    );
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "passed", "{bt:#}");
    assert_eq!(bt["reason"], "success_pattern");
}

/// Its negative control: every other repair made (root and fstab by UUID), the rebuild turned
/// off. The kept image has no virtio_blk, so the root disk never appears: initramfs-tools gives
/// up waiting for the UUID it was told, which the console shows.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        not_root,
        missing_tool = "debootstrap",
        missing_tool = "qemu-img",
        missing_tool = "sfdisk",
        missing_tool = "mkfs.ext4",
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs root and what scripts/build-test-guest.sh runs (install: scripts/install-deps.sh full)"
)]
fn e2e_modules_dep_without_the_rebuild_does_not_find_its_root() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest_layout("modules-dep") else {
        return;
    };
    let dir = TestDir::new();
    let path = production_manifest(
        &dir,
        "norebuild",
        &guest,
        "profile_overrides:\n  pipeline:\n    fix: {regen_initramfs: false}\n",
    );
    let r = convert(&path);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["pipeline"]["stages"]["fix"]["success"], true);
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "failed", "{bt:#}");
    assert_eq!(bt["reason"], "emergency_shell", "{bt:#}");
    let tail = tail_text(bt);
    // The root was named by its UUID (the grub repair was made), and still not found.
    assert!(
        tail.contains("Gave up waiting for root") && tail.contains("UUID="),
        "{tail}"
    );
    assert!(!tail.contains("/dev/sda1 does not exist"), "{tail}");
}

/// Layout 1: UEFI, GPT, the ESP as `/dev/sda1` (vfat) and the root as `/dev/sda2` in fstab and on
/// the kernel command line, GRUB as the removable `EFI/BOOT/BOOTX64.EFI`. Repaired, it boots under
/// OVMF to its login prompt.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        not_root,
        missing_ovmf,
        missing_tool = "debootstrap",
        missing_tool = "qemu-img",
        missing_tool = "sfdisk",
        missing_tool = "mkfs.ext4",
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs root, OVMF and what scripts/build-test-guest.sh runs (install: scripts/install-deps.sh full)"
)]
fn e2e_uefi_guest_boots_under_ovmf() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest_layout("uefi") else {
        return;
    };
    let dir = TestDir::new();
    let path = manifest_with_firmware(&dir, "efi", &guest, "uefi", "");
    let r = convert(&path);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "passed", "{bt:#}");
    assert_eq!(bt["firmware"], "uefi", "{bt:#}");
    let changes = report["pipeline"]["stages"]["fix"]["result"].to_string();
    assert!(
        changes.contains("/boot/efi"),
        "the ESP's fstab line was repaired: {changes}"
    );
}

/// Its negative control: the fstab left as it was (`fstab_mode: noop`). The kernel finds its
/// root (the command line was repaired), but the ESP's `/dev/sda1` never appears, so systemd
/// cannot mount `/boot/efi` and stops in emergency mode.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        not_root,
        missing_ovmf,
        missing_tool = "debootstrap",
        missing_tool = "qemu-img",
        missing_tool = "sfdisk",
        missing_tool = "mkfs.ext4",
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs root, OVMF and what scripts/build-test-guest.sh runs (install: scripts/install-deps.sh full)"
)]
fn e2e_uefi_guest_without_the_fstab_repair_cannot_mount_its_esp() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest_layout("uefi") else {
        return;
    };
    let dir = TestDir::new();
    let path = manifest_with_firmware(
        &dir,
        "efinofstab",
        &guest,
        "uefi",
        "profile_overrides:\n  pipeline:\n    fix: {fstab_mode: noop}\n",
    );
    let r = convert(&path);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "failed", "{bt:#}");
    assert_eq!(bt["reason"], "emergency_shell", "{bt:#}");
    let tail = tail_text(bt);
    assert!(
        tail.contains("boot-efi.mount") || tail.contains("/boot/efi"),
        "{tail}"
    );
}
