//! The summary survives: when `report.json` or `batch_report.json` cannot be written, the
//! summary still prints, says which report is missing and why, and the run exits 1.
//!
//! The report is made unwritable while the run goes on (a hook puts a directory where the report
//! belongs), the way a full or remounted filesystem would surprise a run that planning had found
//! writable; tests run as root here, so a read-only directory would not stop the write.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::*;

fn script(dir: &TestDir, name: &str, body: &str) -> PathBuf {
    let p = dir.write(name, body);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// A VM manifest `<name>.json` with a 1 MiB raw disk, whose `post_extraction` hook makes a
/// directory at `blocked`.
fn vm_blocking(dir: &TestDir, name: &str, blocked: &Path) -> PathBuf {
    std::fs::write(dir.join(&format!("{name}.raw")), vec![0u8; 1 << 20]).expect("disk");
    script(
        dir,
        "block.sh",
        // The sleep keeps the VM's duration above the summary's rounding (0.00 s hides the
        // Performance section), so the snapshot does not depend on how fast this machine is.
        "#!/bin/sh\nmkdir -p \"$1\"\nsleep 0.05\necho blocked the report\n",
    );
    let m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "local", "vm_name": name},
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1 << 20,
                   "local_path": format!("{name}.raw")}],
        "pipeline": {},
        "hooks": {"post_extraction": [{"type": "script", "path": "block.sh", "args": [blocked]}]},
    });
    let p = dir.join(&format!("{name}.json"));
    write_json(&p, &m);
    p
}

fn show(r: &Run) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    )
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn summary_prints_when_the_report_cannot_be_written() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = vm_blocking(&dir, "web01", &dir.join("output/report.json"));
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&m)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert!(dir.join("output/report.json").is_dir());
    // The page is written all the same.
    assert!(dir.join("output/report.html").is_file());
    insta::assert_snapshot!(redact(
        &format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr),
        &dir
    ));
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn batch_summary_prints_when_the_batch_report_cannot_be_written() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    vm_blocking(&dir, "web01", &dir.join("out/batch_report.json"));
    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &json!({
            "batch_version": "1.0",
            "batch_metadata": {"batch_id": "unwritable"},
            "shared_config": {"output_directory": "out"},
            "vms": [{"manifest": "web01.json", "id": "web01"}],
        }),
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    // The VM itself ran and kept its report; the summary and the page beside the batch report
    // exist.
    assert_eq!(
        read_json(&dir.join("out/web01/report.json"))["status"],
        "succeeded"
    );
    assert!(dir.join("out/batch_summary.txt").is_file());
    assert!(dir.join("out/batch_report.html").is_file());
    let ts = regex_lite::Regex::new(r"Timestamp: \S+").expect("regex");
    let text = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    insta::assert_snapshot!(redact(&ts.replace_all(&text, "Timestamp: [TIME]"), &dir));
}
