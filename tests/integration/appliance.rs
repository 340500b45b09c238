//! A libguestfs appliance launch that hangs. The appliance's qemu is really started, paused
//! (`-S`) by a wrapper named in `LIBGUESTFS_HV`: exactly what a hung launch looks like, a
//! qemu that sits idle while `run` waits. The launch must be killed at its timeout and tried
//! once more, the debug console kept, and no qemu left behind.

use std::path::PathBuf;

use crate::guests::{Guest, phony_guest};
use crate::support::*;

/// A qemu wrapper that adds `-S` to the next `hangs` appliance launches (libguestfs also runs
/// the emulator to query its features; those runs pass through).
fn pausing_qemu(dir: &TestDir, hangs: u32) -> PathBuf {
    let qemu = which::which("qemu-system-x86_64").expect("qemu-system-x86_64");
    let count = dir.join("hangs-left");
    std::fs::write(&count, format!("{hangs}\n")).expect("write count");
    let script = format!(
        "#!/bin/sh\n\
         case \" $* \" in\n\
         *\" -kernel \"*)\n\
           n=$(cat '{count}')\n\
           if [ \"$n\" -gt 0 ]; then echo $((n - 1)) > '{count}'; exec '{qemu}' \"$@\" -S; fi ;;\n\
         esac\n\
         exec '{qemu}' \"$@\"\n",
        count = count.display(),
        qemu = qemu.display()
    );
    let path = dir.write("qemu-wrapper", &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Runs the fix stage on a phony Debian guest with the wrapper and a stall window.
fn fix_run(dir: &TestDir, hangs: u32, stall_secs: u32) -> (Run, serde_json::Value) {
    let disk = dir.join("guest.raw");
    phony_guest(Guest::Debian, &disk);
    let manifest = dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: hung}}\n\
             pipeline:\n  fix: {{enabled: true}}\n  convert: {{enabled: true}}\n\
             disks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(&disk),
            disk.display()
        ),
    );
    let wrapper = pausing_qemu(dir, hangs);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("LIBGUESTFS_HV", &wrapper)
        .env("HYPER2KVM_APPLIANCE_STALL_SECONDS", stall_secs.to_string()));
    let report = read_json(&dir.join("output/report.json"));
    (r, report)
}

/// The first launch hangs: it is killed once its qemu sat idle for the stall window, the second
/// (one vCPU) starts, the VM converts, and the report says what happened and where the hung
/// launch's console is.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs guestfish and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn a_hung_launch_is_killed_and_relaunched_once() {
    if !require_tool("guestfish") || !require_tool("qemu-system-x86_64") || skip_slow() {
        return;
    }
    let dir = TestDir::new();
    // A real launch on a loaded host is slow but never idle that long.
    let (r, report) = fix_run(&dir, 1, 20);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("hangs-left"))
            .expect("count")
            .trim(),
        "0",
        "the wrapper paused no launch"
    );
    let warnings = report["warnings"].to_string();
    let log = dir.join("output/appliance-console.fix.log");
    assert!(
        warnings.contains(
            "the libguestfs appliance hung (for 20 s its console printed nothing and its qemu \
             was idle) and was killed; it started on the second try, with 1 vCPU"
        ) && warnings.contains(&log.display().to_string()),
        "{warnings}"
    );
    let console = std::fs::read_to_string(&log).expect("the console log is kept");
    assert!(console.contains("libguestfs: launch"), "{console}");
    // Both launches are on record: the hung `run` as timed out, then the one that worked.
    let runs: Vec<&serde_json::Value> = report["pipeline"]["stages"]["fix"]["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter(|c| c["argv"].as_array().and_then(|a| a.last()) == Some(&"-run".into()))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["status"]["kind"], "timed_out", "{:#}", runs[0]);
    assert!(
        runs[0]["stderr_tail"]
            .as_str()
            .is_some_and(|t| t.starts_with("the libguestfs appliance hung (for 20 s")),
        "{:#}",
        runs[0]
    );
    assert_eq!(
        runs[1]["status"],
        serde_json::json!({"kind": "exited", "value": 0}),
        "{:#}",
        runs[1]
    );
    assert!(dir.join("output/boot.qcow2").is_file());
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}

/// Both launches hang: the VM fails with the reason, after two stall windows, with no qemu left.
#[test]
#[cfg_attr(
    any(
        skip_slow_tests,
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs guestfish and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn a_launch_that_hangs_twice_fails_the_vm_and_says_why() {
    if !require_tool("guestfish") || !require_tool("qemu-system-x86_64") || skip_slow() {
        return;
    }
    let dir = TestDir::new();
    let (r, report) = fix_run(&dir, 2, 10);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let error = report["errors"][0]["message"].as_str().unwrap_or_default();
    let log = dir.join("output/appliance-console.fix.log");
    assert!(
        error.starts_with(&format!(
            "the libguestfs appliance did not start, twice (the second time: the libguestfs \
             appliance hung (for 10 s its console printed nothing and its qemu was idle)); each \
             hung launch was killed; its debug console log is in {}; last lines of its console:",
            log.display()
        )),
        "{error}"
    );
    assert_eq!(report["errors"][0]["stage"], "fix");
    assert!(log.is_file());
    assert!(!dir.join("output/boot.qcow2").exists());
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}
