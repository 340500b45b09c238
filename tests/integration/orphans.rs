//! No orphans: whatever kills hyper2kvm, SIGKILL included, every process it started dies with it
//! (qemu-img, hooks and their background children, guestfish and its appliance, the boot-test
//! qemu), and a second SIGINT during cleanup leaves nothing running either.
//!
//! Each run gets a unique environment variable, which every process it starts inherits; the
//! tests scan `/proc` for it after the kill.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

/// The variable that marks a run's processes.
const MARK: &str = "HYPER2KVM_TEST_RUN_MARK";
/// How long the processes of a killed run may take to go (the reaper's grace is 2 s).
const GONE_WITHIN: Duration = Duration::from_secs(20);

fn mark_of(dir: &TestDir) -> String {
    format!("orphans-{}", dir.path().display())
}

/// Live processes (zombies run nothing) whose environment holds `MARK=mark`, with their command
/// lines.
pub fn marked(mark: &str) -> Vec<(i32, String)> {
    let needle = format!("{MARK}={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned))
            })
            .is_none_or(|state| state == "Z" || state == "X");
        if zombie {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        found.push((pid, cmdline));
    }
    found
}

/// Waits until a process of the run matches `what`; fails if hyper2kvm exits first.
fn wait_for_process(mark: &str, child: &mut Child, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if marked(mark).iter().any(|(_, c)| c.contains(what)) {
            return;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("hyper2kvm exited ({status}) before `{what}` started");
        }
        assert!(Instant::now() < deadline, "`{what}` never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that nothing of the run is left within [`GONE_WITHIN`]; kills what is, so a failing
/// test leaves no orphans behind either.
pub fn assert_nothing_left(mark: &str) {
    let deadline = Instant::now() + GONE_WITHIN;
    let mut left = marked(mark);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = marked(mark);
    }
    for (pid, _) in &left {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let shown: Vec<String> = left.iter().map(|(p, c)| format!("{p}: {c}")).collect();
    assert!(
        left.is_empty(),
        "processes of the killed run are still running after {} s:\n  {}",
        GONE_WITHIN.as_secs(),
        shown.join("\n  ")
    );
}

fn executable(dir: &TestDir, rel: &str, body: &str) -> PathBuf {
    let path = dir.write(rel, body);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A directory to put first on PATH, holding a `qemu-img` whose conversions are slowed to
/// `rate` bytes a second and leave a background `sleep` in their process group.
pub fn slow_qemu_img(dir: &TestDir, rate: &str) -> PathBuf {
    let real = which::which("qemu-img").expect("qemu-img");
    executable(
        dir,
        "slow-bin/qemu-img",
        &format!(
            "#!/bin/sh\n\
             if [ \"$1\" = convert ]; then\n\
               shift\n\
               sleep 600 &\n\
               exec '{real}' convert -r {rate} \"$@\"\n\
             fi\n\
             exec '{real}' \"$@\"\n",
            real = real.display()
        ),
    );
    dir.join("slow-bin")
}

/// PATH with `first` in front.
pub fn path_with(first: &Path) -> String {
    format!(
        "{}:{}",
        first.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// hyper2kvm on `manifest`, marked, quiet, in the background.
fn start(manifest: &Path, mark: &str, path: Option<&str>) -> Child {
    let mut cmd = hyper2kvm();
    cmd.arg("--manifest")
        .arg(manifest)
        .args(["--progress", "none"])
        .env(MARK, mark)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.spawn().expect("spawn hyper2kvm")
}

fn sigkill(child: &mut Child) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

/// A small raw disk and a manifest with `pipeline` (YAML) and `hooks` (YAML), in `dir`.
fn small_vm(dir: &TestDir, pipeline: &str, hooks: &str) -> PathBuf {
    std::fs::write(dir.join("disk.raw"), vec![0u8; 1 << 20]).expect("disk");
    dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: local, vm_name: orphan}}\n\
             disks:\n  - {{id: d0, source_format: raw, bytes: {}, local_path: disk.raw}}\n\
             pipeline: {pipeline}\nhooks: {hooks}\n",
            1 << 20
        ),
    )
}

/// SIGKILL during a conversion: qemu-img and the child its wrapper left in its group go too.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn sigkill_during_convert_leaves_no_process() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let mark = mark_of(&dir);
    let src = random_gib();
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["pipeline"]["inspect"]["enabled"] = serde_json::json!(false);
    m["pipeline"]["validate"]["enabled"] = serde_json::json!(false);
    write_json(&dir.join("vm.json"), &m);
    let bin = slow_qemu_img(&dir, "4M");
    let mut child = start(&dir.join("vm.json"), &mark, Some(&path_with(&bin)));
    wait_for_process(&mark, &mut child, "convert -r 4M", Duration::from_secs(60));
    wait_for_process(&mark, &mut child, "sleep 600", Duration::from_secs(10));
    sigkill(&mut child);
    assert_nothing_left(&mark);
}

/// SIGKILL while a hook runs: the hook, the `sleep`s it started in the background and the one it
/// waits for all go.
#[test]
fn sigkill_during_a_hook_leaves_no_process() {
    let dir = TestDir::new();
    let mark = mark_of(&dir);
    let started = dir.join("hook-started");
    executable(
        &dir,
        "slow-hook.sh",
        &format!(
            "#!/bin/sh\nsleep 600 &\nsleep 601 &\necho $$ > '{}'\nsleep 602\n",
            started.display()
        ),
    );
    let manifest = small_vm(
        &dir,
        "{convert: {enabled: false}}",
        "{pre_extraction: [{type: script, path: slow-hook.sh, timeout: 900}]}",
    );
    let mut child = start(&manifest, &mark, None);
    wait_for_process(&mark, &mut child, "sleep 602", Duration::from_secs(60));
    assert!(started.exists());
    sigkill(&mut child);
    assert_nothing_left(&mark);
}

/// SIGKILL while a hook's background child runs in a session of its own (`setsid`, as a daemon
/// would): out of every group we registered, it still goes, found by the run's token in its
/// environment.
#[test]
#[cfg_attr(missing_tool = "setsid", ignore = "needs setsid (util-linux)")]
fn sigkill_ends_a_hook_child_that_left_its_group() {
    if !require_tool("setsid") {
        return;
    }
    let dir = TestDir::new();
    let mark = mark_of(&dir);
    executable(
        &dir,
        "daemonizing-hook.sh",
        "#!/bin/sh\nsetsid sleep 603 &\nsleep 602\n",
    );
    let manifest = small_vm(
        &dir,
        "{convert: {enabled: false}}",
        "{pre_extraction: [{type: script, path: daemonizing-hook.sh, timeout: 900}]}",
    );
    let mut child = start(&manifest, &mark, None);
    wait_for_process(&mark, &mut child, "sleep 603", Duration::from_secs(60));
    wait_for_process(&mark, &mut child, "sleep 602", Duration::from_secs(10));
    sigkill(&mut child);
    assert_nothing_left(&mark);
}

/// A second SIGINT while the first one's cleanup waits for a hook that ignores SIGTERM: hyper2kvm
/// exits at once, and the hook and its child still do not outlive it.
#[test]
fn a_second_sigint_during_cleanup_leaves_no_process() {
    let dir = TestDir::new();
    let mark = mark_of(&dir);
    executable(
        &dir,
        "stubborn.sh",
        "#!/bin/sh\ntrap '' TERM\nsleep 600 &\nwhile true; do sleep 1; done\n",
    );
    let manifest = small_vm(
        &dir,
        "{convert: {enabled: false}}",
        "{pre_extraction: [{type: script, path: stubborn.sh, timeout: 900}]}",
    );
    let mut child = start(&manifest, &mark, None);
    wait_for_process(&mark, &mut child, "sleep 600", Duration::from_secs(60));
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGINT).expect("first SIGINT");
    // Inside the 2 s between the hook's SIGTERM (ignored) and its SIGKILL.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "hyper2kvm ended before the second signal"
    );
    let second = Instant::now();
    kill(pid, Signal::SIGINT).expect("second SIGINT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert!(
        second.elapsed() < Duration::from_millis(1500),
        "the second signal did not end the run at once"
    );
    assert_nothing_left(&mark);
}

/// SIGKILL while libguestfs launches its appliance for the fix stage: guestfish, its appliance
/// qemu and the helpers go.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs guestfish and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn sigkill_during_an_appliance_launch_leaves_no_process() {
    if !require_tool("guestfish") || !require_tool("qemu-system-x86_64") || skip_slow() {
        return;
    }
    let dir = TestDir::new();
    let mark = mark_of(&dir);
    let disk = dir.join("guest.raw");
    crate::guests::phony_guest(crate::guests::Guest::Debian, &disk);
    let manifest = dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: launch}}\n\
             pipeline:\n  inspect: {{enabled: false}}\n  fix: {{enabled: true}}\n  convert: {{enabled: true}}\n\
             disks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(&disk),
            disk.display()
        ),
    );
    let mut child = start(&manifest, &mark, None);
    // The appliance's qemu is the one given a kernel and an initrd (the KVM probe boots a kernel
    // without one).
    wait_for_process(&mark, &mut child, " -initrd ", Duration::from_secs(300));
    assert!(
        marked(&mark).iter().any(|(_, c)| c.contains("guestfish")),
        "{:?}",
        marked(&mark)
    );
    sigkill(&mut child);
    assert_nothing_left(&mark);
}

/// SIGKILL during the boot test: its qemu (held paused by a wrapper, so the boot cannot end
/// first) goes too.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-system-x86_64"),
    ignore = "needs qemu-img and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn sigkill_during_the_boot_test_leaves_no_process() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let dir = TestDir::new();
    let mark = mark_of(&dir);
    let real = which::which("qemu-system-x86_64").expect("qemu-system-x86_64");
    // Only the boot (the one run with a serial console file) is paused; probes pass through.
    executable(
        &dir,
        "paused-bin/qemu-system-x86_64",
        &format!(
            "#!/bin/sh\ncase \" $* \" in\n*chardev*) exec '{real}' \"$@\" -S ;;\nesac\nexec '{real}' \"$@\"\n",
            real = real.display()
        ),
    );
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(dir.join("blank.raw"))
            .arg("16M"),
    );
    let manifest = dir.write(
        "blank.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{vm_name: blank}}\nvm: {{firmware: bios}}\n\
             pipeline:\n  convert: {{enabled: true}}\n  validate:\n    enabled: true\n    \
             boot_test: {{enabled: true, timeout: 600}}\n\
             disks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: blank.raw}}\n",
            16 << 20
        ),
    );
    let mut child = start(&manifest, &mark, Some(&path_with(&dir.join("paused-bin"))));
    wait_for_process(&mark, &mut child, "chardev", Duration::from_secs(120));
    sigkill(&mut child);
    assert_nothing_left(&mark);
}
