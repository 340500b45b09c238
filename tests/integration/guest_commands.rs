//! Guest commands: every guestfish command's failure fails its stage with guestfish's own
//! message, in-guest backups are real copies read back, and a command that hangs is killed at
//! its timeout together with its appliance.
//!
//! Failures and hangs are made for real: a `guestfish` wrapper first on PATH hands a command to
//! the real guestfish with one argument too many (a usage error from guestfish itself), or turns
//! it into `debug sh "sleep 1000"`, which really blocks inside the real appliance.

use std::path::PathBuf;

use crate::guests::{Guest, phony_guest, read_back};
use crate::support::*;

fn tools() -> bool {
    require_tool("qemu-img") && require_tool("guestfish")
}

/// A manifest repairing a phony Debian guest into an overlay and converting it, with `fix`.
fn fix_manifest(dir: &TestDir, fix: &str) -> PathBuf {
    let disk = dir.join("guest.raw");
    phony_guest(Guest::Debian, &disk);
    dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: guest}}\n\
             pipeline:\n  fix: {fix}\n  convert: {{enabled: true}}\n\
             disks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(&disk),
            disk.display()
        ),
    )
}

/// A `guestfish` first on PATH that runs the real one, except that a remote command named
/// `command` (as `-<command>`) runs the shell text `rewrite` instead (`$REAL` is the real
/// guestfish, `"$@"` the original arguments).
/// Returns the PATH to run hyper2kvm with.
fn guestfish_wrapper(dir: &TestDir, command: &str, rewrite: &str) -> String {
    let real = which::which("guestfish").expect("guestfish");
    let bin = dir.join("bin");
    let script = format!(
        "#!/bin/sh\n\
         REAL='{real}'\n\
         for a in \"$@\"; do\n\
           if [ \"$a\" = '-{command}' ]; then {rewrite}; fi\n\
         done\n\
         exec \"$REAL\" \"$@\"\n",
        real = real.display()
    );
    let path = dir.write("bin/guestfish", &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `fix.backup: true`: every backup the report lists exists in the converted guest and holds
/// the original file (the fstab before the repair), and each was read back with a checksum.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn in_guest_backups_exist_and_hold_the_originals() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let manifest = fix_manifest(&dir, "{enabled: true, backup: true, print_fstab: true}");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let fix = &report["pipeline"]["stages"]["fix"];
    let backups: Vec<&str> = fix["result"]["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b.as_str())
        .collect();
    let fstab_backup = backups
        .iter()
        .find(|b| b.starts_with("/etc/fstab.backup.hyper2kvm."))
        .unwrap_or_else(|| panic!("no fstab backup listed: {backups:?}"));
    let files = read_back(&dir.join("output/boot.qcow2"), "qcow2", &backups);
    for b in &backups {
        assert!(files.contains_key(*b), "{b} is listed but not in the guest");
    }
    let before = fix["result"]["fstab_before"]
        .as_str()
        .expect("fstab_before");
    let after = fix["result"]["fstab_after"].as_str().expect("fstab_after");
    assert_ne!(before, after, "the fstab was repaired");
    // read_back ends each file with one newline of guestfish's own.
    let backup = &files[*fstab_backup];
    assert_eq!(
        backup.strip_suffix('\n').unwrap_or(backup),
        before,
        "the backup is the original"
    );
    // Each backup was read back: a checksum of the original and of the copy.
    let commands: Vec<String> = fix["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .filter_map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for b in &backups {
        assert!(
            commands
                .iter()
                .any(|c| c.ends_with(&format!("-checksum sha256 {b}"))),
            "{b} was not read back: {commands:#?}"
        );
    }
}

/// A guestfish command that guestfish rejects with a usage message (it still exits 0) fails
/// the fix stage with that message, and nothing is converted.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn a_guestfish_usage_error_fails_the_fix_stage() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let manifest = fix_manifest(&dir, "{enabled: true, backup: true}");
    // The backup copy gets one argument too many.
    let path = guestfish_wrapper(&dir, "cp-a", r#"exec "$REAL" "$@" one-too-many"#);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PATH", path));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let error = &report["errors"][0];
    assert_eq!(error["stage"], "fix", "{report:#}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("libguestfs: `cp-a /etc/fstab /etc/fstab.backup.hyper2kvm.")
            && message.contains("error: incorrect number of arguments"),
        "{message}"
    );
    assert!(
        report["pipeline"]["stages"]["fix"]["result"]["backups"].is_null()
            || report["pipeline"]["stages"]["fix"]["result"]["backups"]
                .as_array()
                .is_some_and(Vec::is_empty),
        "{report:#}"
    );
    assert!(!dir.join("output/boot.qcow2").exists());
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}

/// A guestfish command that never answers (the first program run in the guest becomes
/// `debug sh "sleep 1000"` inside the real appliance) fails the fix stage at the per-command
/// timeout, naming the command; the listener and its appliance are killed and the console log
/// is kept beside the outputs.
#[test]
#[cfg_attr(
    any(skip_slow_tests, missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "slow, off with HYPER2KVM_SKIP_SLOW=1; needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn a_hung_guestfish_command_is_killed_with_its_appliance() {
    if !tools() || skip_slow() {
        return;
    }
    let dir = TestDir::new();
    let manifest = fix_manifest(&dir, "{enabled: true}");
    let path = guestfish_wrapper(
        &dir,
        "command",
        r#"exec "$REAL" "$1" "$2" -debug sh 'sleep 1000'"#,
    );
    let started = std::time::Instant::now();
    // Small against the default 45 minutes, large enough for the commands that do answer:
    // `inspect-os` alone took over 30 s under TCG on a loaded 2-core host.
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PATH", path)
        .env("HYPER2KVM_APPLIANCE_COMMAND_TIMEOUT", "150"));
    let elapsed = started.elapsed();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        elapsed < std::time::Duration::from_secs(900),
        "took {elapsed:?}"
    );
    let report = read_json(&dir.join("output/report.json"));
    let error = &report["errors"][0];
    assert_eq!(error["stage"], "fix", "{report:#}");
    let log = dir.join("output/appliance-console.fix.log");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("libguestfs: `command ")
            && message.contains(&format!(
                "` did not finish within 150 s (the per-command timeout, \
                 HYPER2KVM_APPLIANCE_COMMAND_TIMEOUT); the guestfish listener and its appliance \
                 were killed; its console log is in {}",
                log.display()
            )),
        "{message}"
    );
    let console = std::fs::read_to_string(&log).expect("the console log is kept");
    assert!(console.contains("libguestfs: launch"), "{console}");
    let commands = report["pipeline"]["stages"]["fix"]["commands"]
        .as_array()
        .expect("commands");
    let hung: Vec<&serde_json::Value> = commands
        .iter()
        .filter(|c| c["status"]["kind"] == "timed_out")
        .collect();
    assert_eq!(hung.len(), 1, "{commands:#?}");
    // The record holds what hyper2kvm sent (the wrapper changed it on the way).
    assert_eq!(hung[0]["argv"][3], "-command", "{:#}", hung[0]);
    assert!(
        hung[0]["stderr_tail"].as_str().is_some_and(|t| t.ends_with(
            "no answer within 150 s; the guestfish listener and its appliance were killed"
        )),
        "{:#}",
        hung[0]
    );
    assert!(!dir.join("output/boot.qcow2").exists());
    assert_eq!(processes_naming(dir.path()), Vec::<String>::new());
}
