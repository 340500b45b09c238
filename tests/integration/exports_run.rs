//! Exports converted without a manifest in between. `--ova FILE --run`: the import writes the
//! manifest and runs it at once, with the `--config` files as the layer below it (their
//! pipeline decides; the import then writes none of its own). A batch whose entries name an
//! OVA or a VMX instead of a manifest: each is imported when the batch is planned, verifies its
//! own digests, and fails alone.

use std::path::Path;

use serde_json::Value;
use sha2::Digest;

use crate::exports::{Export, NAME, build_export, build_vmx_folder};
use crate::support::*;

/// A configuration layer that converts and validates (no guest work, so no appliance).
const SITE: &str = "pipeline:\n  convert: {enabled: true}\n  validate: {enabled: true}\n";

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces the digest on line `line` (0-based) of the export's `.mf` with a wrong one.
fn spoil_mf_line(e: &Export, line: usize) {
    let mf = e.src(&format!("{NAME}.mf"));
    let text = std::fs::read_to_string(&mf).expect("mf");
    let old = text.lines().nth(line).expect("line").to_owned();
    let last = old.chars().last().expect("digit");
    let new = format!(
        "{}{}",
        &old[..old.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    std::fs::write(&mf, text.replace(&old, &new)).expect("write mf");
}

/// `hyper2kvm --ova OVA --output-dir <e>/<out> --config CONFIG <extra>`.
fn import_with_config(e: &Export, ova: &Path, out: &str, config: &Path, extra: &[&str]) -> Run {
    run(hyper2kvm()
        .arg("--ova")
        .arg(ova)
        .arg("--output-dir")
        .arg(e.dir.join(out))
        .arg("--config")
        .arg(config)
        .args(extra)
        .args(["--progress", "none"]))
}

/// The first object in `v` (depth first) that has `key`.
fn find_key<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) if m.contains_key(key) => Some(v),
        Value::Object(m) => m.values().find_map(|x| find_key(x, key)),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// The summary up to the line that hands over to the run, paths and sizes redacted.
fn import_part(stdout: &str, dir: &TestDir) -> String {
    let end = stdout
        .find("Running it now")
        .map(|i| i + "Running it now (--run).\n".len())
        .unwrap_or(stdout.len());
    let sizes = regex_lite::Regex::new(r"\d+\.\d KiB \(virtual").expect("regex");
    sizes
        .replace_all(&redact(&stdout[..end], dir), "[SIZE] (virtual")
        .into_owned()
}

#[test]
fn an_ova_converts_in_one_step_with_the_pipeline_of_the_config() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build_export();
    let ova = e.tar_default();
    let site = e.dir.write("site.yaml", SITE);
    let r = import_with_config(&e, &ova, "out", &site, &["--run"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("ova_run_summary", import_part(&r.stdout, &e.dir));
    for n in 0..2 {
        assert!(
            identical(
                &e.raw(n),
                "raw",
                &e.dir.join(&format!("out/disk{n}.qcow2")),
                "qcow2"
            ),
            "disk{n} differs from its source"
        );
    }
    let manifest = read_json(&e.dir.join("out/manifest.json"));
    // The config names the pipeline: the manifest carries none that would win over it.
    assert!(manifest.get("pipeline").is_none(), "{manifest:#}");
    // The .mf's SHA256 of disk 2 is its checksum, verified by the run; disk 1's .mf line is
    // SHA1 (verified by the import), so its SHA-256 was computed in the same read.
    let disks = manifest["disks"].as_array().expect("disks");
    assert_eq!(
        disks[1]["checksum"],
        Value::String(format!(
            "sha256:{}",
            sha256_hex(&e.src(&format!("{NAME}-disk2.vmdk")))
        ))
    );
    assert_eq!(
        disks[0]["checksum"],
        Value::String(format!(
            "sha256:{}",
            sha256_hex(&e.src(&format!("{NAME}-disk1.vmdk")))
        ))
    );
    // The run is what --config site.yaml --manifest out/manifest.json does: its report says
    // both checksums were verified.
    let report = read_json(&e.dir.join("out/report.json"));
    let load = report
        .pointer("/results/load_manifest")
        .or_else(|| find_key(&report, "verified_checksums"))
        .unwrap_or_else(|| panic!("no load_manifest result in {report:#}"));
    let verified: Vec<&str> = load["verified_checksums"]
        .as_array()
        .unwrap_or_else(|| panic!("no verified_checksums in {load:#}"))
        .iter()
        .filter_map(|v| v["disk_id"].as_str())
        .collect();
    assert_eq!(verified, ["disk0", "disk1"], "{load:#}");
    assert_eq!(load["checksums_verified"], true);

    // A profile from --config decides the stages, guest repair included (a dry run: the
    // fixture disks hold no guest to repair).
    let production = e.dir.write("production.yaml", "profile: production\n");
    let r = import_with_config(&e, &ova, "out3", &production, &["--run", "--dry-run"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("  profile: production\n")
            && r.stdout
                .contains("  stages: inspect, fix, convert, validate\n"),
        "{}",
        r.stdout
    );
    assert!(!e.dir.join("out3").exists());

    // Without --run, a config layer is refused (it would apply to nothing).
    let r = import_with_config(&e, &ova, "out2", &site, &[]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("add --run"), "{}", r.stderr);
    assert!(!e.dir.join("out2").exists());
}

#[test]
fn a_damaged_disk_fails_the_one_step_run_and_keeps_no_output() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build_export();
    // Line 3 is disk 2's SHA256: deferred to the run, which must catch it.
    spoil_mf_line(&e, 2);
    let ova = e.tar_default();
    let site = e.dir.write("site.yaml", SITE);
    let r = import_with_config(&e, &ova, "out", &site, &["--run"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("disk1") && all.contains("checksum"),
        "the failure names the disk and its checksum:\n{all}"
    );
    let files = tree(&e.dir.join("out"));
    assert!(
        files
            .iter()
            .all(|f| !f.ends_with(".qcow2") && !f.ends_with(".part")),
        "outputs kept from a damaged source: {files:?}"
    );
}

#[test]
fn a_batch_names_exports_directly_and_a_bad_one_fails_alone() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let good = build_export();
    let good_ova = good.tar_default();
    // A second OVA whose SHA1 line (disk 1, verified at planning) is wrong.
    let bad = build_export();
    spoil_mf_line(&bad, 1);
    let bad_ova = bad.tar_default();
    // A third whose SHA256 line (disk 2, verified by its own run) is wrong.
    let late = build_export();
    spoil_mf_line(&late, 2);
    let late_ova = late.tar_default();
    let dir = TestDir::new();
    let vmx = build_vmx_folder(&dir);
    let batch = serde_json::json!({
        "batch_version": "1.0",
        "batch_metadata": {"batch_id": "wave1", "parallel_limit": 2},
        "vms": [
            {"id": "app01", "ova": good_ova},
            {"id": "web01", "vmx": vmx},
            // The same fixture VM thrice: the copies get MACs of their own.
            {"id": "bad01", "ova": bad_ova,
             "overrides": {"network_mapping": {"mac_address_policy": "regenerate"}}},
            {"id": "late01", "ova": late_ova,
             "overrides": {"network_mapping": {"mac_address_policy": "regenerate"}}},
        ],
        "shared_config": {
            "output_directory": dir.join("out"),
            "pipeline": {"convert": {"enabled": true}, "validate": {"enabled": true}}
        }
    });
    let batch_path = dir.join("batch.json");
    write_json(&batch_path, &batch);

    // The dry run lists each VM with the export it comes from.
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch_path).args([
        "--dry-run",
        "--progress",
        "none",
    ]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(!dir.join("out").join("app01").exists());

    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch_path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    for n in 0..2 {
        assert!(
            identical(
                &good.raw(n),
                "raw",
                &dir.join(&format!("out/app01/disk{n}.qcow2")),
                "qcow2"
            ),
            "app01 disk{n} differs from its source"
        );
    }
    assert!(dir.join("out/web01/disk3.qcow2").is_file());
    let report = read_json(&dir.join("out/batch_report.json"));
    let results = report["vm_results"].as_array().expect("results");
    let by_id = |id: &str| {
        results
            .iter()
            .find(|v| v["vm_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {report:#}"))
    };
    assert_eq!(by_id("app01")["status"], "succeeded");
    assert_eq!(by_id("web01")["status"], "succeeded");
    for (id, expect) in [
        ("bad01", "the SHA1 digest of app01-disk1.vmdk is"),
        ("late01", "Checksum verification failed for disk disk1"),
    ] {
        let v = by_id(id);
        assert_eq!(v["status"], "failed", "{v:#}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(expect), "{id}: {error}");
        let files = tree(&dir.join(&format!("out/{id}")));
        assert!(
            files
                .iter()
                .all(|f| !f.ends_with(".qcow2") && !f.ends_with(".part")),
            "{id} left {files:?}"
        );
    }
    assert_eq!(
        by_id("app01")["manifest"],
        Value::String(good_ova.display().to_string())
    );

    // The generated manifests are the same at every run, so a resume keeps what finished.
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch_path).args([
        "--batch-resume",
        "--progress",
        "none",
    ]));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("out/batch_report.json"));
    let results = report["vm_results"].as_array().expect("results");
    for id in ["app01", "web01"] {
        let v = results.iter().find(|v| v["vm_id"] == id).expect("vm");
        assert_eq!(
            v["from_checkpoint"], true,
            "{id} was converted again: {v:#}"
        );
    }
}

#[test]
fn a_batch_entry_names_one_source() {
    let dir = TestDir::new();
    let batch = dir.write(
        "batch.json",
        r#"{"batch_version": "1.0", "vms": [
            {"id": "a", "ova": "a.ova", "manifest": "a.json"},
            {"id": "b", "vmx": 3},
            {"id": "c"}
        ]}"#,
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch).args([
        "--dry-run",
        "--progress",
        "none",
    ]));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("batch_entry_sources", redact(&r.stderr, &dir));
}
