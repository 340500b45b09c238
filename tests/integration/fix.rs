//! Offline guest repair on phony guests: golden guest files after the fix, sources untouched.

use std::path::{Path, PathBuf};

use crate::guests::{Guest, phony_guest, read_back};
use crate::support::*;

fn tools() -> bool {
    require_tool("qemu-img") && require_tool("guestfish")
}

/// A phony guest saved as `name` in `format` (raw, or a streamOptimized VMDK like VMware's).
fn source(dir: &TestDir, guest: Guest, name: &str, vmdk: bool) -> PathBuf {
    let raw = dir.join(&format!("{name}.raw"));
    phony_guest(guest, &raw);
    if !vmdk {
        return raw;
    }
    let out = dir.join(&format!("{name}.vmdk"));
    raw_to_stream_optimized(&raw, &out);
    out
}

fn manifest(dir: &TestDir, disk: &Path, format: &str, extra: &str) -> PathBuf {
    dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: guest}}\n{extra}\ndisks:\n  - {{id: boot, source_format: {format}, bytes: {}, local_path: {}}}\n",
            file_size(disk),
            disk.display()
        ),
    )
}

fn uuid_of(blkid: &str) -> String {
    blkid
        .lines()
        .find_map(|l| l.strip_prefix("UUID: "))
        .expect("the device has a UUID")
        .trim()
        .to_owned()
}

const READ_BACK: &[&str] = &[
    "/etc/fstab",
    "/etc/default/grub",
    "/boot/grub/grub.cfg",
    "/boot/grub/device.map",
    "/etc/initramfs-tools/modules",
    "/etc/network/interfaces",
    "/etc/netplan/01-netcfg.yaml",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/vmware-tools/tools.conf",
    "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
    "/var/log/h2k-tools.log",
];

/// The full production pipeline on a VMware-style Debian guest: the output boots-to-be has
/// stable fstab and kernel command lines, virtio drivers in its initramfs config, no MAC
/// pinning, no VMware tools; the source VMDK's bytes are unchanged.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn debian_production_run() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let src = source(&dir, Guest::Debian, "debian", true);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "vmdk",
        "profile: production\nprofile_overrides:\n  pipeline:\n    fix: {remove_vmware_tools: true, print_fstab: true}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before, "the source disk was modified");
    let out = dir.join("output");
    assert_eq!(
        tree(&out),
        ["boot.qcow2", "guest.xml", "report.html", "report.json"],
        "no overlay or work files left"
    );
    assert!(
        r.stdout.contains("/etc/fstab before:"),
        "print_fstab: {}",
        r.stdout
    );

    let report = read_json(&out.join("report.json"));
    let fix = &report["pipeline"]["stages"]["fix"]["result"];
    assert_eq!(fix["mode"], "overlay");
    assert_eq!(fix["guest"]["distro"], "debian");
    assert_eq!(
        report["pipeline"]["stages"]["inspect"]["result"]["guest"]["distro"],
        "debian"
    );
    assert_eq!(
        report["pipeline"]["stages"]["validate"]["result"]["validation_results"][0]["content_check"],
        "identical",
        "validate compares the output with the repaired overlay"
    );

    let files = read_back(&out.join("boot.qcow2"), "qcow2", READ_BACK);
    let root = uuid_of(&files["blkid:/dev/sda1"]);
    let swap = uuid_of(&files["blkid:/dev/sda2"]);
    insta::assert_snapshot!(
        "debian_fstab",
        files["/etc/fstab"]
            .replace(&root, "[ROOT-UUID]")
            .replace(&swap, "[SWAP-UUID]")
    );
    let grub = &files["/boot/grub/grub.cfg"];
    assert!(grub.contains(&format!("root=UUID={root}")), "{grub}");
    assert!(!grub.contains("root=/dev/sda1"), "{grub}");
    assert!(files["/etc/default/grub"].contains(&format!("root=UUID={root}")));
    assert!(
        !files.contains_key("/boot/grub/device.map"),
        "stale device.map removed"
    );
    let modules = &files["/etc/initramfs-tools/modules"];
    for m in [
        "virtio_blk",
        "virtio_scsi",
        "virtio_net",
        "virtio_pci",
        "virtio_console",
    ] {
        assert!(
            modules.lines().any(|l| l.trim() == m),
            "{m} missing: {modules}"
        );
    }
    assert!(modules.contains("loop"), "existing modules kept");
    assert!(!files["/etc/network/interfaces"].contains("hwaddress"));
    assert!(!files["/etc/netplan/01-netcfg.yaml"].contains("macaddress"));
    assert!(!files.contains_key("/etc/udev/rules.d/70-persistent-net.rules"));
    assert!(!files.contains_key("/etc/vmware-tools/tools.conf"));
    // The enablement link dangled (its unit was gone) and is removed all the same.
    assert!(
        !files
            .contains_key("link:/etc/systemd/system/multi-user.target.wants/open-vm-tools.service"),
        "dangling VMware tools link left"
    );
    let log = &files["/var/log/h2k-tools.log"];
    assert!(
        log.contains("update-initramfs -u -k 6.1.0-13-amd64"),
        "{log}"
    );
    // The network repair removed a udev rule that initramfs-tools copies into its images, so the
    // image is rebuilt without being listed.
    assert_eq!(
        fix["initramfs"],
        serde_json::json!([{
            "kernel": "6.1.0-13-amd64",
            "image": null,
            "rebuilt": true,
            "reason": "/etc/udev/rules.d/70-persistent-net.rules changed, and the initramfs carries a copy"
        }])
    );
    assert!(
        log.contains("grub-mkconfig -o /boot/grub/grub.cfg"),
        "{log}"
    );
    assert!(log.contains("dpkg --purge open-vm-tools"), "{log}");
    let backups = fix["backups"].as_array().expect("backups");
    assert!(
        backups.iter().any(|b| b
            .as_str()
            .unwrap_or_default()
            .starts_with("/etc/fstab.backup.hyper2kvm.")),
        "{backups:?}"
    );
}

/// A RHEL-like guest on XFS: BLS entries and /etc/default/grub get stable root= and resume=,
/// dracut gets a virtio drop-in, ifcfg loses HWADDR, SELinux relabels on first boot.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn rhel_xfs_dracut_bls() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let src = source(&dir, Guest::Rhel, "rhel", false);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "raw",
        "pipeline:\n  fix: {enabled: true, remove_vmware_tools: true}\n  convert: {enabled: true}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before);
    let entry = "/boot/loader/entries/0123456789abcdef-5.14.0-362.8.1.el9_3.x86_64.conf";
    let files = read_back(
        &dir.join("output/boot.qcow2"),
        "qcow2",
        &[
            entry,
            "/etc/default/grub",
            "/etc/sysconfig/network-scripts/ifcfg-ens192",
            "/etc/dracut.conf.d/hyper2kvm-virtio.conf",
            "/.autorelabel",
            "/var/log/h2k-tools.log",
            "/etc/vmware-tools/tools.conf",
            "/usr/lib/systemd/system/vmtoolsd.service",
        ],
    );
    let root = uuid_of(&files["blkid:/dev/sda1"]);
    let swap = uuid_of(&files["blkid:/dev/sda2"]);
    let bls = &files[entry];
    assert!(bls.contains(&format!("root=UUID={root}")), "{bls}");
    assert!(bls.contains(&format!("resume=UUID={swap}")), "{bls}");
    assert!(files["/etc/default/grub"].contains(&format!("resume=UUID={swap}")));
    assert!(!files["/etc/sysconfig/network-scripts/ifcfg-ens192"].contains("HWADDR"));
    assert!(files["/etc/dracut.conf.d/hyper2kvm-virtio.conf"].contains("virtio_blk"));
    assert!(
        files.contains_key("/.autorelabel"),
        "SELinux relabel requested"
    );
    let log = &files["/var/log/h2k-tools.log"];
    assert!(log.contains("dracut -f"), "{log}");
    // The guest's rpm was asked, and removed exactly the package it has.
    // (the fake rpm's echo turns the query format's `\n` into a line break)
    assert!(log.contains("rpm -q --qf %{NAME}"), "{log}");
    assert!(
        log.contains(" open-vm-tools open-vm-tools-desktop "),
        "{log}"
    );
    assert!(log.contains("rpm -e --nodeps open-vm-tools\n"), "{log}");
    assert!(!files.contains_key("/etc/vmware-tools/tools.conf"));
    assert!(!files.contains_key("/usr/lib/systemd/system/vmtoolsd.service"));
}

/// `--dry-run --preview-guest` with fix: the changes are computed from a read-only view and
/// printed; nothing is written anywhere.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn ubuntu_dry_run_prints_changes() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let src = source(&dir, Guest::Ubuntu, "ubuntu", false);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "raw",
        "pipeline:\n  fix: {enabled: true}\n  convert: {enabled: true}",
    );
    let snapshot = tree(dir.path());
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--dry-run", "--preview-guest"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before);
    assert_eq!(tree(dir.path()), snapshot, "a dry run writes nothing");
    assert!(
        r.stdout.contains("reading the guest read-only"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("guest: Ubuntu 22.04.4 LTS (linux ubuntu)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("/etc/fstab:3"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("/etc/default/grub.d/50-cloudimg-settings.cfg:1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("- /dev/sda1"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("would run in the guest: update-initramfs"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("    rebuild its initramfs (kernel 6.1.0-13-amd64): "),
        "{}",
        r.stdout
    );
}

/// Convert off, with consent in the manifest: repairs go into the source itself, after a backup
/// copy of it.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn suse_in_place_with_backup() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let src = source(&dir, Guest::Suse, "suse", false);
    let original = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "raw",
        "pipeline:\n  fix: {enabled: true, allow_in_place: true, backup: true, remove_vmware_tools: true}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let backup = dir.join("output/backups/suse.raw");
    assert_eq!(
        sha256(&backup),
        original,
        "the backup is the untouched original"
    );
    let names: Vec<_> = std::fs::read_dir(dir.join("output/backups"))
        .expect("backup directory")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["suse.raw"], "the copy went to its final name only");
    assert_ne!(
        sha256(&src),
        original,
        "in-place repairs changed the source"
    );
    let files = read_back(
        &src,
        "raw",
        &[
            "/etc/fstab",
            "/etc/sysconfig/network/ifcfg-eth0",
            "/boot/grub2/grub.cfg",
        ],
    );
    let root = uuid_of(&files["blkid:/dev/sda1"]);
    assert!(files["/etc/fstab"].contains(&format!("UUID={root}")));
    assert!(!files["/etc/sysconfig/network/ifcfg-eth0"].contains("LLADDR"));
    assert!(files["/boot/grub2/grub.cfg"].contains(&format!("root=UUID={root}")));
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(
        report["pipeline"]["stages"]["fix"]["result"]["mode"],
        "in_place"
    );
    // No rpm binary in this guest: its rpm database cannot be updated, and the report says so.
    let notes = report["pipeline"]["stages"]["fix"]["result"]["notes"].to_string();
    assert!(
        notes.contains("an rpm database but no rpm binary"),
        "{notes}"
    );
}

/// Guests that cannot be repaired fail the VM with a clear error and leave the source alone.
fn refused(guest: Guest) -> String {
    refused_after(guest, |_| {})
}

/// Like [`refused`], on a copy of the guest that `damage` changed first.
fn refused_after(guest: Guest, damage: impl FnOnce(&Path)) -> String {
    let dir = TestDir::new();
    let src = source(&dir, guest, "bad", false);
    damage(&src);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "raw",
        "pipeline:\n  fix: {enabled: true}\n  convert: {enabled: true}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before);
    assert_eq!(tree(&dir.join("output")), ["report.html", "report.json"]);
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["errors"][0]["stage"], "fix");
    redact(
        report["errors"][0]["message"].as_str().unwrap_or_default(),
        &dir,
    )
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn no_operating_system() {
    if !tools() {
        return;
    }
    insta::assert_snapshot!(refused(Guest::NoOs), @"no operating system was found on the disks; nothing was changed. The fix stage repairs an installed operating system and there is none here; for a data-only VM turn it off: set pipeline.fix.enabled: false in the manifest (or its batch entry's overrides)");
}

/// With inspect looking inside the guest, a disk that holds a filesystem but no operating
/// system stops the VM at inspect, with what to set for a data-only VM: one appliance launch,
/// not a second one in fix to find the same.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn no_operating_system_stops_at_inspect() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let src = source(&dir, Guest::NoOs, "data", false);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "raw",
        "pipeline:\n  inspect: {enabled: true, collect_guest_info: true}\n  fix: {enabled: true}\n  convert: {enabled: true}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before);
    assert_eq!(
        tree(&dir.join("output")),
        ["report.html", "report.json"],
        "no fix console, no output"
    );
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["errors"][0]["stage"], "inspect");
    let stages = report["pipeline"]["stages"].as_object().expect("stages");
    assert_eq!(
        stages.keys().collect::<Vec<_>>(),
        ["load_manifest", "inspect"],
        "fix never ran"
    );
    assert_eq!(stages["inspect"]["success"], false);
    let launches = stages
        .values()
        .flat_map(|s| s["commands"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["argv"][1] == "--listen")
        .count();
    assert_eq!(launches, 1, "one appliance launch");
    let message = redact(
        report["errors"][0]["message"].as_str().unwrap_or_default(),
        &dir,
    );
    assert!(
        r.stdout.contains("error (inspect): no operating system"),
        "{}",
        r.stdout
    );
    insta::assert_snapshot!(message, @"no operating system was found on the disks; nothing was changed. The fix stage repairs an installed operating system and there is none here; for a data-only VM turn it off: set pipeline.fix.enabled: false in the manifest (or its batch entry's overrides)");
}

/// A root filesystem whose group descriptors are garbage: its superblock still says ext4, so
/// inspection finds the filesystem but cannot mount it, and the error names the device.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn corrupt_root_filesystem_is_named() {
    if !tools() {
        return;
    }
    let message = refused_after(Guest::Debian, |disk| {
        use std::io::{Seek, SeekFrom, Write};
        // sda1 starts at sector 2048; its group descriptors follow the superblock (bytes
        // 1024..2047) at byte 2048 (1 KiB blocks) or 4096 (4 KiB blocks).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(disk)
            .expect("open");
        f.seek(SeekFrom::Start(2048 * 512 + 2048)).expect("seek");
        f.write_all(&[0xff; 6144]).expect("write");
    });
    insta::assert_snapshot!(message, @"no operating system was found on the disks, and /dev/sda1 (ext4) cannot be mounted: the filesystem may be corrupt (check a copy with fsck); nothing was changed. /dev/sda1: mount_ro: mount exited with status 32: mount: /sysroot: mount(2) system call failed: Structure needs cleaning.");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn several_roots() {
    if !tools() {
        return;
    }
    insta::assert_snapshot!(refused(Guest::TwoRoots), @"several operating systems were found (roots: /dev/sda1, /dev/sda2); hyper2kvm repairs one per VM, so split the disks into one manifest per operating system");
}

#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "guestfish",
        missing_tool = "cryptsetup"
    ),
    ignore = "needs qemu-img, guestfish and cryptsetup (install: scripts/install-deps.sh full)"
)]
fn encrypted_volume_without_a_key() {
    // cryptsetup formats the LUKS partition of the phony guest on the host.
    if !tools() || !require_tool("cryptsetup") {
        return;
    }
    insta::assert_snapshot!(refused(Guest::Luks), @"no operating system was found on the disks (encrypted LUKS volumes /dev/sda2 may hide it; no key was given); nothing was changed");
}

/// A Windows guest is recognised; the Linux repairs are skipped with a note, and the disk is
/// still converted.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn windows_guest_skips_the_linux_repairs() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let src = source(&dir, Guest::Windows, "win", true);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "vmdk",
        "pipeline:\n  inspect: {enabled: true, collect_guest_info: true}\n  fix: {enabled: true, remove_vmware_tools: true}\n  convert: {enabled: true}\n  validate: {enabled: true}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before);
    let report = read_json(&dir.join("output/report.json"));
    let fix = &report["pipeline"]["stages"]["fix"]["result"];
    assert_eq!(fix["guest"]["os_type"], "windows", "{fix:#}");
    assert_eq!(fix["guest"]["distro"], "windows", "{fix:#}");
    assert_eq!(fix["changes"].as_array().map(Vec::len), Some(0), "{fix:#}");
    insta::assert_snapshot!(fix["skipped"].as_str().unwrap_or_default(), @"Windows guest (root /dev/sda1): the Linux repairs (fstab, bootloader, initramfs, network, VMware tools) do not apply and Windows virtio driver injection is not available in this version");
    let inspect = &report["pipeline"]["stages"]["inspect"];
    assert_eq!(
        inspect["result"]["guest"]["os_type"], "windows",
        "inspect stage: {inspect:#}\nwarnings: {:#}",
        report["warnings"]
    );
}

/// Without libguestfs, a manifest that needs it is one clear line naming the package.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn libguestfs_missing() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    dir.write("disk.raw", "0123456789");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::os::unix::fs::symlink(
        which::which("qemu-img").expect("qemu-img"),
        bin.join("qemu-img"),
    )
    .expect("symlink");
    let path = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\npipeline: {fix: {enabled: true}, convert: {enabled: true}}\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&path).env("PATH", &bin));
    assert_eq!(r.code, Some(4));
    insta::assert_snapshot!(r.stderr, @"error: `guestfish` was not found on PATH; install the Debian package `libguestfs-tools`");
}
