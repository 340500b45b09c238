//! SIGINT/SIGTERM during a conversion: qemu-img is stopped, the `.part` file removed, the report
//! written with status "interrupted", exit 130.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

fn interrupt_with(signal: Signal) {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = random_gib();
    let before_len = file_size(&src);
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", true);
    m["pipeline"]["inspect"]["enabled"] = serde_json::json!(false);
    write_json(&dir.join("vm.json"), &m);
    let mut child = hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.json"))
        .arg("--progress")
        .arg("none")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let part = dir.join("output/d0.qcow2.part");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !part.exists() {
        assert!(Instant::now() < deadline, "conversion never started");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "hyper2kvm exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, signal).expect("signal");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree(&dir.join("output")),
        ["report.html", "report.json"],
        "no .part file left"
    );
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["pipeline"]["stages"]["convert"]["success"], false);
    let cmds = &report["pipeline"]["stages"]["convert"]["commands"];
    let last = cmds.as_array().and_then(|c| c.last()).expect("commands");
    assert_eq!(last["argv"][1], "convert");
    assert_eq!(last["status"]["kind"], "cancelled");
    assert!(String::from_utf8_lossy(&out.stdout).contains("INTERRUPTED"));
    assert_eq!(file_size(&src), before_len);
    // No qemu-img of ours survives.
    let survivors = std::process::Command::new("pgrep")
        .args(["-f", &part.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(survivors.stdout.is_empty(), "qemu-img still running");
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn sigint_stops_the_conversion() {
    interrupt_with(Signal::SIGINT);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn sigterm_stops_the_conversion() {
    interrupt_with(Signal::SIGTERM);
}
