//! Runs that start and then fail: exit 1, a report that says why, no output under its final name
//! and no `.part` file left behind, the source untouched.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Runs a one-disk conversion of `src` declared as `format` and returns the run and its report.
fn convert_failing(dir: &TestDir, src: &Path, format: &str) -> (Run, serde_json::Value) {
    let before = sha256(src);
    let path = dir.join("vm.json");
    write_json(
        &path,
        &convert_manifest(vec![disk("d0", format, src)], "qcow2", false),
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&path));
    assert_eq!(
        r.code,
        Some(1),
        "expected a VM failure:\n{}{}",
        r.stdout,
        r.stderr
    );
    let out = dir.join("output");
    assert_eq!(
        tree(&out),
        ["report.html", "report.json"],
        "only the report and its page are written when the VM fails"
    );
    assert_eq!(sha256(src), before, "the source was modified");
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["status"], "failed");
    assert_eq!(report["pipeline"]["success"], false);
    (r, report)
}

fn first_error(report: &serde_json::Value) -> String {
    report["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// qemu-img converts a truncated sparse VMDK "successfully", reading the lost grains as zeros;
/// the source check must catch it first.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn truncated_vmdk_is_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("trunc.vmdk");
    make_image(&src, "vmdk", Some("subformat=monolithicSparse"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .expect("open");
    f.set_len(file_size(&src) / 2).expect("truncate");
    drop(f);
    let (_, report) = convert_failing(&dir, &src, "vmdk");
    let err = first_error(&report);
    assert!(err.contains("failed qemu-img check"), "{err}");
    assert_eq!(report["errors"][0]["stage"], "inspect");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn truncated_vmdk_is_refused_even_without_inspect() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("trunc.vmdk");
    make_image(&src, "vmdk", Some("subformat=monolithicSparse"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .expect("open");
    f.set_len(file_size(&src) / 2).expect("truncate");
    drop(f);
    let mut m = convert_manifest(vec![disk("d0", "vmdk", &src)], "qcow2", false);
    m["pipeline"]["inspect"]["enabled"] = serde_json::json!(false);
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["errors"][0]["stage"], "convert");
    assert!(first_error(&report).contains("failed qemu-img check"));
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn corrupt_qcow2_is_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("bad.qcow2");
    make_image(&src, "qcow2", None);
    // Overwrite the refcount table offset in the header (bytes 48..56).
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .expect("open");
    f.seek(SeekFrom::Start(48)).expect("seek");
    f.write_all(&[0xff; 8]).expect("write");
    drop(f);
    let (_, report) = convert_failing(&dir, &src, "qcow2");
    let err = first_error(&report);
    assert!(err.contains("qemu-img"), "{err}");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn real_format_differs_from_source_format() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("really-qcow2.vmdk");
    make_image(&src, "qcow2", None);
    let (_, report) = convert_failing(&dir, &src, "vmdk");
    insta::assert_snapshot!(redact(&first_error(&report), &dir), @"disk d0: source_format is vmdk but qemu-img detects qcow2 in [TMP]/really-qcow2.vmdk; fix source_format in the manifest");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn qcow2_with_backing_file_is_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let base = dir.join("base.qcow2");
    make_image(&base, "qcow2", None);
    let overlay = dir.join("overlay.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&overlay),
    );
    let (_, report) = convert_failing(&dir, &overlay, "qcow2");
    let err = redact(&first_error(&report), &dir);
    insta::assert_snapshot!(err, @r"disk d0: [TMP]/overlay.qcow2 has a backing file ([TMP]/base.qcow2); hyper2kvm converts standalone images only (a source is pinned by its own file, and a backing file is another). Flatten the chain from its top into one image, which reads through every backing file and keeps the overlay's writes: qemu-img convert -f qcow2 -O qcow2 [TMP]/overlay.qcow2 flat.qcow2, then point the disk at flat.qcow2. Do not use the chain's base instead: it lacks every write made in the overlay");
}

/// An encrypted source is named as encrypted, not as a damaged image (qemu-img check cannot
/// open it without its secret).
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn an_encrypted_source_is_named_encrypted() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("enc.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "--object",
                "secret,id=s0,data=x",
                "-o",
            ])
            .arg("encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10")
            .arg(&src)
            .arg("16M"),
    );
    let (_, report) = convert_failing(&dir, &src, "qcow2");
    let err = redact(&first_error(&report), &dir);
    assert!(!err.contains("damaged"), "{err}");
    insta::assert_snapshot!(err, @r"disk d0: [TMP]/enc.qcow2 is an encrypted qcow2 image (qemu-img info: encrypted); hyper2kvm does not take secrets and cannot read it: decrypt it first (qemu-img convert with --object secret,...) and point the manifest at the decrypted copy");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn checksum_mismatch_names_disk_and_both_digests() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["disks"][0]["checksum"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(1));
    let report = read_json(&dir.join("output/report.json"));
    let err = first_error(&report);
    assert!(err.contains(&format!("sha256:{}", "0".repeat(64))), "{err}");
    assert!(err.contains(&sha256(&src)), "{err}");
    assert!(
        err.starts_with("Checksum verification failed for disk d0"),
        "{err}"
    );
    assert_eq!(report["errors"][0]["stage"], "load_manifest");
    assert_eq!(tree(&dir.join("output")), ["report.html", "report.json"]);
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub(crate) struct Mount {
    pub(crate) path: std::path::PathBuf,
}

impl Mount {
    pub(crate) fn tmpfs(path: &Path, opts: &str) -> Option<Self> {
        std::fs::create_dir_all(path).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("could not mount a tmpfs under CI");
            }
            eprintln!("SKIPPED: cannot mount a tmpfs here");
            return None;
        }
        Some(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs root, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn full_output_filesystem_fails_cleanly() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=2M") else {
        return;
    };
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["options"] = serde_json::json!({"report": {"path": dir.join("report.json")}});
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.json"))
        .arg("--output-dir")
        .arg(&mount.path));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        tree(&mount.path),
        Vec::<String>::new(),
        "no .part left on the full disk"
    );
    let report = read_json(&dir.join("report.json"));
    let err = first_error(&report);
    assert!(err.contains("conversion failed"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
}

#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img"),
    ignore = "needs root and qemu-img (install: scripts/install-deps.sh core)"
)]
fn read_only_output_directory_is_refused_before_start() {
    if !require_tool("qemu-img") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    dir.write("disk.raw", "0123456789");
    let Some(mount) = Mount::tmpfs(&dir.join("ro"), "size=1M,ro") else {
        return;
    };
    dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\npipeline: {convert: {enabled: true}}\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.yaml"))
        .arg("--output-dir")
        .arg(mount.path.join("out")));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!(redact(&r.stderr, &dir));
}

#[test]
fn missing_qemu_img_is_one_clear_line() {
    let dir = TestDir::new();
    dir.write("disk.raw", "0123456789");
    dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\npipeline: {convert: {enabled: true}}\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    let empty_path = dir.join("empty-bin");
    std::fs::create_dir(&empty_path).expect("mkdir");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.yaml"))
        .env("PATH", &empty_path));
    assert_eq!(r.code, Some(4));
    insta::assert_snapshot!(r.stderr, @"error: `qemu-img` was not found on PATH; install the Debian package `qemu-utils`");
    assert!(!dir.join("output").exists());
}

/// A large image is compared in ranges, one process each; a difference in a later range is
/// reported at its offset in the whole image.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn content_mismatch_in_a_later_range_names_its_offset() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("big.raw");
    let file = std::fs::File::create(&src).expect("create");
    file.set_len(3 << 30).expect("sparse 3 GiB");
    drop(file);
    std::fs::write(
        dir.join("corrupt.sh"),
        format!(
            "#!/bin/sh\nprintf 'x' | dd of='{}' bs=1 seek=2500000000 conv=notrunc status=none\n",
            dir.join("output/d0.raw").display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(
        dir.join("corrupt.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "raw", false);
    m["hooks"] = serde_json::json!({"post_convert": [{"type": "script", "path": "corrupt.sh"}]});
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let err = first_error(&report);
    // qemu-img names the start of the 512-byte sector that differs.
    assert!(
        err.starts_with(
            "disk d0: the output's content differs from the source: Content mismatch at offset \
             2499999744!"
        ),
        "{err}"
    );
    let compares = report["pipeline"]["stages"]["validate"]["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter(|c| c["argv"][1] == "compare")
        .count();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    assert_eq!(compares, if cores > 1 { cores } else { 1 });
}
