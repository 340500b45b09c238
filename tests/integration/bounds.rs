//! Nothing waits forever: a qemu-img step or a boot test that hangs for real is stopped at its
//! bound, and the VM fails with a message that names the step and the bound.
//!
//! The hangs are made by a wrapper first on PATH in front of the real tool: a qemu-img that
//! sleeps before it does its work (a short command past its time limit, a conversion that makes
//! no progress), or a qemu-system-x86_64 started paused (`-S`), which sits idle with an empty
//! console exactly like a guest that never boots. Without the bound each wrapper would only
//! delay the run, and the run would succeed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;

/// Puts a wrapper named `tool` first on PATH: `body` is shell text run with `$REAL` (the real
/// tool) and the original arguments. Returns the PATH to run hyper2kvm with.
fn wrapper(dir: &TestDir, tool: &str, body: &str) -> String {
    let real = which::which(tool).expect("the real tool");
    let script = format!("#!/bin/sh\nREAL='{}'\n{body}\n", real.display());
    let path = dir.write(&format!("bin/{tool}"), &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A 64 MiB raw image with the test pattern, and a manifest converting it to qcow2.
fn convert_job(dir: &TestDir) -> PathBuf {
    let disk = dir.join("disk.raw");
    make_image(&disk, "raw", None);
    let manifest = convert_manifest(vec![disk_entry(&disk)], "qcow2", false);
    let path = dir.join("vm.json");
    write_json(&path, &manifest);
    path
}

fn disk_entry(path: &Path) -> serde_json::Value {
    disk("boot", "raw", path)
}

/// `qemu-img info` that does not answer is killed at the short commands' time limit
/// (HYPER2KVM_QEMU_IMG_TIMEOUT), and the VM fails naming the limit.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh)"
)]
fn a_hung_qemu_img_info_is_killed_at_its_time_limit() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = convert_job(&dir);
    let path = wrapper(
        &dir,
        "qemu-img",
        r#"[ "$1" = info ] && sleep 60
exec "$REAL" "$@""#,
    );
    let started = Instant::now();
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PATH", path)
        .env("HYPER2KVM_QEMU_IMG_TIMEOUT", "3"));
    let elapsed = started.elapsed();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
    let report = read_json(&dir.join("output/report.json"));
    let message = report["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("disk boot: qemu-img cannot open ")
            && message.ends_with(
                "qemu-img did not finish within 3 s and was killed; HYPER2KVM_QEMU_IMG_TIMEOUT \
                 sets the limit"
            ),
        "{message}"
    );
    assert!(!dir.join("output/boot.qcow2").exists());
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}

/// A `qemu-img convert` that makes no progress (no progress step, no write to its output) for
/// the stall window (HYPER2KVM_QEMU_IMG_STALL_SECONDS) is killed; the VM fails naming the step
/// and the window, and no `.part` file is left.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh)"
)]
fn a_stalled_qemu_img_convert_is_killed() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = convert_job(&dir);
    // One progress step, then silence, as a conversion stuck on its source looks.
    let path = wrapper(
        &dir,
        "qemu-img",
        r#"if [ "$1" = convert ]; then printf '    (0.00/100%%)\r'; sleep 60; fi
exec "$REAL" "$@""#,
    );
    let started = Instant::now();
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PATH", path)
        .env("HYPER2KVM_QEMU_IMG_STALL_SECONDS", "4"));
    let elapsed = started.elapsed();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["errors"][0]["stage"], "convert", "{report:#}");
    let message = report["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("disk boot: conversion failed: `")
            && message.contains("` ended with timed out: ")
            && message.ends_with(
                "qemu-img made no progress for 4 s (no progress step on stdout, no change to \
                 its output) and was killed; HYPER2KVM_QEMU_IMG_STALL_SECONDS sets the window"
            ),
        "{message}"
    );
    assert_eq!(tree(&dir.join("output")), ["report.html", "report.json"]);
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}

/// A `qemu-img compare` that stalls is killed the same way, and validate fails saying so.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh)"
)]
fn a_stalled_qemu_img_compare_is_killed() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = convert_job(&dir);
    let path = wrapper(
        &dir,
        "qemu-img",
        r#"[ "$1" = compare ] && sleep 60
exec "$REAL" "$@""#,
    );
    let started = Instant::now();
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PATH", path)
        .env("HYPER2KVM_QEMU_IMG_STALL_SECONDS", "4"));
    let elapsed = started.elapsed();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
    let report = read_json(&dir.join("output/report.json"));
    let text = report.to_string();
    assert!(
        text.contains(
            "qemu-img made no progress for 4 s (no progress step on stdout, no change to its \
             output) and was killed; HYPER2KVM_QEMU_IMG_STALL_SECONDS sets the window"
        ),
        "{report:#}"
    );
    assert_eq!(report["errors"][0]["stage"], "validate", "{report:#}");
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}

/// A boot test whose VM never boots (qemu started paused: idle, its console empty) fails at the
/// boot test's `timeout`; its qemu is killed.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-system-x86_64"),
    ignore = "needs qemu-img and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn a_boot_that_never_starts_fails_at_its_timeout() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let dir = TestDir::new();
    let disk = dir.join("blank.raw");
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("64M"),
    );
    let manifest = dir.write(
        "blank.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{vm_name: blank}}\nvm: {{firmware: bios}}\n\
             pipeline:\n  convert: {{enabled: true}}\n  validate:\n    enabled: true\n    \
             boot_test: {{enabled: true, timeout: 5}}\n\
             disks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(&disk),
            disk.display()
        ),
    );
    let path = wrapper(
        &dir,
        "qemu-system-x86_64",
        r#"case " $* " in *" -snapshot "*) exec "$REAL" "$@" -S ;; esac
exec "$REAL" "$@""#,
    );
    let started = Instant::now();
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PATH", path));
    let elapsed = started.elapsed();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    let report = read_json(&dir.join("output/report.json"));
    let bt = &report["pipeline"]["stages"]["validate"]["result"]["boot_test"];
    assert_eq!(bt["result"], "failed", "{bt:#}");
    assert_eq!(bt["reason"], "timeout", "{bt:#}");
    assert!(
        bt["message"].as_str().unwrap_or_default().starts_with(
            "no console line matched success_pattern within 5 s; the console stayed empty"
        ),
        "{bt:#}"
    );
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}
