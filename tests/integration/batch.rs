//! Batch mode: many VMs in parallel, isolation, ordering, stop rules, reports, resume, signals.

use std::os::unix::fs::PermissionsExt;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Source formats cycled through the batch: (driver, create options, manifest format).
const FORMATS: &[(&str, Option<&str>, &str)] = &[
    ("vmdk", Some("subformat=streamOptimized"), "vmdk"),
    ("vhdx", None, "vhdx"),
    ("vpc", None, "vhd"),
    ("qcow2", None, "qcow2"),
    ("raw", None, "raw"),
    ("vdi", None, "vdi"),
    ("vmdk", Some("subformat=monolithicSparse"), "vmdk"),
    ("vpc", Some("subformat=fixed"), "vhd"),
];

/// Writes `vms/<name>.yaml` with one disk `disks/<name>.img`, returning (manifest, disk, driver).
fn vm(dir: &TestDir, name: &str, n: usize) -> (PathBuf, PathBuf, &'static str) {
    let (driver, opts, format) = FORMATS[n % FORMATS.len()];
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    let disk = dir.join(&format!("disks/{name}.img"));
    make_image(&disk, driver, opts);
    let manifest = dir.write(
        &format!("vms/{name}.yaml"),
        &format!(
            "manifest_version: \"1.0\"\nsource: {{vm_name: {name}}}\ndisks:\n  - {{id: {name}-d0, source_format: {format}, bytes: {}, local_path: ../disks/{name}.img}}\n",
            file_size(&disk)
        ),
    );
    (manifest, disk, driver)
}

fn batch_file(dir: &TestDir, meta: serde_json::Value, vms: Vec<serde_json::Value>) -> PathBuf {
    let doc = json!({
        "batch_version": "1.0",
        "batch_metadata": meta,
        "shared_config": {
            "output_directory": "converted",
            "pipeline": {
                "inspect": {"enabled": true},
                "convert": {"enabled": true},
                "validate": {"enabled": true}
            }
        },
        "vms": vms,
    });
    let path = dir.join("batch.json");
    write_json(&path, &doc);
    path
}

fn counts(report: &serde_json::Value) -> Vec<(String, u64)> {
    [
        "total_vms",
        "processed_vms",
        "successful_vms",
        "failed_vms",
        "skipped_vms",
        "not_started_vms",
        "interrupted_vms",
    ]
    .iter()
    .map(|k| {
        (
            (*k).to_owned(),
            report["batch"][*k].as_u64().unwrap_or(u64::MAX),
        )
    })
    .collect()
}

fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["vm_results"]
        .as_array()
        .expect("vm_results")
        .iter()
        .map(|v| {
            (
                v["vm_id"].as_str().unwrap_or_default().to_owned(),
                v["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Redacts what changes between runs in a batch summary.
fn redact_summary(text: &str, dir: &TestDir) -> String {
    let ts = regex_lite::Regex::new(r"Timestamp: \S+").expect("regex");
    redact(&ts.replace_all(text, "Timestamp: [TIME]"), dir)
}

/// Twelve VMs of mixed formats, three failing in different ways, four at a time: the nine good
/// outputs match their sources, the failures are isolated and the counts are exact.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn twelve_vms_three_failures_parallel_four() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let mut entries = Vec::new();
    let mut good = Vec::new();
    for n in 0..12 {
        let name = format!("vm{n:02}");
        let (manifest, disk, driver) = vm(&dir, &name, n);
        match n {
            // The manifest points at a disk that is not there.
            3 => std::fs::remove_file(&disk).expect("rm"),
            // A truncated sparse VMDK: qemu-img check refuses it.
            6 => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&disk)
                    .expect("open");
                f.set_len(file_size(&disk) / 2).expect("truncate");
            }
            // The conversion succeeds, then a post_convert hook overwrites 64 KiB of the
            // output, as a faulty storage path would: only validate can notice.
            9 => {
                let script = dir.write(
                    "vms/corrupt.sh",
                    "#!/bin/sh\nexec qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' \"$1\" >/dev/null\n",
                );
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                let mut text = std::fs::read_to_string(&manifest).expect("read");
                text.push_str(
                    "hooks:\n  post_convert:\n    - {type: script, path: corrupt.sh, args: [\"{{ output_path }}\"]}\n",
                );
                std::fs::write(&manifest, text).expect("write");
            }
            _ => good.push((name.clone(), disk, driver)),
        }
        entries.push(json!({"manifest": format!("vms/{name}.yaml"), "id": name}));
    }
    let batch = batch_file(
        &dir,
        json!({"batch_id": "dc-east", "parallel_limit": 4}),
        entries,
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "lines"]));
    assert_eq!(
        r.code,
        Some(3),
        "some VMs failed:\n{}{}",
        r.stdout,
        r.stderr
    );

    let out = dir.join("converted");
    for (name, disk, driver) in &good {
        let output = out.join(format!("{name}/{name}-d0.qcow2"));
        assert!(identical(disk, driver, &output, "qcow2"), "{name} differs");
        assert_eq!(
            read_json(&out.join(format!("{name}/report.json")))["status"],
            "succeeded"
        );
    }
    for failed in ["vm03", "vm06"] {
        let files = tree(&out.join(failed));
        assert!(
            files
                .iter()
                .all(|f| !f.ends_with(".qcow2") && !f.ends_with(".part")),
            "{failed} left {files:?}"
        );
    }
    let report = read_json(&out.join("batch_report.json"));
    assert_eq!(
        counts(&report),
        [
            ("total_vms".to_owned(), 12),
            ("processed_vms".to_owned(), 12),
            ("successful_vms".to_owned(), 9),
            ("failed_vms".to_owned(), 3),
            ("skipped_vms".to_owned(), 0),
            ("not_started_vms".to_owned(), 0),
            ("interrupted_vms".to_owned(), 0),
        ]
    );
    assert_eq!(report["batch"]["parallel_limit"], 4);
    let results = report["vm_results"].as_array().expect("results");
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("local_path not found")
    );
    assert!(
        results[6]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("failed qemu-img check")
    );
    // The corrupted output stays for inspection, but the VM failed in validate, after its
    // hook ran, and its own report says why.
    let vm09 = read_json(&out.join("vm09/report.json"));
    assert_eq!(vm09["status"], "failed");
    assert!(
        results[9]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the output's content differs from the source"),
        "{}",
        results[9]["error"]
    );
    let vm09_stages: Vec<&str> = results[9]["stage_durations"]
        .as_array()
        .expect("timings")
        .iter()
        .map(|s| s["stage"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        vm09_stages,
        ["load_manifest", "inspect", "convert", "validate"]
    );
    assert_eq!(vm09["hooks"][0]["stage"], "post_convert", "{vm09:#}");
    let stages: Vec<&str> = results[0]["stage_durations"]
        .as_array()
        .expect("timings")
        .iter()
        .map(|s| s["stage"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        stages,
        [
            "load_manifest",
            "inspect",
            "convert",
            "validate",
            "domain_xml"
        ]
    );
    assert!(report["batch"]["bytes_written"].as_u64().unwrap_or(0) > 0);

    // The summary is stable once times are redacted; durations vary, so they are too.
    let summary = std::fs::read_to_string(out.join("batch_summary.txt")).expect("summary");
    let perf = regex_lite::Regex::new(r"(?m)^  (Fastest|Slowest): \S+").expect("regex");
    insta::assert_snapshot!(
        perf.replace_all(&redact_summary(&summary, &dir), "  $1: [VM]")
            .into_owned()
    );
}

/// `--batch-parallel 1` runs VMs in (priority, position) order; disabled VMs are reported as
/// skipped; manifest paths resolve against the batch file, not the working directory.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn priority_order_and_skipped_vms() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let spec = [("a", 5), ("b", -2), ("c", 0), ("d", 0), ("e", -2)];
    let mut entries = Vec::new();
    for (n, (name, prio)) in spec.iter().enumerate() {
        vm(&dir, name, n + 3);
        entries.push(json!({"manifest": format!("vms/{name}.yaml"), "id": name, "priority": prio}));
    }
    entries.push(json!({"manifest": "vms/a.yaml", "id": "off", "enabled": false}));
    let batch = batch_file(&dir, json!({"parallel_limit": 4}), entries);
    let elsewhere = TestDir::new();
    let r = run(hyper2kvm()
        .current_dir(elsewhere.path())
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--batch-parallel", "1", "--progress", "lines"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let started: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.split_once(" started: ")?.0.rsplit(' ').next())
        .collect();
    assert_eq!(started, ["[b]", "[e]", "[c]", "[d]", "[a]"]);
    let report = read_json(&dir.join("converted/batch_report.json"));
    assert_eq!(
        report["batch"]["parallel_limit"], 1,
        "--batch-parallel overrides"
    );
    assert_eq!(
        statuses(&report).last().cloned(),
        Some(("off".to_owned(), "skipped".to_owned()))
    );
    assert!(!dir.join("converted/off").exists());
}

/// `continue_on_error: false`: after the first failure no new VM starts; the rest are
/// recorded as not_started.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn stop_after_first_failure() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let mut entries = Vec::new();
    for (n, name) in ["first", "second", "third"].iter().enumerate() {
        let (_, disk, _) = vm(&dir, name, n);
        if n == 1 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&disk)
                .expect("open");
            // Damaged, not empty: an empty file is refused when the manifest is loaded, and
            // this VM must fail only once the batch runs.
            f.set_len(4096).expect("truncate");
        }
        entries.push(json!({"manifest": format!("vms/{name}.yaml"), "id": name}));
    }
    let batch = batch_file(
        &dir,
        json!({"parallel_limit": 1, "continue_on_error": false}),
        entries,
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("converted/batch_report.json"));
    assert_eq!(
        statuses(&report),
        [
            ("first".to_owned(), "succeeded".to_owned()),
            ("second".to_owned(), "failed".to_owned()),
            ("third".to_owned(), "not_started".to_owned()),
        ]
    );
    assert!(!dir.join("converted/third").exists());
    // The command line can flip the manifest's choice.
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .arg("--batch-continue-on-error")
        .arg("--overwrite"));
    assert_eq!(r.code, Some(3));
    let report = read_json(&dir.join("converted/batch_report.json"));
    assert_eq!(statuses(&report)[2].1, "succeeded");
}

/// With `continue_on_error: false`, a VM that cannot even be loaded aborts the batch before
/// anything is converted.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn invalid_vm_aborts_before_start_without_continue_on_error() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    vm(&dir, "ok", 0);
    dir.write("vms/broken.yaml", "manifest_version: \"1.0\"\ndisks: []\n");
    let batch = batch_file(
        &dir,
        json!({"continue_on_error": false}),
        vec![
            json!({"manifest": "vms/ok.yaml", "id": "ok"}),
            json!({"manifest": "vms/broken.yaml", "id": "broken"}),
            json!({"manifest": "vms/nowhere.yaml", "id": "nowhere"}),
        ],
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(!dir.join("converted").exists(), "nothing was written");
    insta::assert_snapshot!(redact(&r.stderr, &dir));
}

#[test]
fn invalid_batch_manifest_reports_every_problem() {
    let dir = TestDir::new();
    let path = dir.write(
        "batch.yaml",
        "batch_version: \"1.0\"\nbatch_metadata: {parallel_limit: 0, batch-id: x}\nvms:\n  - {manifest: a.yaml, id: web}\n  - {manifest: b.yaml, id: web}\n  - {id: no-manifest}\nshared_config: {disks: []}\nextra: true\n",
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&path));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir));
}

#[test]
fn no_enabled_vms_is_an_error() {
    let dir = TestDir::new();
    let path = dir.write(
        "batch.yaml",
        "batch_version: \"1.0\"\nvms:\n  - {manifest: a.yaml, enabled: false}\n",
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&path));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @r"
    error: invalid batch manifest [TMP]/batch.yaml (1 problem):
      - vms: every VM in the batch has enabled: false; there is nothing to convert
    ");
}

/// Two VMs that would write the same file are refused before anything starts.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn colliding_outputs_are_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    vm(&dir, "one", 0);
    let doc = json!({"batch_version": "1.0",
        "shared_config": {"pipeline": {"convert": {"enabled": true}}, "output": {"directory": "../shared-out"}},
        "vms": [{"manifest": "vms/one.yaml", "id": "one"}, {"manifest": "vms/one.yaml", "id": "two"}]});
    write_json(&dir.join("batch.json"), &doc);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(dir.join("batch.json")));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!(redact(&r.stderr, &dir));
    assert!(!dir.join("shared-out").exists());
}

/// `shared_config` (profile included) and per-VM `overrides` are merged: precedence profile <
/// profile_overrides < shared_config < manifest < overrides.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn shared_config_and_overrides_are_applied() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let (_, disk_a, drv_a) = vm(&dir, "a", 3);
    let (_, disk_b, drv_b) = vm(&dir, "b", 4);
    let doc = json!({"batch_version": "1.0",
    "shared_config": {
        "output_directory": "out",
        "profile": "archive",
        "profile_overrides": {"pipeline": {"fix": {"enabled": false}}}
    },
    "vms": [
        {"manifest": "vms/a.yaml", "id": "a"},
        {"manifest": "vms/b.yaml", "id": "b", "overrides": {"output": {"format": "raw"}}}
    ]});
    write_json(&dir.join("batch.json"), &doc);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(dir.join("batch.json")));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let a = read_json(&dir.join("out/a/report.json"));
    assert_eq!(a["input_manifest"]["profile"], "archive");
    assert_eq!(
        a["artifacts"][0]["compressed"], true,
        "the profile's compression applies"
    );
    assert!(identical(
        &disk_a,
        drv_a,
        &dir.join("out/a/a-d0.qcow2"),
        "qcow2"
    ));
    assert!(identical(
        &disk_b,
        drv_b,
        &dir.join("out/b/b-d0.raw"),
        "raw"
    ));
}

/// A VM whose output directory cannot be written fails alone; the others convert.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs root, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn unwritable_output_fails_only_that_vm() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let (_, disk, driver) = vm(&dir, "fine", 0);
    vm(&dir, "stuck", 1);
    std::fs::create_dir_all(dir.join("ro")).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M,ro", "tmpfs"])
        .arg(dir.join("ro"))
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("CI").is_err(),
            "could not mount a tmpfs under CI"
        );
        return;
    }
    let doc = json!({"batch_version": "1.0",
    "shared_config": {"output_directory": "out", "pipeline": {"convert": {"enabled": true}}},
    "vms": [
        {"manifest": "vms/fine.yaml", "id": "fine"},
        {"manifest": "vms/stuck.yaml", "id": "stuck",
         "overrides": {"output": {"directory": "../ro/stuck"}}}
    ]});
    write_json(&dir.join("batch.json"), &doc);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(dir.join("batch.json")));
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir.join("ro"))
        .status();
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    assert!(identical(
        &disk,
        driver,
        &dir.join("out/fine/fine-d0.qcow2"),
        "qcow2"
    ));
    let report = read_json(&dir.join("out/batch_report.json"));
    let err = report["vm_results"][1]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.contains("is not writable"), "{err}");
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

/// SIGINT mid-batch: no `.part` is left, the report marks the interrupted VMs, and
/// `--batch-resume` finishes the batch without converting the finished VM again.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn sigint_then_resume() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let (_, fast_disk, fast_driver) = vm(&dir, "fast", 3);
    vm(&dir, "after", 4);
    let slow = random_gib();
    dir.write(
        "vms/slow.yaml",
        &format!(
            "manifest_version: \"1.0\"\npipeline: {{convert: {{compress: true}}}}\ndisks:\n  - {{id: slow-d0, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(&slow),
            slow.display()
        ),
    );
    let batch = batch_file(
        &dir,
        json!({"batch_id": "resume-me", "parallel_limit": 1}),
        vec![
            json!({"manifest": "vms/fast.yaml", "id": "fast", "priority": 0}),
            json!({"manifest": "vms/slow.yaml", "id": "slow", "priority": 1}),
            json!({"manifest": "vms/after.yaml", "id": "after", "priority": 2}),
        ],
    );
    let mut child = hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let part = dir.join("converted/slow/slow-d0.qcow2.part");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !part.exists() {
        assert!(Instant::now() < deadline, "the slow VM never started");
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let converted = dir.join("converted");
    assert!(
        tree(&converted).iter().all(|f| !f.ends_with(".part")),
        "{:?}",
        tree(&converted)
    );
    let report = read_json(&converted.join("batch_report.json"));
    assert_eq!(
        statuses(&report),
        [
            ("fast".to_owned(), "succeeded".to_owned()),
            ("slow".to_owned(), "interrupted".to_owned()),
            ("after".to_owned(), "interrupted".to_owned()),
        ]
    );
    assert_eq!(report["batch"]["status"], "interrupted");
    let fast_output = converted.join("fast/fast-d0.qcow2");
    let fast_mtime = mtime(&fast_output);

    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch).args([
        "--batch-resume",
        "--progress",
        "none",
    ]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&converted.join("batch_report.json"));
    assert_eq!(
        statuses(&report),
        [
            ("fast".to_owned(), "succeeded".to_owned()),
            ("slow".to_owned(), "succeeded".to_owned()),
            ("after".to_owned(), "succeeded".to_owned()),
        ]
    );
    assert_eq!(report["vm_results"][0]["from_checkpoint"], true);
    assert_eq!(report["vm_results"][1]["from_checkpoint"], false);
    assert_eq!(report["batch"]["resumed"], true);
    assert_eq!(
        mtime(&fast_output),
        fast_mtime,
        "the finished VM was not converted again"
    );
    assert!(identical(&fast_disk, fast_driver, &fast_output, "qcow2"));
    assert!(identical(
        &slow,
        "raw",
        &converted.join("slow/slow-d0.qcow2"),
        "qcow2"
    ));
}

/// A batch dry run prints the order and every VM's plan, and writes nothing.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn batch_dry_run_writes_nothing() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    vm(&dir, "x", 0);
    vm(&dir, "y", 1);
    let batch = batch_file(
        &dir,
        json!({"batch_id": "plan-only"}),
        vec![
            json!({"manifest": "vms/x.yaml", "id": "x", "priority": 1}),
            json!({"manifest": "vms/y.yaml", "id": "y"}),
        ],
    );
    let before = tree(dir.path());
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(tree(dir.path()), before);
    insta::assert_snapshot!(redact(&r.stdout, &dir));
}

/// A finished batch is not silently run again over its own checkpoint.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn rerun_without_resume_or_overwrite_is_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    vm(&dir, "only", 0);
    let batch = batch_file(
        &dir,
        json!({"batch_id": "again"}),
        vec![json!({"manifest": "vms/only.yaml", "id": "only"})],
    );
    let first = run(hyper2kvm().arg("--batch-manifest").arg(&batch));
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let second = run(hyper2kvm().arg("--batch-manifest").arg(&batch));
    assert_eq!(second.code, Some(2));
    insta::assert_snapshot!(redact(&second.stderr, &dir));
    let resumed = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .arg("--batch-resume"));
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    let report = read_json(&dir.join("converted/batch_report.json"));
    assert_eq!(report["vm_results"][0]["from_checkpoint"], true);
}

/// A VM whose own settings say `options.dry_run: true` is planned, not converted.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vm_level_dry_run_is_honoured() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    vm(&dir, "real", 0);
    vm(&dir, "pretend", 1);
    let batch = batch_file(
        &dir,
        json!({}),
        vec![
            json!({"manifest": "vms/real.yaml", "id": "real"}),
            json!({"manifest": "vms/pretend.yaml", "id": "pretend",
                   "overrides": {"options": {"dry_run": true}}}),
        ],
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("converted/batch_report.json"));
    assert_eq!(
        statuses(&report)[1],
        ("pretend".to_owned(), "skipped".to_owned())
    );
    assert!(!dir.join("converted/pretend").exists());
    assert!(dir.join("converted/real/real-d0.qcow2").is_file());
}

#[test]
fn batch_flags_need_a_batch() {
    let r = run(hyper2kvm().args(["--manifest", "vm.yaml", "--batch-resume"]));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(r.stderr, @"error: --batch-resume applies to batch mode; it needs --batch-manifest FILE");
}
