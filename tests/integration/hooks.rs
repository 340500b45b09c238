//! Hooks through the real binary: real scripts, a real python3, a real HTTP listener on
//! 127.0.0.1. Stage order, data-only templating, timeouts that kill whole process groups,
//! cancellation, retries, redaction, and every bad hook input with its message.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::guests::{Guest, phony_guest};
use crate::http_listener::Listener;
use crate::support::*;

const STAGES: [&str; 7] = [
    "pre_extraction",
    "post_extraction",
    "pre_fix",
    "post_fix",
    "pre_convert",
    "post_convert",
    "post_validate",
];

/// A VM directory with a 1 MiB raw disk.
pub(crate) fn vm_dir() -> TestDir {
    let dir = TestDir::new();
    std::fs::write(dir.join("disk.raw"), vec![0u8; 1 << 20]).expect("disk");
    dir
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub(crate) fn script(dir: &TestDir, name: &str, body: &str) -> PathBuf {
    let p = dir.write(name, body);
    chmod(&p, 0o755);
    p
}

/// Writes `vm.json` with one raw disk, `pipeline` and `hooks`.
fn manifest(dir: &TestDir, vm_name: &str, pipeline: Value, hooks: Value) -> PathBuf {
    let m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "local", "vm_name": vm_name},
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1 << 20, "local_path": "disk.raw"}],
        "pipeline": pipeline,
        "hooks": hooks,
    });
    let p = dir.join("vm.json");
    write_json(&p, &m);
    p
}

pub(crate) fn hyper2kvm_on(manifest: &Path) -> std::process::Command {
    let mut cmd = hyper2kvm();
    cmd.arg("--manifest")
        .arg(manifest)
        .args(["--progress", "none"]);
    cmd
}

fn report(dir: &TestDir) -> Value {
    read_json(&dir.join("output/report.json"))
}

pub(crate) fn show(r: &Run) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// Whether a process is gone (a zombie waiting for a reaper counts as gone: it runs nothing).
pub(crate) fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_for_file(path: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists()
        || std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "hyper2kvm exited before the hook started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

// ---------------------------------------------------------------------------------------------
// Order and templating.

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn every_hook_stage_fires_once_in_pipeline_order() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    let log = dir.join("stages.log");
    script(
        &dir,
        "log.sh",
        &format!(
            "#!/bin/sh\nif [ -e \"$2\" ]; then out=exists; else out=absent; fi\n\
             printf '%s %s %s\\n' \"$1\" \"$out\" \"$3\" >> '{}'\n",
            log.display()
        ),
    );
    let hook = json!([{"type": "script", "path": "log.sh",
                       "args": ["{{ stage }}", "{{ output_path }}", "{{ vm_id }}"]}]);
    let hooks: serde_json::Map<String, Value> = STAGES
        .iter()
        .map(|s| ((*s).to_owned(), hook.clone()))
        .collect();
    let m = manifest(
        &dir,
        "web01",
        json!({"inspect": {"enabled": true}, "convert": {"enabled": true},
               "validate": {"enabled": true}}),
        Value::Object(hooks),
    );
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    // Fix is off here, so pre_fix/post_fix do not fire and a warning says so (with fix on, see
    // fix_hooks_fire_once_around_the_real_fix_stage).
    assert_eq!(
        lines,
        [
            "pre_extraction absent web01",
            "post_extraction absent web01",
            "pre_convert absent web01",
            "post_convert exists web01",
            "post_validate exists web01",
        ]
    );
    let rep = report(&dir);
    let fired: Vec<&str> = rep["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| h["stage"].as_str().expect("stage"))
        .collect();
    assert_eq!(
        fired,
        [
            "pre_extraction",
            "post_extraction",
            "pre_convert",
            "post_convert",
            "post_validate"
        ]
    );
    for h in rep["hooks"].as_array().expect("hooks") {
        assert_eq!(h["success"], true);
        assert_eq!(h["attempts"], 1);
        assert_eq!(h["type"], "script");
        assert_eq!(h["exit_status"], json!({"kind": "exited", "value": 0}));
        assert_eq!(h["target"], dir.join("log.sh").display().to_string());
    }
    assert_eq!(rep["summary"]["total_hooks"], 5);
    assert_eq!(rep["summary"]["failed_hooks"], 0);
    let warnings = rep["warnings"].to_string();
    assert!(
        warnings.contains("hooks.pre_fix: 1 hook will not run because pipeline.fix is not enabled"),
        "{warnings}"
    );
}

/// With guest repair on, pre_fix and post_fix fire too: all seven stages, once each, in
/// pipeline order, around a real fix stage on a phony Debian guest.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn fix_hooks_fire_once_around_the_real_fix_stage() {
    if !require_tool("qemu-img") || !require_tool("guestfish") {
        return;
    }
    let dir = TestDir::new();
    phony_guest(Guest::Debian, &dir.join("disk.raw"));
    let log = dir.join("stages.log");
    script(
        &dir,
        "log.sh",
        &format!("#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n", log.display()),
    );
    // After the repair, the work directory and its overlays (guest data) are private.
    let modes = dir.join("modes.log");
    script(
        &dir,
        "modes.sh",
        &format!(
            "#!/bin/sh\nstat -c '%a %n' '{out}'/.hyper2kvm-work-* '{out}'/.hyper2kvm-work-*/* \
             > '{modes}'\n",
            out = dir.join("output").display(),
            modes = modes.display()
        ),
    );
    let hook = json!([{"type": "script", "path": "log.sh", "args": ["{{ stage }}"]}]);
    let mut hooks: serde_json::Map<String, Value> = STAGES
        .iter()
        .map(|s| ((*s).to_owned(), hook.clone()))
        .collect();
    hooks["post_fix"]
        .as_array_mut()
        .expect("post_fix")
        .push(json!({"type": "script", "path": "modes.sh"}));
    let m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_name": "guest"},
        "disks": [{"id": "d0", "source_format": "raw",
                   "bytes": file_size(&dir.join("disk.raw")), "local_path": "disk.raw"}],
        "pipeline": {"inspect": {"enabled": true},
                     "fix": {"enabled": true, "regen_initramfs": false},
                     "convert": {"enabled": true}, "validate": {"enabled": true}},
        "hooks": hooks,
    });
    let path = dir.join("vm.json");
    write_json(&path, &m);
    let r = run(&mut hyper2kvm_on(&path));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, STAGES);
    let modes = std::fs::read_to_string(&modes).expect("modes.log");
    let overlays: Vec<&str> = modes.lines().filter(|l| l.ends_with(".qcow2")).collect();
    assert_eq!(overlays.len(), 1, "{modes}");
    for line in modes.lines() {
        let expected = if line.ends_with(".qcow2") {
            "600 "
        } else {
            "700 "
        };
        assert!(line.starts_with(expected), "not private: {line}\n{modes}");
    }
    let rep = report(&dir);
    // Each hook ran inside the stage order: the report lists hooks and stages in run order.
    let mut fired: Vec<&str> = rep["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| h["stage"].as_str().expect("stage"))
        .collect();
    assert_eq!(
        fired.len(),
        STAGES.len() + 1,
        "log.sh at each stage, modes.sh once"
    );
    fired.dedup();
    assert_eq!(fired, STAGES);
    let fix = rep["pipeline"]["stages"]["fix"].clone();
    assert_eq!(fix["success"], true, "{fix:#}");
    assert!(
        rep["warnings"].to_string().find("hooks.").is_none(),
        "no hook stage is skipped: {}",
        rep["warnings"]
    );
}

/// A VM name an attacker might choose: command substitution, separators, quotes, newlines.
const HOSTILE: &str = "evil $(touch pwned-subst) `touch pwned-tick`; touch pwned-semi && \
                       echo 'single' \"double\"\nsecond line\t| tee pwned-pipe {{ stage }} ${HOME}";

fn assert_nothing_ran(dir: &TestDir) {
    let pwned: Vec<String> = tree(dir.path())
        .into_iter()
        .filter(|f| f.contains("pwned"))
        .collect();
    assert!(pwned.is_empty(), "something was executed: {pwned:?}");
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn hostile_vm_name_reaches_a_script_verbatim_as_one_argument() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    script(
        &dir,
        "record.sh",
        "#!/bin/sh\nprintf '%s' \"$#\" > argc\nprintf '%s' \"$1\" > arg1\nprintf '%s' \"$H2K_NAME\" > env\n",
    );
    let m = manifest(
        &dir,
        HOSTILE,
        json!({}),
        json!({"pre_extraction": [{"type": "script", "path": "record.sh", "args": ["{{ vm_name }}"],
               "env": {"H2K_NAME": "{{ vm_name }}"}, "working_directory": "."}]}),
    );
    let r = run(hyper2kvm_on(&m).current_dir(dir.path()));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("output");
    assert_eq!(read("argc"), "1");
    assert_eq!(read("arg1"), HOSTILE);
    assert_eq!(read("env"), HOSTILE);
    assert_nothing_ran(&dir);
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "python3"),
    ignore = "needs qemu-img and python3 (install: scripts/install-deps.sh core)"
)]
fn hostile_vm_name_reaches_python_and_http_as_data() {
    if !require_tool("qemu-img") || !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    let server = Listener::start(&[200]);
    dir.write(
        "record.py",
        "def save(name, out):\n    with open(out, 'w') as f:\n        f.write(name)\n",
    );
    let m = manifest(
        &dir,
        HOSTILE,
        json!({}),
        json!({
            "pre_extraction": [{"type": "python", "module": "record", "function": "save",
                                "args": {"name": "{{ vm_name }}", "out": dir.join("py-name").display().to_string()}}],
            "post_extraction": [{"type": "http", "url": format!("{}/vm/{{{{ vm_name }}}}", server.base),
                                 "body": {"vm": "{{ vm_name }}"}}],
        }),
    );
    let r = run(hyper2kvm_on(&m).current_dir(dir.path()));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    assert_eq!(
        std::fs::read_to_string(dir.join("py-name")).expect("py"),
        HOSTILE
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json(), json!({"vm": HOSTILE}));
    // In the URL the name is one percent-encoded path segment: no extra segment, no query.
    assert!(
        reqs[0].target.starts_with("/vm/evil%20%24%28touch"),
        "{}",
        reqs[0].target
    );
    assert!(
        !reqs[0].target.contains(['?', '#', ' ']),
        "{}",
        reqs[0].target
    );
    assert_eq!(reqs[0].target.matches('/').count(), 2, "{}", reqs[0].target);
    assert_nothing_ran(&dir);
}

// ---------------------------------------------------------------------------------------------
// Timeouts and cancellation.

/// A hook that writes its pid and its background grandchild's pid, then sleeps 600 s.
fn hanging_script(dir: &TestDir) {
    script(
        dir,
        "hang.sh",
        &format!(
            "#!/bin/sh\nsleep 600 &\necho $! > '{}'\necho $$ > '{}'\nsleep 600\n",
            dir.join("grandchild.pid").display(),
            dir.join("child.pid").display()
        ),
    );
}

fn timed_out_hook(continue_on_error: bool) {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    hanging_script(&dir);
    let m = manifest(
        &dir,
        "vm1",
        json!({}),
        json!({"pre_extraction": [{"type": "script", "path": "hang.sh", "timeout": 1,
                                   "continue_on_error": continue_on_error}]}),
    );
    let mut child = hyper2kvm_on(&m)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_file(&dir.join("child.pid"), &mut child);
    wait_for_file(&dir.join("grandchild.pid"), &mut child);
    let started = Instant::now();
    let pids = [
        read_pid(&dir.join("child.pid")),
        read_pid(&dir.join("grandchild.pid")),
    ];
    while !pids.iter().all(|p| gone(*p)) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "hook or grandchild still alive 3 s after starting with timeout 1: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    let rep = report(&dir);
    let hook = &rep["hooks"][0];
    assert_eq!(hook["success"], false);
    assert_eq!(hook["exit_status"]["kind"], "timed_out");
    assert_eq!(
        hook["error"],
        "timed out after 1s; its process group was killed"
    );
    if continue_on_error {
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(rep["status"], "succeeded");
        assert!(
            rep["warnings"]
                .to_string()
                .contains("hook pre_extraction[0] (script ")
                && rep["warnings"]
                    .to_string()
                    .contains("continuing because continue_on_error is true"),
            "{}",
            rep["warnings"]
        );
        assert_eq!(rep["pipeline"]["stages"]["load_manifest"]["success"], true);
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(rep["status"], "failed");
        assert_eq!(rep["errors"][0]["stage"], "pre_extraction");
        assert!(
            rep["pipeline"]["stages"]
                .as_object()
                .expect("stages")
                .is_empty(),
            "the VM stops at the failing hook"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
    }
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn hook_timeout_kills_hook_and_grandchild_and_fails_the_vm() {
    timed_out_hook(false);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn hook_timeout_with_continue_on_error_is_a_warning() {
    timed_out_hook(true);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn a_hook_that_ignores_sigterm_is_killed_after_the_grace() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    script(
        &dir,
        "stubborn.sh",
        &format!(
            "#!/bin/sh\ntrap '' TERM\nsleep 600 &\necho $! > '{}'\necho $$ > '{}'\nsleep 600\n",
            dir.join("grandchild.pid").display(),
            dir.join("child.pid").display()
        ),
    );
    let m = manifest(
        &dir,
        "vm1",
        json!({}),
        json!({"pre_extraction": [{"type": "script", "path": "stubborn.sh", "timeout": 1}]}),
    );
    let started = Instant::now();
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    // 1 s timeout + 2 s between SIGTERM and SIGKILL, plus start-up.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for f in ["child.pid", "grandchild.pid"] {
        let pid = read_pid(&dir.join(f));
        assert!(gone(pid), "{f} {pid} survived SIGKILL");
    }
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn sigint_stops_a_running_hook() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    hanging_script(&dir);
    let m = manifest(
        &dir,
        "vm1",
        json!({}),
        json!({"post_extraction": [{"type": "script", "path": "hang.sh", "continue_on_error": true}]}),
    );
    let mut child = hyper2kvm_on(&m)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_file(&dir.join("child.pid"), &mut child);
    wait_for_file(&dir.join("grandchild.pid"), &mut child);
    let pids = [
        read_pid(&dir.join("child.pid")),
        read_pid(&dir.join("grandchild.pid")),
    ];
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Interrupted, even though the hook may continue on its own errors.
    assert_eq!(out.status.code(), Some(130));
    for p in pids {
        assert!(gone(p), "{p} survived the interrupt");
    }
    let rep = report(&dir);
    assert_eq!(rep["status"], "interrupted");
    assert_eq!(rep["hooks"][0]["exit_status"]["kind"], "cancelled");
    assert_eq!(rep["errors"][0]["stage"], "post_extraction");
}

// ---------------------------------------------------------------------------------------------
// Python hooks.

const SITE_HOOKS: &str = r#"
import sys, time

def note(vm, stage, out):
    with open(out, "a") as f:
        f.write("%s:%s\n" % (stage, vm))
    print("printed by the hook")
    return {"success": True, "output": "cmdb updated"}

def falsy(**kwargs):
    return False

def refuses(**kwargs):
    return {"success": False, "output": "cmdb said no"}

def boom(**kwargs):
    raise ValueError("disk too small")

def slow(**kwargs):
    time.sleep(600)

def which():
    return "manifest dir"
"#;

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "python3"),
    ignore = "needs qemu-img and python3 (install: scripts/install-deps.sh core)"
)]
fn python_hook_result_and_continue_on_error() {
    if !require_tool("qemu-img") || !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write("site_hooks.py", SITE_HOOKS);
    let out = dir.join("noted").display().to_string();
    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({
            "pre_extraction": [{"type": "python", "module": "site_hooks", "function": "note",
                                "args": {"vm": "{{ vm_name }}", "stage": "{{ stage }}", "out": out}}],
            "post_extraction": [
                {"type": "python", "module": "site_hooks", "function": "falsy", "continue_on_error": true},
                {"type": "python", "module": "site_hooks", "function": "refuses", "continue_on_error": true},
            ],
        }),
    );
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    assert_eq!(
        std::fs::read_to_string(dir.join("noted")).expect("noted"),
        "pre_extraction:web01\n"
    );
    let rep = report(&dir);
    let hooks = rep["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 3);
    assert_eq!(hooks[0]["success"], true);
    assert_eq!(hooks[0]["output"], "cmdb updated");
    assert_eq!(hooks[0]["target"], "site_hooks.note");
    assert!(
        hooks[0]["stderr_tail"]
            .as_str()
            .expect("stderr")
            .contains("printed by the hook")
    );
    assert_eq!(hooks[1]["success"], false);
    assert_eq!(hooks[1]["error"], "the function reported failure: False");
    assert_eq!(
        hooks[2]["error"],
        "the function reported failure: cmdb said no"
    );
    let warnings: Vec<&str> = rep["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["stage"] == "post_extraction")
        .map(|w| w["message"].as_str().expect("message"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "python3"),
    ignore = "needs qemu-img and python3 (install: scripts/install-deps.sh core)"
)]
fn python_exception_fails_the_vm_with_its_traceback() {
    if !require_tool("qemu-img") || !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write("site_hooks.py", SITE_HOOKS);
    let m = manifest(
        &dir,
        "web01",
        json!({"inspect": {"enabled": true}}),
        json!({"post_extraction": [{"type": "python", "module": "site_hooks", "function": "boom"}]}),
    );
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    let rep = report(&dir);
    let error = rep["hooks"][0]["error"].as_str().expect("error");
    assert!(
        error.starts_with("Traceback (most recent call last):"),
        "{error}"
    );
    assert!(error.contains("in boom"), "{error}");
    assert!(
        error.trim_end().ends_with("ValueError: disk too small"),
        "{error}"
    );
    assert_eq!(rep["errors"][0]["stage"], "post_extraction");
    assert!(
        rep["pipeline"]["stages"].get("inspect").is_none(),
        "inspect never started"
    );
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "python3"),
    ignore = "needs qemu-img and python3 (install: scripts/install-deps.sh core)"
)]
fn python_hook_timeout_kills_python() {
    if !require_tool("qemu-img") || !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write("site_hooks.py", SITE_HOOKS);
    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({"pre_extraction": [{"type": "python", "module": "site_hooks", "function": "slow", "timeout": 1}]}),
    );
    let started = Instant::now();
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert!(started.elapsed() < Duration::from_secs(10));
    let rep = report(&dir);
    assert_eq!(rep["hooks"][0]["exit_status"]["kind"], "timed_out");
    assert_eq!(
        rep["hooks"][0]["error"],
        "timed out after 1s; python3 was killed"
    );
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "python3"),
    ignore = "needs qemu-img and python3 (install: scripts/install-deps.sh core)"
)]
fn python_modules_come_from_the_manifest_dir_then_pythonpath_never_the_cwd() {
    if !require_tool("qemu-img") || !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write("site_hooks.py", SITE_HOOKS);
    dir.write(
        "lib/site_hooks.py",
        "def which():\n    return 'pythonpath'\n",
    );
    dir.write(
        "lib/only_on_path.py",
        "def which():\n    return 'pythonpath only'\n",
    );
    dir.write("cwd/from_cwd.py", "def which():\n    return 'cwd'\n");
    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({"pre_extraction": [
            {"type": "python", "module": "site_hooks", "function": "which"},
            {"type": "python", "module": "only_on_path", "function": "which"},
        ]}),
    );
    let r = run(hyper2kvm_on(&m)
        .env("PYTHONPATH", dir.join("lib"))
        .current_dir(dir.join("cwd")));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let rep = report(&dir);
    assert_eq!(rep["hooks"][0]["output"], "manifest dir");
    assert_eq!(rep["hooks"][1]["output"], "pythonpath only");

    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({"pre_extraction": [{"type": "python", "module": "from_cwd", "function": "which"}]}),
    );
    let r = run(hyper2kvm_on(&m).current_dir(dir.join("cwd")));
    assert_eq!(r.code, Some(2), "{}", show(&r));
    assert!(
        r.stderr.contains("python module 'from_cwd' not found"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP hooks.

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn http_hook_sends_method_path_headers_and_json_body() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    let server = Listener::start(&[200]);
    let secret = "s3cret-token-8c1f";
    let m = manifest(
        &dir,
        "web 01",
        json!({}),
        json!({"post_extraction": [{
            "type": "http",
            "url": format!("{}/hooks/{{{{ vm_id }}}}?src=h2k", server.base),
            "method": "put",
            "headers": {"Authorization": "Bearer ${H2K_TEST_TOKEN}", "X-Stage": "{{ stage }}"},
            "body": {"vm": "{{ vm_name }}", "stage": "{{ stage }}", "disks": 1,
                     "nested": {"format": "{{ output_format }}"}},
            "timeout": 10,
        }]}),
    );
    let log = dir.join("h2k.log");
    let r = run(hyper2kvm_on(&m)
        .env("H2K_TEST_TOKEN", secret)
        .arg("--log-file")
        .arg(&log)
        .arg("-vv"));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "PUT");
    assert_eq!(req.target, "/hooks/web%2001?src=h2k");
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {secret}"))
    );
    assert_eq!(req.header("x-stage"), Some("post_extraction"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({"vm": "web 01", "stage": "post_extraction", "disks": 1, "nested": {"format": "qcow2"}})
    );
    let rep = report(&dir);
    let hook = &rep["hooks"][0];
    assert_eq!(hook["http_status"], 200);
    assert_eq!(hook["body_tail"], "answer 200\n");
    assert_eq!(
        hook["request"],
        // Query values are redacted: they often carry tokens.
        json!({"method": "PUT", "url": format!("{}/hooks/web%2001?src=[redacted]", server.base),
               "headers": {"Authorization": "[redacted]", "X-Stage": "[redacted]"}})
    );
    // The token appears nowhere we write.
    let report_text = std::fs::read_to_string(dir.join("output/report.json")).expect("report");
    let log_text = std::fs::read_to_string(&log).expect("log");
    for (what, text) in [
        ("report", &report_text),
        ("log", &log_text),
        ("stderr", &r.stderr),
        ("stdout", &r.stdout),
    ] {
        assert!(!text.contains(secret), "the token leaked into the {what}");
    }
    assert!(log_text.contains("hook succeeded"), "{log_text}");
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn http_hook_retries_after_500s() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    let server = Listener::start(&[500, 500, 200]);
    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({"pre_extraction": [{"type": "http", "url": format!("{}/notify", server.base),
               "body": {"stage": "{{ stage }}"},
               "retry": {"max_retries": 3, "initial_delay": 0.2, "strategy": "linear"}}]}),
    );
    let started = Instant::now();
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    // Linear backoff: 0.2 s, then 0.4 s.
    assert!(started.elapsed() >= Duration::from_millis(600));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for req in &reqs {
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/notify");
        assert_eq!(req.json(), json!({"stage": "pre_extraction"}));
    }
    let rep = report(&dir);
    assert_eq!(rep["hooks"][0]["attempts"], 3);
    assert_eq!(rep["hooks"][0]["http_status"], 200);
    assert_eq!(rep["hooks"][0]["success"], true);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn http_hook_gives_up_after_max_retries_and_fails_the_vm() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    let server = Listener::start(&[503]);
    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({"post_extraction": [{"type": "http", "url": format!("{}/notify", server.base),
               "retry": {"max_retries": 2, "initial_delay": 0.05, "strategy": "constant"}}]}),
    );
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    assert_eq!(server.requests().len(), 3);
    let rep = report(&dir);
    let hook = &rep["hooks"][0];
    assert_eq!(hook["attempts"], 3);
    assert_eq!(hook["http_status"], 503);
    assert_eq!(
        hook["error"],
        "answered 503 Service Unavailable: answer 503"
    );
    assert_eq!(rep["errors"][0]["stage"], "post_extraction");
    assert!(
        rep["errors"][0]["message"]
            .as_str()
            .expect("message")
            .starts_with("hook post_extraction[0] (http POST http://127.0.0.1:"),
        "{}",
        rep["errors"][0]["message"]
    );
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn http_get_sends_the_body_as_a_query_string() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    let server = Listener::start(&[204]);
    let m = manifest(
        &dir,
        "web 01",
        json!({}),
        json!({"pre_extraction": [{"type": "http", "method": "GET", "url": format!("{}/q", server.base),
               "body": {"vm": "{{ vm_name }}", "n": 2}}]}),
    );
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let reqs = server.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/q?vm=web+01&n=2");
    assert!(reqs[0].body.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Configuration: profiles, dump-config, dry run.

#[test]
fn profile_hooks_merge_like_the_rest_of_the_config() {
    let dir = vm_dir();
    script(&dir, "ok.sh", "#!/bin/sh\nexit 0\n");
    dir.write(
        "profiles/site.yaml",
        "hooks:\n  pre_extraction:\n    - {type: script, path: ok.sh, args: [from-profile]}\n  \
         post_convert:\n    - {type: http, url: 'https://cmdb.example/profile'}\n",
    );
    let m = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: site\ncustom_profile_path: profiles\n\
         disks:\n  - {id: d0, source_format: raw, bytes: 1048576, local_path: disk.raw}\n\
         hooks:\n  post_convert:\n    - {type: HTTP, url: 'https://cmdb.example/manifest', timeout: 30}\n",
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&m).arg("--dump-config"));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    // Maps recurse (the profile's pre_extraction stays), lists replace (post_convert is the
    // manifest's alone), and every default is shown (unset ones, like the body, are left out).
    assert_eq!(
        v["hooks"]["pre_extraction"][0]["args"],
        json!(["from-profile"])
    );
    assert_eq!(
        v["hooks"]["post_convert"],
        json!([{"type": "http", "url": "https://cmdb.example/manifest", "method": "POST",
                "headers": {}, "timeout": 30.0, "continue_on_error": false,
                "retry": {"max_retries": 0, "initial_delay": 1.0, "strategy": "exponential",
                          "max_delay": 60.0, "retry_on_timeout": true}}])
    );
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn dry_run_lists_hooks_and_runs_none() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    script(
        &dir,
        "touch.sh",
        &format!("#!/bin/sh\ntouch '{}'\n", dir.join("ran").display()),
    );
    let m = manifest(
        &dir,
        "web01",
        json!({}),
        json!({"pre_extraction": [{"type": "script", "path": "touch.sh", "args": ["{{ vm_name }}"], "continue_on_error": true}],
               "post_convert": [{"type": "http", "url": "https://cmdb.example/x", "headers": {"X-Token": "abc"}}]}),
    );
    let r = run(hyper2kvm_on(&m).arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    assert!(!dir.join("ran").exists(), "a dry run ran a hook");
    let text = redact(&r.stdout, &dir);
    assert!(
        text.contains("  hooks (a dry run does not run them):\n"),
        "{text}"
    );
    assert!(
        text.contains("    hook pre_extraction[0]: script [TMP]/touch.sh '{{ vm_name }}', timeout 300s, continue on error\n"),
        "{text}"
    );
    assert!(
        text.contains("    hook post_convert[0]: http POST https://cmdb.example/x (headers: X-Token), timeout 300s (will not run: its pipeline stage is not enabled)\n"),
        "{text}"
    );
    assert!(!text.contains("abc"), "header values are not shown");
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 2, every problem named, nothing run.

fn rejected(dir: &TestDir, name: &str, text: &str, envs: &[(&str, &str)]) -> String {
    let path = dir.write(name, text);
    let mut cmd = hyper2kvm();
    cmd.arg("--manifest").arg(&path);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let r = run(&mut cmd);
    assert_eq!(r.code, Some(2), "{}", show(&r));
    assert_eq!(r.stdout, "");
    assert!(!dir.join("output").exists(), "nothing was written");
    redact(&r.stderr, dir)
}

#[test]
fn every_bad_hook_is_reported_at_once() {
    let dir = vm_dir();
    script(&dir, "ok.sh", "#!/bin/sh\nexit 0\n");
    let plain = dir.write("not-executable.sh", "#!/bin/sh\nexit 0\n");
    chmod(&plain, 0o644);
    let err = rejected(
        &dir,
        "vm.yaml",
        r#"manifest_version: "1.0"
disks:
  - {id: d0, source_format: raw, bytes: 1048576, local_path: disk.raw}
hooks:
  prefix:
    - {type: script, path: ok.sh}
  pre_validate: []
  pre_extraction:
    - {path: ok.sh}
    - {type: script}
    - {type: python, function: notify}
    - {type: http}
    - {type: shell, path: ok.sh}
    - {type: script, path: missing.sh}
    - {type: script, path: not-executable.sh}
    - {type: script, path: ok.sh, timeout: 0}
    - {type: script, path: ok.sh, timeout: -5}
    - {type: script, path: ok.sh, args: ["{{ vm_nam }}", "{{ stage"], working_directory: no-such-dir}
    - {type: http, url: "ftp://files.example.com/upload"}
    - {type: http, url: "https://h.example/{{ nope }}", method: FETCH, headers: {"X-Token": "${BAD NAME}"}}
    - {type: python, module: "../evil", function: "f-g", args: [1, 2]}
    - {type: script, path: ok.sh, retry: {strategy: fibonacci, max_retries: 1000}}
    - {type: script, path: ok.sh, continue_on_eror: true}
  post_convert: {type: script, path: ok.sh}
"#,
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
#[cfg_attr(not_root, ignore = "needs root")]
fn script_in_a_world_writable_place_is_refused_as_root() {
    if !require_root() {
        return;
    }
    let dir = vm_dir();
    let open_script = script(&dir, "open.sh", "#!/bin/sh\nexit 0\n");
    chmod(&open_script, 0o777);
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    script(&dir, "shared/hook.sh", "#!/bin/sh\nexit 0\n");
    chmod(&shared, 0o777);
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: d0, source_format: raw, bytes: 1048576, local_path: disk.raw}\n\
         hooks:\n  pre_extraction:\n    - {type: script, path: open.sh}\n    - {type: script, path: shared/hook.sh}\n",
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
#[cfg_attr(
    missing_tool = "python3",
    ignore = "needs python3 (install: scripts/install-deps.sh core)"
)]
fn python_and_environment_problems_are_found_when_planning() {
    if !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write(
        "needs_missing.py",
        "import no_such_module_h2k\n\ndef notify():\n    pass\n",
    );
    dir.write(
        "fine.py",
        "def notify(vm, stage):\n    return True\n\nnot_callable = 3\n",
    );
    let err = rejected(
        &dir,
        "vm.yaml",
        r#"manifest_version: "1.0"
disks:
  - {id: d0, source_format: raw, bytes: 1048576, local_path: disk.raw}
hooks:
  post_extraction:
    - {type: python, module: needs_missing, function: notify}
    - {type: python, module: not_there_h2k, function: notify}
    - {type: python, module: fine, function: notifyy}
    - {type: python, module: fine, function: not_callable}
    - {type: python, module: fine, function: notify, args: {vm: "{{ vm_name }}", stage: "{{ stage }}", colour: red}}
    - {type: python, module: fine.sub, function: notify}
    - {type: http, url: "https://cmdb.example/x", headers: {Authorization: "Bearer ${H2K_UNSET_TOKEN_FOR_TEST}"}}
"#,
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
#[cfg_attr(
    missing_tool = "python3",
    ignore = "needs python3 (install: scripts/install-deps.sh core)"
)]
fn python_syntax_error_is_found_when_planning() {
    if !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write("broken.py", "def notify(:\n    pass\n");
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: d0, source_format: raw, bytes: 1048576, local_path: disk.raw}\n\
         hooks:\n  pre_extraction:\n    - {type: python, module: broken, function: notify}\n",
        &[],
    );
    // The wording of SyntaxError changes between Python versions; the file and line do not.
    assert!(
        err.contains(
            "hooks.pre_extraction[0].module: module 'broken' does not import: SyntaxError"
        ),
        "{err}"
    );
    assert!(err.contains("([TMP]/broken.py, line 1)"), "{err}");
}

#[test]
fn python_hooks_without_python3_name_the_package() {
    let dir = vm_dir();
    dir.write("fine.py", "def notify():\n    return True\n");
    let path = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: d0, source_format: raw, bytes: 1048576, local_path: disk.raw}\n\
         hooks:\n  pre_extraction:\n    - {type: python, module: fine, function: notify}\n",
    );
    let empty = dir.join("empty-path");
    std::fs::create_dir(&empty).expect("mkdir");
    let r = run(hyper2kvm().arg("--manifest").arg(&path).env("PATH", &empty));
    assert_eq!(r.code, Some(4), "{}", show(&r));
    insta::assert_snapshot!(r.stderr, @"error: `python3` was not found on PATH; install the Debian package `python3`");
}

/// `{{ fixed_path }}` names the repaired boot disk: in post_fix it is the overlay the repairs
/// went into (a qcow2 backed by the untouched source), and with convert off the source itself.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn post_fix_hooks_see_the_repaired_disk() {
    if !require_tool("qemu-img") || !require_tool("guestfish") {
        return;
    }
    let dir = TestDir::new();
    phony_guest(Guest::Debian, &dir.join("disk.raw"));
    script(
        &dir,
        "info.sh",
        "#!/bin/sh\nprintf '%s\\n' \"$1\" > \"$2.path\"\nexec qemu-img info -U --output=json \"$1\" > \"$2\"\n",
    );
    let hooks = json!({"post_fix": [{"type": "script", "path": "info.sh",
        "args": ["{{ fixed_path }}", "{{ manifest_path }}.info"]}]});
    let m = |convert: bool| {
        json!({
            "manifest_version": "1.0",
            "source": {"provider": "vsphere", "vm_name": "guest"},
            "disks": [{"id": "d0", "source_format": "raw",
                       "bytes": file_size(&dir.join("disk.raw")), "local_path": "disk.raw"}],
            "pipeline": {"fix": {"enabled": true, "regen_initramfs": false,
                                 "allow_in_place": true, "disk_backup": false},
                         "convert": {"enabled": convert}},
            "output": {"directory": if convert { "output" } else { "in-place" }},
            "hooks": hooks,
        })
    };
    let converting = dir.join("converting.json");
    write_json(&converting, &m(true));
    let r = run(&mut hyper2kvm_on(&converting));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let info = read_json(&dir.join("converting.json.info"));
    assert_eq!(info["format"], "qcow2", "the overlay: {info:#}");
    assert_eq!(
        info["backing-filename"],
        dir.join("disk.raw").display().to_string(),
        "backed by the source: {info:#}"
    );
    let path = std::fs::read_to_string(dir.join("converting.json.info.path")).expect("path");
    assert!(
        path.trim_end().ends_with("/d0.overlay.qcow2") && path.contains("/output/.hyper2kvm-work-"),
        "{path}"
    );

    let in_place = dir.join("in-place.json");
    write_json(&in_place, &m(false));
    let r = run(&mut hyper2kvm_on(&in_place));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let info = read_json(&dir.join("in-place.json.info"));
    assert_eq!(info["format"], "raw", "{info:#}");
    assert_eq!(
        std::fs::read_to_string(dir.join("in-place.json.info.path"))
            .expect("path")
            .trim_end(),
        dir.join("disk.raw").display().to_string(),
        "repaired in place, the source itself"
    );
}

/// Before the repair there is no repaired disk: `{{ fixed_path }}` in an earlier stage is refused
/// when the manifest is loaded, naming the hook and what to use instead.
#[test]
fn fixed_path_before_post_fix_is_refused_at_load_time() {
    let dir = vm_dir();
    script(&dir, "ok.sh", "#!/bin/sh\n");
    let path = manifest(
        &dir,
        "web01",
        json!({"convert": {"enabled": true}}),
        json!({"pre_fix": [{"type": "script", "path": "ok.sh", "args": ["{{ fixed_path }}"]}],
               "post_fix": [{"type": "script", "path": "ok.sh", "args": ["{{ fixed_path }}"]}]}),
    );
    let r = run(&mut hyper2kvm_on(&path));
    assert_eq!(r.code, Some(2), "{}", show(&r));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @r"
    error: invalid manifest [TMP]/vm.json (1 problem):
      - hooks.pre_fix[0]: {{ fixed_path }} is the repaired boot disk, which exists only from post_fix on (post_fix, pre_convert, post_convert, post_validate), not in pre_fix; use {{ source_path }} for the disk as it is before the repair
    ");
}
