//! A source disk is written only with the admin's consent, and only after a whole copy of it;
//! a dry run starts nothing and writes nothing unless the guest preview is asked for.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::failures::Mount;
use crate::guests::{Guest, phony_guest};
use crate::support::*;

fn manifest(dir: &TestDir, disk: &Path, format: &str, extra: &str) -> PathBuf {
    dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: guest}}\n{extra}\ndisks:\n  - {{id: boot, source_format: {format}, bytes: {}, local_path: {}}}\n",
            file_size(disk),
            disk.display()
        ),
    )
}

fn blank_qcow2(dir: &TestDir) -> PathBuf {
    let disk = dir.join("disk.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M"),
    );
    disk
}

/// The `minimal` profile fixes the source in place (fix on, convert off): without consent the
/// plan refuses it, names the file and the field, says how to consent, and touches nothing.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn in_place_fix_without_consent_is_refused() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = blank_qcow2(&dir);
    let before = sha256(&src);
    let path = manifest(&dir, &src, "qcow2", "profile: minimal");
    let snapshot = tree(dir.path());
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert_eq!(sha256(&src), before, "the source is untouched");
    assert_eq!(tree(dir.path()), snapshot, "nothing was written");
    assert!(!dir.join("output").exists());
    insta::assert_snapshot!(redact(&r.stderr, &dir));
}

/// `debug` repairs with convert off too: its refusal names the profile and the key or flag to
/// add, and with the key in `profile_overrides` the plan goes through (a dry run, so nothing runs).
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn debug_profile_needs_in_place_consent() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = blank_qcow2(&dir);
    let path = manifest(&dir, &src, "qcow2", "profile: debug");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(!dir.join("output").exists());
    insta::assert_snapshot!(redact(&r.stderr, &dir));

    let path = manifest(
        &dir,
        &src,
        "qcow2",
        "profile: debug\nprofile_overrides: {pipeline: {fix: {allow_in_place: true}}}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--dry-run", "--progress", "none"]));
    assert_eq!(
        r.code,
        Some(0),
        "consent through profile_overrides is enough: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout
            .contains("written into the source disks themselves (consented)"),
        "{}",
        r.stdout
    );
}

/// With consent (`--allow-in-place`), the source is copied whole before it is repaired: the
/// backup holds the original's bytes, appears only under its final name, and the report (written
/// although the manifest disables it) lists the backup and every change made to the source.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn in_place_fix_with_consent_backs_up_the_source_first() {
    if !require_tool("qemu-img") || !require_tool("guestfish") {
        return;
    }
    let dir = TestDir::new();
    let raw = dir.join("debian.raw");
    phony_guest(Guest::Debian, &raw);
    let src = dir.join("debian.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&src),
    );
    std::fs::remove_file(&raw).expect("remove the raw copy");
    let original = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "qcow2",
        "profile: minimal\noptions: {report: {enabled: false}}",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .arg("--allow-in-place")
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let backup = dir.join("output/backups/debian.qcow2");
    assert_eq!(sha256(&backup), original, "the backup is the original");
    assert_ne!(sha256(&src), original, "the repairs went into the source");
    let files = tree(&dir.join("output"));
    assert!(
        files.iter().all(|f| !f.ends_with(".part")),
        "no half-written copy is left: {files:?}"
    );
    assert!(
        files.contains(&"backups/debian.qcow2".to_owned()),
        "{files:?}"
    );

    let report = read_json(&dir.join("output/report.json"));
    let fix = &report["pipeline"]["stages"]["fix"]["result"];
    assert_eq!(fix["mode"], "in_place", "{fix:#}");
    let backups = fix["disk_backups"].as_array().expect("disk_backups");
    assert_eq!(backups.len(), 1, "{fix:#}");
    assert_eq!(backups[0]["disk_id"], "boot");
    assert_eq!(backups[0]["source"], src.display().to_string());
    assert_eq!(backups[0]["backup"], backup.display().to_string());
    assert!(
        ["reflink", "copy"].contains(&backups[0]["method"].as_str().unwrap_or_default()),
        "{fix:#}"
    );
    assert_eq!(backups[0]["size_bytes"], file_size(&backup));
    let changes = fix["changes"].as_array().expect("changes");
    assert!(
        changes.iter().any(|c| c["path"] == "/etc/fstab"),
        "every change to the source is listed: {fix:#}"
    );
    let notes = report.to_string();
    assert!(notes.contains("the report is written anyway"), "{notes}");
    assert!(
        r.stdout
            .contains(&format!("copied whole to {}", backup.display())),
        "{}",
        r.stdout
    );
}

/// A backup directory whose filesystem has no room for the copy is refused at plan time, before
/// anything is written; opting out of the backup (`--no-disk-backup`) is then accepted.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs root, qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn no_room_for_the_backup_is_refused() {
    if !require_tool("qemu-img") || !require_tool("guestfish") || !require_root() {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("data.raw");
    std::fs::write(&src, vec![0xa5u8; 4 << 20]).expect("write the source");
    let before = sha256(&src);
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "size=1M") else {
        return;
    };
    let path = manifest(&dir, &src, "raw", "profile: minimal");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .arg("--allow-in-place")
        .arg("--output-dir")
        .arg(&mount.path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    let err = redact(&r.stderr, &dir);
    assert!(err.contains("cannot plan [TMP]/vm.yaml"), "{err}");
    assert!(
        err.contains("the backup copies of the source disks need up to 4.0 MiB (4194304 bytes) in [TMP]/small/backups"),
        "{err}"
    );
    assert!(err.contains("--no-disk-backup"), "{err}");
    assert_eq!(sha256(&src), before);
    assert_eq!(
        tree(&mount.path),
        Vec::<String>::new(),
        "nothing was written"
    );

    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--allow-in-place", "--no-disk-backup", "--dry-run"])
        .arg("--output-dir")
        .arg(&mount.path));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("without a backup copy"), "{}", r.stdout);
    assert_eq!(tree(&mount.path), Vec::<String>::new());
}

/// Wrappers first on PATH that record every call of the programs a dry run must not start.
struct Watched {
    dir: TestDir,
}

impl Watched {
    fn new(programs: &[&str]) -> Self {
        let dir = TestDir::new();
        std::fs::create_dir(dir.join("bin")).expect("mkdir");
        std::fs::create_dir(dir.join("tmp")).expect("mkdir");
        for program in programs {
            let real = which::which(program).expect("the real program");
            let script = dir.write(
                &format!("bin/{program}"),
                &format!(
                    "#!/bin/sh\necho \"{program} $*\" >> {}\nexec {} \"$@\"\n",
                    dir.join("calls.log").display(),
                    real.display()
                ),
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        Self { dir }
    }

    fn command(&self) -> Command {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut cmd = hyper2kvm();
        cmd.env("PATH", format!("{}:{path}", self.dir.join("bin").display()))
            .env("TMPDIR", self.dir.join("tmp"));
        cmd
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }
}

/// `--dry-run` with fix and the boot test on starts no libguestfs appliance and no
/// qemu-system (not even the KVM probe) and writes nothing, neither beside the manifest nor in
/// the temporary directory; the same for an in-place fix.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "guestfish",
        missing_tool = "qemu-system-x86_64"
    ),
    ignore = "needs qemu-img, guestfish and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn dry_run_starts_nothing_and_writes_nothing() {
    if !require_tool("qemu-img")
        || !require_tool("guestfish")
        || !require_tool("qemu-system-x86_64")
    {
        return;
    }
    let watched = Watched::new(&["guestfish", "qemu-system-x86_64"]);
    let dir = TestDir::new();
    let src = blank_qcow2(&dir);
    let path = manifest(
        &dir,
        &src,
        "qcow2",
        "pipeline:\n  fix: {enabled: true}\n  convert: {enabled: true}\n  validate:\n    enabled: true\n    boot_test: {enabled: true}",
    );
    let snapshot = tree(dir.path());
    let r = run(watched
        .command()
        .arg("--manifest")
        .arg(&path)
        .arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(watched.calls(), "", "a dry run started nothing");
    assert_eq!(tree(dir.path()), snapshot, "a dry run writes nothing");
    assert!(!dir.join("output").exists());
    assert_eq!(tree(&watched.dir.join("tmp")), Vec::<String>::new());
    assert!(
        r.stdout
            .starts_with("Dry run: nothing will be read, written or converted.\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("fix: the guest is not read by a dry run; add --preview-guest"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("did not probe KVM"), "{}", r.stdout);
    assert!(r.stdout.contains("boot test ("), "{}", r.stdout);

    // In place, with consent given in the manifest: still nothing started or written.
    let path = manifest(
        &dir,
        &src,
        "qcow2",
        "pipeline:\n  fix: {enabled: true, allow_in_place: true}",
    );
    let snapshot = tree(dir.path());
    let r = run(watched
        .command()
        .arg("--manifest")
        .arg(&path)
        .arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(watched.calls(), "");
    assert_eq!(tree(dir.path()), snapshot);
    assert!(!dir.join("output").exists());
    assert!(
        r.stdout.contains("after a whole copy of each"),
        "{}",
        r.stdout
    );

    // The preview is for dry runs only.
    let r = run(watched
        .command()
        .arg("--manifest")
        .arg(&path)
        .arg("--preview-guest"));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("add --dry-run"), "{}", r.stderr);
    assert_eq!(watched.calls(), "");
    assert_eq!(tree(dir.path()), snapshot);
}

/// `--dry-run --preview-guest` says it reads the guest read-only; a guest it cannot read (a
/// disk with no operating system) is a note in the output, and the dry run still succeeds
/// without writing anything.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "guestfish"),
    ignore = "needs qemu-img and guestfish (install: scripts/install-deps.sh full)"
)]
fn preview_guest_that_cannot_read_the_guest_is_a_note() {
    if !require_tool("qemu-img") || !require_tool("guestfish") {
        return;
    }
    let dir = TestDir::new();
    let src = blank_qcow2(&dir);
    let before = sha256(&src);
    let path = manifest(
        &dir,
        &src,
        "qcow2",
        "pipeline:\n  fix: {enabled: true}\n  convert: {enabled: true}",
    );
    let snapshot = tree(dir.path());
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--dry-run", "--preview-guest"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with(
            "Dry run: the guest is read read-only (--preview-guest); nothing will be written or converted.\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "fix: reading the guest read-only (--preview-guest); nothing is written to it"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("note: the guest preview could not read the guest"),
        "{}",
        r.stdout
    );
    assert_eq!(sha256(&src), before);
    assert_eq!(tree(dir.path()), snapshot);
    assert!(!dir.join("output").exists());
}
