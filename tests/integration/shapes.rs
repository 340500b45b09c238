//! Manifests in the shapes the guide documents and the Python tool writes: disks with only `id`
//! and `local_path` (format and size probed at planning), `checksum: null`, the guide's
//! generated-manifest shape; and the paths and files the loader's errors name.

use crate::support::*;
use serde_json::json;

/// A 64 MiB qcow2 image with the test pattern, and a manifest converting it that gives the
/// disk only `id` and `local_path`.
fn probed_manifest(dir: &TestDir) -> std::path::PathBuf {
    let src = dir.join("vm.qcow2");
    make_image(&src, "qcow2", None);
    let manifest = dir.join("vm.json");
    write_json(
        &manifest,
        &json!({
            "manifest_version": "1.0",
            "source": {"vm_name": "probed"},
            "disks": [{"id": "disk0", "local_path": "vm.qcow2", "checksum": null}],
            "pipeline": {"convert": {"enabled": true}, "validate": {"enabled": true}},
            "output": {"directory": "out", "format": "raw"}
        }),
    );
    manifest
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn format_and_size_are_probed_when_left_out() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = probed_manifest(&dir);
    let size = file_size(&dir.join("vm.qcow2"));

    let dry = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run"));
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let shown = redact(&dry.stdout, &dir).replace(&format!("{size} bytes"), "[SIZE] bytes");
    insta::assert_snapshot!("probed_dry_run", shown);

    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        identical(
            &dir.join("vm.qcow2"),
            "qcow2",
            &dir.join("out/disk0.raw"),
            "raw"
        ),
        "the probed qcow2 is converted as qcow2"
    );
    let report = read_json(&dir.join("out/report.json"));
    assert_eq!(
        report["input_manifest"]["sources"][0]["probed"],
        json!({"source_format": "qcow2", "bytes": size}),
        "the report says which values were probed"
    );
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn written_values_are_not_reported_as_probed_and_are_still_checked() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("vm.qcow2");
    make_image(&src, "qcow2", None);
    let manifest = dir.join("vm.json");
    let mut m = convert_manifest(vec![disk("disk0", "qcow2", &src)], "raw", false);
    m["disks"][0]["bytes"] = json!(1);
    m["output"]["directory"] = json!(dir.join("out"));
    write_json(&manifest, &m);
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report = read_json(&dir.join("out/report.json"));
    assert!(
        report["input_manifest"]["sources"][0]
            .get("probed")
            .is_none(),
        "{report:#}"
    );
    let warned = report["warnings"].to_string();
    assert!(
        warned.contains("the manifest says 1 bytes"),
        "a written size is still compared: {warned}"
    );

    // A written format that the file does not have is refused as before.
    m["disks"][0]["source_format"] = json!("vdi");
    m["disks"][0]["bytes"] = json!(file_size(&src));
    write_json(&manifest, &m);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--overwrite"));
    assert_ne!(r.code, Some(0));
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("source_format is vdi but qemu-img detects qcow2"),
        "{said}"
    );
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn an_ambiguous_probe_is_refused() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    // A fixed VHD probes as raw: whether its footer is data must not be guessed.
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=fixed"])
            .arg(dir.join("fixed.vhd"))
            .arg("8M"),
    );
    std::fs::write(dir.join("data-flat.vmdk"), vec![0u8; 1 << 20]).expect("write");
    let manifest = dir.join("vm.json");
    write_json(
        &manifest,
        &json!({
            "manifest_version": "1.0",
            "disks": [
                {"id": "d0", "local_path": "fixed.vhd"},
                {"id": "d1", "local_path": "data-flat.vmdk"}
            ],
            "pipeline": {"convert": {"enabled": true}}
        }),
    );
    let before = tree(dir.path());
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(tree(dir.path()), before, "nothing is written");
    insta::assert_snapshot!("ambiguous_probe_refused", redact(&r.stderr, &dir));
}

#[test]
fn checksum_errors_say_what_is_expected() {
    let dir = TestDir::new();
    dir.write("a.raw", "x");
    let manifest = dir.join("vm.json");
    write_json(
        &manifest,
        &json!({
            "manifest_version": "1.0",
            "disks": [
                {"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw",
                 "checksum": "sha256:ABC"},
                {"id": "d1", "source_format": "raw", "bytes": 1, "local_path": "a.raw",
                 "checksum": null}
            ]
        }),
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    insta::assert_snapshot!("checksum_error", redact(&r.stderr, &dir));
}
