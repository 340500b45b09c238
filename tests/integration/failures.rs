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
    insta::assert_snapshot!(err, @r"disk d0: [TMP]/overlay.qcow2 has a backing file ([TMP]/base.qcow2) and the manifest declares no backing_chain; hyper2kvm converts standalone images only (a source is pinned by its own file, and a backing file is another). Flatten the chain from its top into one image, which reads through every backing file and keeps the overlay's writes: qemu-img convert -f qcow2 -O qcow2 [TMP]/overlay.qcow2 flat.qcow2, then point the disk at flat.qcow2. Do not use the chain's base instead: it lacks every write made in the overlay. A chain that is meant to be read as it is (a VMware snapshot's delta on its parents) is declared in disks[].backing_chain, nearest parent first, as hyper2kvm --vmx writes it: the current state is then converted through those files");
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
    // Room for the output (4.5 MiB of data) when the run starts, so the free-space check
    // passes; then a pre_convert hook fills the filesystem, as another writer could.
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=8M") else {
        return;
    };
    let fill = dir.write(
        "fill.sh",
        "#!/bin/sh\nhead -c 7M /dev/zero > \"$1/filler\" 2>/dev/null\nexit 0\n",
    );
    std::fs::set_permissions(&fill, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["options"] = serde_json::json!({"report": {"path": dir.join("report.json")}});
    m["hooks"] = serde_json::json!({"pre_convert": [
        {"type": "script", "path": fill, "args": [mount.path]}
    ]});
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.json"))
        .arg("--output-dir")
        .arg(&mount.path));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        tree(&mount.path),
        ["filler"],
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

/// A raw image of `mib` MiB with every byte written (a pattern, through qemu-io), so it is not
/// sparse and its output takes all of it.
fn dense_raw(path: &Path, mib: u64) {
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(path)
            .arg(format!("{mib}M")),
    );
    run_ok(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", &format!("write -P 0xab 0 {mib}M")])
            .arg(path),
    );
}

/// A manifest converting `disks` (id, image) to qcow2, its report outside the output
/// directory, so a small output filesystem holds only what convert writes.
fn space_manifest(dir: &TestDir, name: &str, disks: &[(&str, &Path)]) -> std::path::PathBuf {
    let disks: Vec<serde_json::Value> = disks.iter().map(|(id, p)| disk(id, "raw", p)).collect();
    let mut m = convert_manifest(disks, "qcow2", false);
    m["source"]["vm_name"] = serde_json::json!(name);
    m["options"] =
        serde_json::json!({"report": {"path": dir.join(&format!("{name}.report.json"))}});
    let path = dir.join(&format!("{name}.json"));
    write_json(&path, &m);
    path
}

/// The stages a report ran, in order.
fn stages_run(report: &serde_json::Value) -> Vec<String> {
    report["pipeline"]["stages"]
        .as_object()
        .expect("stages")
        .keys()
        .cloned()
        .collect()
}

/// A 64 MiB disk whose output cannot fit in a 20 MiB filesystem is refused by load_manifest,
/// before convert creates anything, and the error says how much is needed and free, where, and
/// for which disk.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs root, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn output_that_cannot_fit_is_refused_before_convert() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("root.raw");
    dense_raw(&src, 64);
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=20m") else {
        return;
    };
    let manifest = space_manifest(&dir, "web01", &[("root", &src)]);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--output-dir")
        .arg(mount.path.join("out")));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        tree(&mount.path),
        Vec::<String>::new(),
        "nothing written on the small filesystem, no .part file"
    );
    let report = read_json(&dir.join("web01.report.json"));
    assert_eq!(report["errors"][0]["stage"], "load_manifest");
    assert_eq!(
        stages_run(&report),
        ["load_manifest"],
        "convert never started"
    );
    let err = first_error(&report);
    assert!(r.stdout.contains(&err), "{}", r.stdout);
    insta::assert_snapshot!(redact(&err, &dir), @"not enough space for web01's output in [TMP]/small/out (filesystem [TMP]/small): needs 64.3 MiB (67,436,544 bytes) for disk root; 20.0 MiB (20,967,424 bytes) free; nothing was written: free some space there, or write the outputs elsewhere (output.directory or --output-dir)");
}

/// Two disks that each fit but not together: the check adds up the outputs on one filesystem.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs root, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn outputs_on_one_filesystem_add_up() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let (root, data) = (dir.join("root.raw"), dir.join("data.raw"));
    dense_raw(&root, 12);
    dense_raw(&data, 12);
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=20m") else {
        return;
    };
    let manifest = space_manifest(&dir, "web01", &[("root", &root), ("data", &data)]);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--output-dir")
        .arg(&mount.path));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(tree(&mount.path), Vec::<String>::new());
    let report = read_json(&dir.join("web01.report.json"));
    insta::assert_snapshot!(redact(&first_error(&report), &dir), @"not enough space for web01's output in [TMP]/small (filesystem [TMP]/small): needs 24.6 MiB (25,821,184 bytes) for disks root, data; 20.0 MiB (20,967,424 bytes) free; nothing was written: free some space there, or write the outputs elsewhere (output.directory or --output-dir)");
}

/// Outputs that fit pass the check, and the report says what was measured and what was free.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs root, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn output_that_fits_passes_the_space_check() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("root.raw");
    dense_raw(&src, 12);
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=20m") else {
        return;
    };
    let manifest = space_manifest(&dir, "web01", &[("root", &src)]);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--output-dir")
        .arg(&mount.path));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(tree(&mount.path), ["root.qcow2", "web01.xml"]);
    let report = read_json(&dir.join("web01.report.json"));
    let space = &report["pipeline"]["stages"]["load_manifest"]["result"]["output_space"];
    assert_eq!(space.as_array().map(Vec::len), Some(1), "{space:#}");
    assert_eq!(space[0]["filesystem"], mount.path.display().to_string());
    assert_eq!(space[0]["disks"], serde_json::json!(["root"]));
    let required = space[0]["required_bytes"].as_u64().expect("required");
    let free = space[0]["free_bytes"].as_u64().expect("free");
    assert!(required <= free, "{space:#}");
    assert!(
        file_size(&mount.path.join("root.qcow2")) <= required,
        "the measure is an upper bound of what convert wrote"
    );
}

/// Two VMs of a batch converting at once to one filesystem add up too: each fits alone, both
/// do not, so one of them (whichever checks second) is refused, and says which VM holds the
/// rest of the space.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs root, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn parallel_vms_add_up_on_one_filesystem() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("root.raw");
    dense_raw(&src, 12);
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=20m") else {
        return;
    };
    for vm in ["web01", "web02"] {
        let m = serde_json::json!({
            "manifest_version": "1.0",
            "source": {"vm_name": vm},
            "disks": [disk("root", "raw", &src)],
            "pipeline": {"convert": {"enabled": true}},
            "output": {"format": "raw"},
        });
        write_json(&dir.join(&format!("{vm}.json")), &m);
    }
    let batch = serde_json::json!({
        "batch_version": "1.0",
        "batch_metadata": {"batch_id": "space", "parallel_limit": 2},
        "vms": [{"manifest": "web01.json", "id": "web01"}, {"manifest": "web02.json", "id": "web02"}],
        "shared_config": {"output_directory": mount.path},
    });
    write_json(&dir.join("batch.json"), &batch);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(dir.join("batch.json"))
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let report = read_json(&mount.path.join("batch_report.json"));
    let vms = report["vm_results"].as_array().expect("vm_results");
    let failed: Vec<&serde_json::Value> = vms.iter().filter(|v| v["success"] == false).collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    let (loser, winner) = if failed[0]["vm_id"] == "web01" {
        ("web01", "web02")
    } else {
        ("web02", "web01")
    };
    assert!(mount.path.join(winner).join("root.raw").is_file());
    assert!(!mount.path.join(loser).join("root.raw").exists());
    assert!(!mount.path.join(loser).join("root.raw.part").exists());
    let err = failed[0]["error"].as_str().expect("error").to_owned();
    // The winner had either written its output (then it is out of the free space) or not yet
    // (then its promise is): both refuse the loser, in two wordings.
    let err = redact(&err, &dir)
        .replace(loser, "[LOSER]")
        .replace(winner, "[WINNER]");
    let re = regex_lite::Regex::new(r"\d+\.\d MiB \([\d,]+ bytes\) free(, of which [^;]*)?;")
        .expect("regex");
    let err = re.replace(&err, "[FREE];").into_owned();
    insta::assert_snapshot!(err, @"load_manifest: not enough space for [LOSER]'s output in [TMP]/small/[LOSER] (filesystem [TMP]/small): needs 12.3 MiB (12,910,592 bytes) for disk root; [FREE]; nothing was written: free some space there, or write the outputs elsewhere (output.directory or --output-dir)");
}
