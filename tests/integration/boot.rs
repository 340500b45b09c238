//! The boot test (`pipeline.validate.boot_test`) on a real guest: a Debian 12 made to look like
//! a VMware guest (scripts/build-test-guest.sh) boots on KVM's virtio disks only after the fix
//! stage, and a disk without a bootloader, a UEFI VM without OVMF, a zero timeout and a pattern
//! that is not a regular expression fail as they should.
//!
//! Results are checked, not exit statuses: the console line that matched, the guest files read
//! back from the output, the report's reason and console tail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::guests::read_back;
use crate::support::*;

/// The boot itself takes 30–60 s under TCG on an idle 2-core machine; other tests share it.
const BOOT_TIMEOUT: u64 = 900;

/// A manifest for `disk` (a VMDK) with `extra` YAML lines (profile, overrides, pipeline).
fn vmdk_manifest(dir: &TestDir, name: &str, disk: &Path, extra: &str) -> PathBuf {
    dir.write(
        &format!("{name}.yaml"),
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: {name}}}\nvm: {{firmware: bios, os_hint: linux}}\n{extra}\ndisks:\n  - {{id: boot, source_format: vmdk, bytes: {}, local_path: {}, boot_order_hint: 0, disk_type: boot}}\n",
            file_size(disk),
            disk.display()
        ),
    )
}

pub(crate) fn boot_test_of(report: &Value) -> &Value {
    &report["pipeline"]["stages"]["validate"]["result"]["boot_test"]
}

/// The guest command of the fix stage (its report `result`) that ran `program`, if one did.
fn guest_command<'a>(fix: &'a Value, program: &str) -> Option<&'a Value> {
    fix["guest_commands"]
        .as_array()
        .expect("guest commands")
        .iter()
        .find(|c| c["argv"][0] == program)
}

pub(crate) fn tail_text(bt: &Value) -> String {
    bt["console_tail"]
        .as_array()
        .expect("console_tail is a list")
        .iter()
        .map(|l| l.as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn uuid_of(blkid: &str) -> String {
    blkid
        .lines()
        .find_map(|l| l.strip_prefix("UUID: "))
        .expect("the device has a UUID")
        .trim()
        .to_owned()
}

/// The proof: the VMware-style VMDK through `--config` with the production profile
/// (inspect, fix, convert, validate) and the boot test boots to the login prompt; the output's
/// grub.cfg and fstab no longer name /dev/sda1, the source is untouched, and the boot ran on a
/// throw-away snapshot (the guest's first boot would have written /etc/machine-id).
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
fn e2e_production_profile_boots_to_the_login_prompt() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest() else { return };
    let dir = TestDir::new();
    let before = sha256(&guest);
    let path = vmdk_manifest(
        &dir,
        "debian12",
        &guest,
        &format!(
            "profile: production\npipeline:\n  validate:\n    boot_test: {{enabled: true, timeout: {BOOT_TIMEOUT}, success_pattern: 'login: *$'}}"
        ),
    );
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("boot test: passed in "),
        "one summary line: {}",
        r.stdout
    );
    assert_eq!(sha256(&guest), before, "the source VMDK was modified");

    let out = dir.join("output");
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "succeeded");
    let stages = &report["pipeline"]["stages"];
    for stage in ["inspect", "fix", "convert", "validate"] {
        assert_eq!(stages[stage]["success"], true, "{stage}");
    }
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "passed", "{bt:#}");
    assert_eq!(bt["reason"], "success_pattern");
    assert!(
        bt["matched_line"]
            .as_str()
            .is_some_and(|l| l.ends_with("login:")),
        "{bt:#}"
    );
    let took = bt["time_to_pass_seconds"].as_f64().expect("time to pass");
    assert!(took > 0.0 && took < BOOT_TIMEOUT as f64);
    assert!(bt["accel"] == "tcg" || bt["accel"] == "kvm");
    assert_eq!(bt["firmware"], "bios");
    let command = bt["command_line"].as_str().expect("command line");
    assert!(command.contains(" -snapshot "), "{command}");
    assert!(command.contains("virtio-blk-pci"), "{command}");
    let tail = tail_text(bt);
    assert!(
        bt["console_tail"]
            .as_array()
            .is_some_and(|t| t.len() <= 100)
    );
    assert!(tail.contains("Reached target"), "{tail}");
    assert!(!tail.contains('\u{1b}'), "control sequences are removed");
    let console_log = PathBuf::from(bt["console_log"].as_str().expect("console log"));
    assert_eq!(console_log, out.join("debian12.boot-test-console.log"));
    assert!(
        std::fs::read_to_string(&console_log)
            .expect("console log")
            .contains("Linux version"),
        "the whole console is kept"
    );
    // Debian's initramfs (MODULES=most) already carries the virtio drivers: it was listed with
    // the guest's lsinitramfs, kept, and the guest booted with it.
    let fix = &stages["fix"]["result"];
    let images = fix["initramfs"].as_array().expect("initramfs decisions");
    assert_eq!(images.len(), 1, "{fix:#}");
    assert_eq!(images[0]["rebuilt"], false, "{fix:#}");
    assert_eq!(
        images[0]["reason"],
        "the image already carries virtio_blk, virtio_scsi, virtio_pci and udev"
    );
    assert!(guest_command(fix, "lsinitramfs").is_some(), "{fix:#}");
    assert!(guest_command(fix, "update-initramfs").is_none(), "{fix:#}");
    // The fix noticed the trap: grub-mkconfig in the appliance wrote root=/dev/sda1 back.
    assert!(
        report["warnings"]
            .to_string()
            .contains("GRUB_DISABLE_LINUX_UUID"),
        "{:#}",
        report["warnings"]
    );

    let files = read_back(
        &out.join("boot.qcow2"),
        "qcow2",
        &["/boot/grub/grub.cfg", "/etc/fstab", "/etc/machine-id"],
    );
    let root = uuid_of(&files["blkid:/dev/sda1"]);
    let grub = &files["/boot/grub/grub.cfg"];
    assert!(!grub.contains("root=/dev/sda1"), "{grub}");
    assert!(grub.contains(&format!("root=UUID={root}")), "{grub}");
    let fstab = &files["/etc/fstab"];
    assert!(!fstab.contains("/dev/sda1"), "{fstab}");
    assert!(fstab.contains(&format!("UUID={root}")), "{fstab}");
    assert!(
        files["/etc/machine-id"].trim().is_empty(),
        "the boot wrote into the output instead of a snapshot: machine-id {}",
        files["/etc/machine-id"]
    );
}

/// The real guest exported as vSphere would (an OVA: the OVF descriptor first, its `.mf`, the
/// streamOptimized VMDK), imported with `--ova`, repaired and converted by the production
/// profile straight from the archive (never extracted), and booted to the login prompt. The
/// OVA is left as it was.
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
fn e2e_the_guest_exported_as_an_ova_converts_in_place_and_boots() {
    use sha2::Digest;
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest() else { return };
    let dir = TestDir::new();
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    let vmdk = pkg.join("debian12-disk1.vmdk");
    std::os::unix::fs::symlink(&guest, &vmdk).expect("link the cached guest");
    let info = run_ok(
        Command::new("qemu-img")
            .args(["info", "--output=json", "-f", "vmdk"])
            .arg(&guest),
    );
    let info: Value = serde_json::from_slice(&info.stdout).expect("qemu-img info");
    let ovf = fixture("exports/debian12.ovf")
        .replace("@SIZE@", &file_size(&guest).to_string())
        .replace(
            "@CAPACITY@",
            &info["virtual-size"]
                .as_u64()
                .expect("virtual size")
                .to_string(),
        );
    std::fs::write(pkg.join("debian12.ovf"), &ovf).expect("write ovf");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let disk_digest = sha256(&guest);
    std::fs::write(
        pkg.join("debian12.mf"),
        format!(
            "SHA256(debian12.ovf)= {}\nSHA256(debian12-disk1.vmdk)= {}\n",
            hex(&sha2::Sha256::digest(ovf.as_bytes())),
            disk_digest.trim_start_matches("sha256:")
        ),
    )
    .expect("write mf");
    let ova = dir.join("debian12.ova");
    // -h: the VMDK goes in as data, not as the link to the cache.
    run_ok(
        Command::new("tar")
            .args(["--format=ustar", "-h", "-cf"])
            .arg(&ova)
            .arg("-C")
            .arg(&pkg)
            .args(["debian12.ovf", "debian12.mf", "debian12-disk1.vmdk"]),
    );
    let ova_before = sha256(&ova);

    let out = dir.join("out");
    let r = run(hyper2kvm()
        .arg("--ova")
        .arg(&ova)
        .arg("--output-dir")
        .arg(&out)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("verified: SHA256 debian12.ovf, SHA256 debian12-disk1.vmdk"),
        "{}",
        r.stdout
    );
    // The admin's choice on top of the import: the production profile and the boot test.
    let manifest_path = out.join("manifest.json");
    let mut manifest = read_json(&manifest_path);
    assert_eq!(manifest["disks"][0]["checksum"], disk_digest.as_str());
    let doc = manifest.as_object_mut().expect("object");
    doc.remove("pipeline");
    doc.insert("profile".into(), Value::from("production"));
    doc.insert(
        "pipeline".into(),
        serde_json::json!({"validate": {"boot_test": {
            "enabled": true, "timeout": BOOT_TIMEOUT, "success_pattern": "login: *$"}}}),
    );
    write_json(&manifest_path, &manifest);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest_path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "succeeded");
    for stage in ["inspect", "fix", "convert", "validate"] {
        assert_eq!(
            report["pipeline"]["stages"][stage]["success"], true,
            "{stage}"
        );
    }
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "passed", "{bt:#}");
    assert!(
        bt["matched_line"]
            .as_str()
            .is_some_and(|l| l.ends_with("login:")),
        "{bt:#}"
    );
    let files = read_back(&out.join("disk0.qcow2"), "qcow2", &["/etc/fstab"]);
    assert!(
        !files["/etc/fstab"].contains("/dev/sda1"),
        "{}",
        files["/etc/fstab"]
    );
    assert_eq!(sha256(&ova), ova_before, "the OVA was modified");
    // Nothing was extracted: the outputs, the reports, the domain and the console log only.
    let listed = tree(&out);
    assert!(listed.iter().all(|f| !f.ends_with(".vmdk")), "{listed:?}");
}

/// The negative control: the same VMDK converted without the fix stage fails the boot test
/// (root=/dev/sda1 does not exist on virtio-blk), which proves both that the test can fail and
/// that the fix matters. The report keeps the reason and the console tail.
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
fn e2e_without_fixes_the_boot_test_fails() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest() else { return };
    let dir = TestDir::new();
    let path = vmdk_manifest(
        &dir,
        "unfixed",
        &guest,
        &format!(
            "profile: production\nprofile_overrides:\n  pipeline:\n    fix: {{enabled: false}}\npipeline:\n  validate:\n    boot_test: {{enabled: true, timeout: {BOOT_TIMEOUT}}}"
        ),
    );
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("boot test: FAILED ("), "{}", r.stdout);

    let out = dir.join("output");
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "failed");
    assert!(report["pipeline"]["stages"].get("fix").is_none());
    let validate = &report["pipeline"]["stages"]["validate"];
    assert_eq!(validate["success"], false);
    assert!(
        validate["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("boot test failed: ")),
        "{validate:#}"
    );
    assert_eq!(
        validate["result"]["validation_results"][0]["content_check"], "identical",
        "the conversion itself was fine"
    );
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "failed", "{bt:#}");
    let reason = bt["reason"].as_str().expect("reason");
    assert!(
        ["emergency_shell", "kernel_panic", "timeout"].contains(&reason),
        "{reason}"
    );
    assert!(bt.get("time_to_pass_seconds").is_none());
    let tail = tail_text(bt);
    assert!(tail.contains("/dev/sda1"), "the tail shows why: {tail}");
    assert_eq!(
        report["errors"][0]["stage"], "validate",
        "{:#}",
        report["errors"]
    );
}

/// Two copies of the guest in one batch, each with another profile: `debug` turned into a
/// converting run (the guide's `debug` repairs in place and converts nothing) with the boot test
/// and the initramfs rebuilt although it already serves KVM, and `testing` (raw output) with
/// validation and the boot test turned on; both boot.
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
fn e2e_batch_of_two_profiles_boots_both() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest() else { return };
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    let copies: Vec<PathBuf> = ["web01", "web02"]
        .iter()
        .map(|n| {
            let p = dir.join(&format!("disks/{n}.vmdk"));
            std::fs::copy(&guest, &p).expect("copy the guest");
            p
        })
        .collect();
    let timeout = format!("timeout: {BOOT_TIMEOUT}");
    vmdk_manifest(
        &dir,
        "web01",
        &copies[0],
        &format!(
            "profile: debug\nprofile_overrides:\n  pipeline:\n    convert: {{enabled: true}}\npipeline:\n  fix: {{initramfs_rebuild: always}}\n  validate:\n    boot_test: {{enabled: true, {timeout}}}"
        ),
    );
    vmdk_manifest(
        &dir,
        "web02",
        &copies[1],
        &format!(
            "profile: testing\nprofile_overrides:\n  pipeline:\n    validate: {{enabled: true, boot_test: {{enabled: true, {timeout}}}}}"
        ),
    );
    let batch = dir.write(
        "batch.yaml",
        "batch_version: \"1.0\"\nbatch_metadata: {batch_id: boot-e2e, parallel_limit: 2, continue_on_error: true}\nshared_config: {output_directory: converted}\nvms:\n  - {manifest: web01.yaml, id: web01}\n  - {manifest: web02.yaml, id: web02}\n",
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let out = dir.join("converted");
    let batch_report = read_json(&out.join("batch_report.json"));
    assert_eq!(
        batch_report["batch"]["successful_vms"], 2,
        "{batch_report:#}"
    );

    for (vm, report_name, profile) in [
        ("web01", "report.json", "debug"),
        ("web02", "report.json", "testing"),
    ] {
        let report = read_json(&out.join(vm).join(report_name));
        assert_eq!(report["input_manifest"]["profile"], profile);
        let bt = boot_test_of(&report);
        assert_eq!(bt["result"], "passed", "{vm}: {bt:#}");
        assert!(
            out.join(vm)
                .join(format!("{vm}.boot-test-console.log"))
                .is_file()
        );
    }
    // web01 asked for the rebuild its image does not need: the rebuilt image boots too.
    let debug_fix =
        &read_json(&out.join("web01/report.json"))["pipeline"]["stages"]["fix"]["result"];
    assert!(
        guest_command(debug_fix, "update-initramfs").is_some_and(|c| c["success"] == true),
        "{debug_fix:#}"
    );
    assert_eq!(debug_fix["initramfs"][0]["rebuilt"], true);
    assert_eq!(
        debug_fix["initramfs"][0]["reason"],
        "fix.initramfs_rebuild is always"
    );
    let testing_fix =
        &read_json(&out.join("web02/report.json"))["pipeline"]["stages"]["fix"]["result"];
    // testing extends production (regen_initramfs on): the image is checked, and left alone
    // because it already serves KVM.
    assert_eq!(
        testing_fix["initramfs"][0]["rebuilt"], false,
        "{testing_fix:#}"
    );
    assert!(
        guest_command(testing_fix, "update-initramfs").is_none(),
        "{testing_fix:#}"
    );
}

/// A 64 MiB disk with nothing on it.
fn blank_disk(dir: &TestDir) -> PathBuf {
    let disk = dir.join("blank.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("64M"),
    );
    disk
}

fn blank_manifest(dir: &TestDir, disk: &Path, firmware: &str, boot_test: &str) -> PathBuf {
    dir.write(
        "blank.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{vm_name: blank}}\nvm: {{firmware: {firmware}}}\npipeline:\n  convert: {{enabled: true}}\n  validate:\n    enabled: true\n    boot_test: {boot_test}\ndisks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(disk),
            disk.display()
        ),
    )
}

/// A disk with no bootloader fails the boot test with the firmware's words in the console tail,
/// long before its timeout.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-system-x86_64"),
    ignore = "needs qemu-img and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn disk_without_a_bootloader_fails_with_the_console_tail() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let dir = TestDir::new();
    let disk = blank_disk(&dir);
    let path = blank_manifest(&dir, &disk, "bios", "{enabled: true, timeout: 120}");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let bt = boot_test_of(&report);
    assert_eq!(bt["result"], "failed", "{bt:#}");
    assert_eq!(bt["reason"], "no_bootable_device", "{bt:#}");
    assert!(tail_text(bt).contains("No bootable device"), "{bt:#}");
    assert!(bt["seconds"].as_f64().expect("seconds") < 120.0);
    assert!(
        r.stdout
            .contains("boot test: FAILED (no_bootable_device) after "),
        "{}",
        r.stdout
    );
}

/// A UEFI VM boots OVMF (a copy of its variable store, next to the read-only code); with nothing
/// to boot, OVMF's boot manager gives up and says so on the serial console.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-system-x86_64",
        missing_ovmf
    ),
    ignore = "needs qemu-img, qemu-system-x86_64 and OVMF (install: scripts/install-deps.sh full)"
)]
fn uefi_vm_boots_ovmf() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file()
        && !Path::new("/usr/share/OVMF/OVMF_CODE.fd").is_file()
    {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "OVMF (package ovmf) is required under CI"
        );
        eprintln!("SKIPPED: OVMF is not installed (package ovmf)");
        return;
    }
    let dir = TestDir::new();
    let disk = blank_disk(&dir);
    let path = blank_manifest(&dir, &disk, "uefi", "{enabled: true, timeout: 300}");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"])
        .env_remove(hyper2kvm::tools::ovmf::DIR_ENV));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let bt = boot_test_of(&report);
    assert_eq!(bt["firmware"], "uefi");
    assert_eq!(bt["reason"], "no_bootable_device", "{bt:#}");
    assert!(tail_text(bt).contains("BdsDxe"), "{bt:#}");
    let command = bt["command_line"].as_str().expect("command line");
    assert!(
        command.contains("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE"),
        "{command}"
    );
}

/// A UEFI VM on a host without OVMF is refused before anything is touched, naming the package.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-system-x86_64"),
    ignore = "needs qemu-img and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn uefi_without_ovmf_names_the_package() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let dir = TestDir::new();
    let disk = blank_disk(&dir);
    let empty = dir.join("no-ovmf");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let path = blank_manifest(&dir, &disk, "uefi", "{enabled: true}");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .env(hyper2kvm::tools::ovmf::DIR_ENV, &empty));
    assert_eq!(
        r.code,
        Some(4),
        "a missing package: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("install the Debian package `ovmf`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&empty.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(!dir.join("output").exists(), "nothing was written");
}

/// A zero timeout and patterns that are not regular expressions are load-time errors, all
/// reported at once with their field paths.
#[test]
fn zero_timeout_and_bad_patterns_are_refused_at_load_time() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let path = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\npipeline:\n  convert: {enabled: true}\n  validate:\n    enabled: true\n    boot_test: {enabled: true, timeout: 0, success_pattern: 'login: (', failure_pattern: '[oops', memroy_mb: 512}\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&path));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!(redact(&r.stderr, &dir));
    assert!(!dir.join("output").exists());
}

/// `--dry-run` shows the boot test's qemu command and runs nothing.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-system-x86_64"),
    ignore = "needs qemu-img and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn dry_run_shows_the_boot_test_command() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let dir = TestDir::new();
    let disk = blank_disk(&dir);
    let path = blank_manifest(
        &dir,
        &disk,
        "bios",
        "{enabled: true, memory_mb: 512, cpus: 2}",
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&path).arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("boot test (")
            && r.stdout.contains("bios, 512 MiB, 2 vCPU, timeout 300 s"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("qemu-system-x86_64 -machine q35"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("-snapshot"), "{}", r.stdout);
    assert!(!dir.join("output").exists(), "nothing was written");
}

/// The guide's Phase 6 end to end: the VMware-style guest repaired and converted under the
/// production profile, its disk moved into a new storage pool, the domain defined and started
/// on a real libvirtd, and the start proven on the domain's serial console (the boot test's
/// patterns, read through libvirt, not a qemu of ours). The domain is left running, as asked.
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
        missing_tool = "qemu-system-x86_64",
        missing_tool = "virsh",
        missing_tool = "libvirtd",
        missing_tool = "virtlogd"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs root, libvirtd and what scripts/build-test-guest.sh runs (install: scripts/install-deps.sh full)"
)]
fn e2e_libvirt_defines_starts_and_proves_the_boot() {
    if skip_slow() {
        return;
    }
    let Some(guest) = debian_guest() else { return };
    let Some(lv) = Libvirtd::get() else { return };
    let (name, pool) = ("h2k-t-e2e-debian12", "h2k-t-e2e");
    lv.forget(name, Some(pool));
    struct Forget<'a>(&'a Libvirtd, &'static str, &'static str);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            self.0.forget(self.1, Some(self.2));
        }
    }
    let _forget = Forget(&lv, name, pool);
    let dir = TestDir::new();
    // qemu runs as libvirt's own user: it must reach the pool directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pool_dir = dir.join("pool");
    let path = vmdk_manifest(
        &dir,
        name,
        &guest,
        &format!(
            "profile: production\npipeline:\n  validate:\n    boot_test: {{enabled: false, timeout: {BOOT_TIMEOUT}, success_pattern: 'login: *$'}}\nlibvirt_integration:\n  enabled: true\n  import_to_pool: {pool}\n  pool_path: {}\n  copy_disks: false\n  auto_start: true",
            pool_dir.display()
        ),
    );
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let res = &report["pipeline"]["stages"]["libvirt_integration"]["result"];
    assert_eq!(res["action"], "defined", "{res:#}");
    assert_eq!(res["started"], true);
    let boot = &res["boot"];
    assert_eq!(boot["result"], "passed", "{boot:#}");
    assert_eq!(boot["reason"], "success_pattern");
    assert!(
        boot["matched_line"]
            .as_str()
            .is_some_and(|l| l.ends_with("login:")),
        "{boot:#}"
    );
    let console = std::fs::read_to_string(boot["console_log"].as_str().expect("console log"))
        .expect("the console is kept");
    assert!(console.contains("login:"), "{console}");
    assert!(
        r.stdout.contains(&format!(
            "libvirt: domain {name} defined on qemu:///system, disks in pool '{pool}' (created), started and booted in "
        )),
        "{}",
        r.stdout
    );
    // Moved, not copied: the volume is the converted disk.
    let volume = pool_dir.join(format!("{name}-boot.qcow2"));
    assert_eq!(res["volumes"][0]["how"], "moved");
    assert!(volume.is_file());
    assert!(!dir.join("output/boot.qcow2").exists());
    assert!(
        report["artifacts"]
            .to_string()
            .contains(&volume.display().to_string()),
        "the artifact follows the disk: {:#}",
        report["artifacts"]
    );
    // libvirt agrees: running, from the volume.
    assert_eq!(lv.virsh(&["domstate", name]).trim(), "running");
    assert!(
        lv.virsh(&["domblklist", name])
            .contains(&volume.display().to_string())
    );
}
