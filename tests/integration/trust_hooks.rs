//! Hooks are bounded: a hook that prints without end leaves hyper2kvm's memory flat and the
//! report says how much was dropped; a hook's leftover children die with its process group and do
//! not cost a python hook its answer; secrets in http hook URLs and in hook `env` values never
//! reach the report, the log, the terminal or the dry run. Real scripts, a real python3 and a
//! real HTTP listener on 127.0.0.1.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hooks::{gone, hyper2kvm_on, read_pid, script, show, vm_dir};
use crate::http_listener::Listener;
use crate::support::*;

/// Writes `vm.json` with one raw disk, no pipeline stage and `hooks`.
fn manifest(dir: &TestDir, hooks: Value) -> PathBuf {
    let m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "local", "vm_name": "web01"},
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1 << 20, "local_path": "disk.raw"}],
        "pipeline": {},
        "hooks": hooks,
    });
    let p = dir.join("vm.json");
    write_json(&p, &m);
    p
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Kills, when dropped, every process whose pid is in one of these files.
struct Reap(Vec<PathBuf>);

impl Drop for Reap {
    fn drop(&mut self) {
        for file in &self.0 {
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The peak resident set size (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

const GIB: u64 = 1 << 30;
const TAIL: u64 = 4096;

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn a_hook_printing_a_gibibyte_keeps_memory_flat_and_says_what_it_dropped() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    // No newline anywhere: a line buffer would have to hold all of it.
    script(
        &dir,
        "loud.sh",
        "#!/bin/sh\nhead -c 1G /dev/zero\nhead -c 1G /dev/zero >&2\n",
    );
    // Keeps hyper2kvm alive after the loud hook, so its peak is sampled after all was read.
    script(&dir, "pause.sh", "#!/bin/sh\nsleep 1\n");
    let m = manifest(
        &dir,
        json!({
            "pre_extraction": [{"type": "script", "path": "loud.sh", "timeout": 600}],
            "post_extraction": [{"type": "script", "path": "pause.sh"}],
        }),
    );
    let mut child = hyper2kvm_on(&m)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(peak > 0, "VmHWM was never read");
    assert!(
        peak < 100 * 1024,
        "hyper2kvm's peak RSS was {} MiB while a hook printed 2 GiB",
        peak / 1024
    );
    let rep = read_json(&dir.join("output/report.json"));
    let hook = &rep["hooks"][0];
    assert_eq!(hook["success"], true, "{hook}");
    assert_eq!(
        hook["stdout_tail"].as_str().expect("stdout_tail").len() as u64,
        TAIL
    );
    assert_eq!(
        hook["stderr_tail"].as_str().expect("stderr_tail").len() as u64,
        TAIL
    );
    assert_eq!(hook["stdout_dropped_bytes"], GIB - TAIL);
    assert_eq!(hook["stderr_dropped_bytes"], GIB - TAIL);
    // A quiet hook drops nothing, and says nothing about it.
    assert!(rep["hooks"][1].get("stdout_dropped_bytes").is_none());
}

const DAEMONS: &str = r#"
import os, subprocess, time

def forked(pidfile):
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    open(pidfile, "w").write(str(pid))
    return True

def spawned(pidfile):
    p = subprocess.Popen(["sleep", "600"])
    open(pidfile, "w").write(str(p.pid))
    return {"success": True, "output": "started %d" % p.pid}

def detached(pidfile):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(600)
        os._exit(0)
    open(pidfile, "w").write(str(pid))
    return True
"#;

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "python3"),
    ignore = "needs qemu-img and python3 (install: scripts/install-deps.sh core)"
)]
fn a_hook_that_leaves_a_daemon_keeps_its_result_and_the_daemon_dies() {
    if !require_tool("qemu-img") || !require_tool("python3") {
        return;
    }
    let dir = vm_dir();
    dir.write("daemons.py", DAEMONS);
    script(
        &dir,
        "bg.sh",
        "#!/bin/sh\nsleep 600 &\necho $! > \"$1\"\necho started\n",
    );
    let pidfile = |name: &str| dir.join(name).display().to_string();
    let m = manifest(
        &dir,
        json!({"pre_extraction": [
            {"type": "python", "module": "daemons", "function": "forked",
             "args": {"pidfile": pidfile("forked.pid")}},
            {"type": "python", "module": "daemons", "function": "spawned",
             "args": {"pidfile": pidfile("spawned.pid")}},
            {"type": "python", "module": "daemons", "function": "detached",
             "args": {"pidfile": pidfile("detached.pid")}},
            {"type": "script", "path": "bg.sh", "args": [pidfile("bg.pid")]},
        ]}),
    );
    // `detached` left the hook's process group, so it is not the group kill's to stop; and
    // should the test fail, no daemon of it may outlive it either.
    let _reap = Reap(
        ["forked.pid", "spawned.pid", "detached.pid", "bg.pid"]
            .iter()
            .map(|n| dir.join(n))
            .collect(),
    );
    let r = run(&mut hyper2kvm_on(&m));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let rep = read_json(&dir.join("output/report.json"));
    let hooks = rep["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 4);
    for h in hooks {
        assert_eq!(h["success"], true, "{h}");
        assert_eq!(
            h["exit_status"],
            json!({"kind": "exited", "value": 0}),
            "{h}"
        );
    }
    // The function's own return value decided, also when a child held the answer's pipe.
    assert_eq!(hooks[0]["output"], "True");
    let spawned = read_pid(&dir.join("spawned.pid"));
    assert_eq!(hooks[1]["output"], format!("started {spawned}"));
    assert_eq!(hooks[2]["output"], "True");
    assert_eq!(hooks[3]["stdout_tail"], "started\n");
    for name in ["forked.pid", "spawned.pid", "bg.pid"] {
        let pid = read_pid(&dir.join(name));
        assert!(
            wait_gone(pid),
            "{name}: process {pid}, left behind by a hook, outlived the hook"
        );
    }
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn secrets_in_hook_urls_and_env_values_are_redacted_everywhere() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = vm_dir();
    let server = Listener::start(&[200]);
    // A port nobody listens on, for a request that fails and quotes its URL in the error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let seen = dir.join("seen-env");
    script(
        &dir,
        "env.sh",
        &format!(
            "#!/bin/sh\nprintf '%s' \"$API_PASSWORD\" > '{}'\n",
            seen.display()
        ),
    );
    let host = server.base.trim_start_matches("http://");
    let m = manifest(
        &dir,
        json!({"pre_extraction": [
            {"type": "http",
             "url": format!("http://admin:pw-s3cret@{host}/notify?token=tok-s3cret&vm={{{{ vm_name }}}}")},
            {"type": "http", "continue_on_error": true, "timeout": 10,
             "url": format!("http://admin:pw-s3cret@127.0.0.1:{closed}/x?token=tok-s3cret")},
            {"type": "script", "path": "env.sh", "env": {"API_PASSWORD": "env-s3cret"}},
        ]}),
    );

    let dry = run(hyper2kvm_on(&m).arg("--dry-run"));
    assert_eq!(dry.code, Some(0), "{}", show(&dry));
    assert!(
        dry.stdout.contains(&format!(
            "hook pre_extraction[0]: http POST http://[redacted]@{host}/notify?token=[redacted]&vm=[redacted], timeout 300s\n"
        )),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("/env.sh (env: API_PASSWORD), timeout 300s\n"),
        "{}",
        dry.stdout
    );

    let log = dir.join("h2k.log");
    let r = run(hyper2kvm_on(&m).arg("--log-file").arg(&log).arg("-vv"));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    // The secrets were used, not lost.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].target, "/notify?token=tok-s3cret&vm=web01");
    assert_eq!(
        std::fs::read_to_string(&seen).expect("the script ran"),
        "env-s3cret"
    );
    let rep = read_json(&dir.join("output/report.json"));
    let hooks = rep["hooks"].as_array().expect("hooks");
    assert_eq!(
        hooks[0]["request"]["url"],
        format!("http://[redacted]@{host}/notify?token=[redacted]&vm=[redacted]")
    );
    assert_eq!(
        hooks[0]["target"],
        format!("POST http://[redacted]@{host}/notify?token=[redacted]&vm=[redacted]")
    );
    assert_eq!(hooks[1]["success"], false);
    let error = hooks[1]["error"].as_str().expect("error");
    assert!(error.contains("Connection refused"), "{error}");
    let report_text = std::fs::read_to_string(dir.join("output/report.json")).expect("report.json");
    let page_text = std::fs::read_to_string(dir.join("output/report.html")).expect("report.html");
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(log_text.contains("running hook"), "{log_text}");
    for (what, text) in [
        ("report.json", &report_text),
        ("report.html", &page_text),
        ("log file", &log_text),
        ("stderr", &r.stderr),
        ("stdout", &r.stdout),
        ("dry-run output", &dry.stdout),
        ("dry-run stderr", &dry.stderr),
    ] {
        for secret in ["pw-s3cret", "tok-s3cret", "env-s3cret"] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into the {what}:\n{text}"
            );
        }
    }
}
