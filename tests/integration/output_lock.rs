//! One run per output directory: a run locks each directory it writes; a second run stops at
//! once with exit 2, naming the directory and the holder's pid; a dry run takes no lock and
//! writes nothing; the leftovers of a run killed with SIGKILL are removed by the next one, which
//! says so, and never end up among the outputs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::orphans::{assert_nothing_left, path_with, slow_qemu_img};
use crate::support::*;

const LOCK_FILE: &str = ".hyper2kvm.lock";

/// A 32 MiB raw disk of random bytes (slow to convert at 1 MiB/s) and a manifest converting it.
fn vm(dir: &TestDir) -> PathBuf {
    let src = dir.join("disk.raw");
    run_ok(
        Command::new("head")
            .args(["-c", "32M", "/dev/urandom"])
            .stdout(std::fs::File::create(&src).expect("create")),
    );
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["pipeline"]["inspect"]["enabled"] = serde_json::json!(false);
    m["pipeline"]["validate"]["enabled"] = serde_json::json!(false);
    let path = dir.join("vm.json");
    write_json(&path, &m);
    path
}

/// A run converting through a qemu-img slowed to 1 MiB/s, in the background, marked with `mark`.
fn start_slow(dir: &TestDir, manifest: &Path, mark: &str, extra: &[&str]) -> Child {
    let bin = slow_qemu_img(dir, "1M");
    hyper2kvm()
        .arg("--manifest")
        .arg(manifest)
        .args(["--progress", "none"])
        .args(extra)
        .env("PATH", path_with(&bin))
        .env("HYPER2KVM_TEST_RUN_MARK", mark)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

fn wait_for(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "hyper2kvm exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigkill(child: &mut Child) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    child.wait().expect("wait");
}

fn quick(cmd: &mut Command) -> (Run, Duration) {
    let t = Instant::now();
    let r = run(cmd);
    (r, t.elapsed())
}

/// The whole life of a lock: held with the pid while converting, a second run refused at once
/// (exit 2, directory and pid named, the first run's `.part` untouched), a dry run let through
/// without touching anything, then SIGKILL: the next run removes the `.part` left behind, says
/// so in its report and log, and leaves only outputs.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn a_second_run_is_refused_and_a_killed_runs_leftovers_are_cleaned() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let manifest = vm(&dir);
    let out = dir.join("output");

    // A dry run takes no lock and creates nothing.
    let (r, _) = quick(
        hyper2kvm()
            .arg("--manifest")
            .arg(&manifest)
            .arg("--dry-run"),
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(!out.exists(), "a dry run created {}", out.display());

    let mark = format!("lock-{}", dir.path().display());
    let mut first = start_slow(&dir, &manifest, &mark, &[]);
    let part = out.join("d0.qcow2.part");
    wait_for(&part, &mut first);
    let lock = std::fs::read_to_string(out.join(LOCK_FILE)).expect("the lock file");
    assert_eq!(
        lock.lines().next(),
        Some(first.id().to_string().as_str()),
        "{lock}"
    );

    let (r, took) = quick(
        hyper2kvm()
            .arg("--manifest")
            .arg(&manifest)
            .args(["--progress", "none"]),
    );
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let real_out = std::fs::canonicalize(&out).expect("canonical");
    let pid = first.id().to_string();
    let shown = r
        .stderr
        .replace(&real_out.display().to_string(), "[OUT]")
        .replace(&pid, "[PID]");
    insta::assert_snapshot!("second_run_is_refused", shown);
    assert!(
        part.exists(),
        "the second run touched the first run's .part"
    );

    // A dry run is not stopped by the lock and leaves it alone.
    let (r, _) = quick(
        hyper2kvm()
            .arg("--manifest")
            .arg(&manifest)
            .arg("--dry-run"),
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(out.join(LOCK_FILE)).expect("lock"),
        lock
    );

    sigkill(&mut first);
    assert_nothing_left(&mark);
    assert!(part.exists(), "SIGKILL leaves the .part behind");

    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let said = format!(
        "removed {}, left by an earlier run (pid {pid}) that did not finish",
        real_out.join("d0.qcow2.part").display()
    );
    assert!(r.stderr.contains(&said), "{}", r.stderr);
    let report = read_json(&out.join("report.json"));
    assert!(report["warnings"].to_string().contains(&said), "{report:#}");
    let files = tree(&out);
    assert!(
        files
            .iter()
            .all(|f| !f.ends_with(".part") && f != LOCK_FILE),
        "{files:?}"
    );
    assert!(files.contains(&"d0.qcow2".to_owned()), "{files:?}");
}

/// A batch locks its VMs' existing output directories before its first VM starts: with one of
/// them held by another run, the batch stops with exit 2, naming it and the holder, and writes
/// nothing.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn a_batch_is_refused_when_a_vm_directory_is_locked() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let manifest = vm(&dir);
    let held = dir.join("converted/two");
    let mark = format!("lock-{}", dir.path().display());
    let mut first = start_slow(
        &dir,
        &manifest,
        &mark,
        &["--output-dir", &held.display().to_string()],
    );
    wait_for(&held.join("d0.qcow2.part"), &mut first);

    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &serde_json::json!({
            "batch_version": "1.0",
            "batch_metadata": {"batch_id": "locked"},
            "shared_config": {"output_directory": "converted"},
            "vms": [
                {"manifest": "vm.json", "id": "one"},
                {"manifest": "vm.json", "id": "two"}
            ],
        }),
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none"]));
    sigkill(&mut first);
    assert_nothing_left(&mark);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    let real = std::fs::canonicalize(&held).expect("canonical");
    assert!(
        r.stderr.contains(&format!(
            "output directory {} is in use by another hyper2kvm run (pid {}",
            real.display(),
            first.id()
        )),
        "{}",
        r.stderr
    );
    assert!(!dir.join("converted/one").exists());
    assert!(!dir.join("converted/batch_report.json").exists());
}
