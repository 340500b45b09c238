//! Sources and outputs that must be trustworthy: only real disks are sources, a source is
//! pinned when the run is planned and a changed one fails the VM, `.part` files are never
//! written through a link, output names stay inside the output directory and apart from the
//! report, and everything written is private (0600 files, 0700 directories) under umask 022.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// Runs `cmd` and kills it when it takes longer than `limit`: a run that blocks (in `open` of a
/// FIFO, say) fails the test instead of hanging it.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Run {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hyper2kvm");
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hyper2kvm still ran after {limit:?}: it blocked");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code(),
        stdout: readers.0.join().expect("stdout reader"),
        stderr: readers.1.join().expect("stderr reader"),
    }
}

/// A one-disk raw manifest over `local_path` (convert and validate on), written as `vm.json`.
fn raw_manifest(dir: &TestDir, local_path: &Path, bytes: u64, extra: Value) -> PathBuf {
    let mut m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "local", "vm_name": "testvm"},
        "disks": [{"id": "d0", "source_format": "raw", "bytes": bytes, "local_path": local_path}],
        "pipeline": {
            "inspect": {"enabled": false},
            "convert": {"enabled": true},
            "validate": {"enabled": true}
        }
    });
    if let (Value::Object(m), Value::Object(extra)) = (&mut m, extra) {
        for (k, v) in extra {
            m.insert(k, v);
        }
    }
    let path = dir.join("vm.json");
    write_json(&path, &m);
    path
}

/// A 1 MiB raw disk with a pattern in it (no two MiB-halves alike).
fn patterned_disk(dir: &TestDir) -> PathBuf {
    let path = dir.join("disk.raw");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, data).expect("disk");
    path
}

fn script(dir: &TestDir, name: &str, body: &str) -> PathBuf {
    let p = dir.write(name, body);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

fn first_error(report: &Value) -> String {
    report["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `/dev/zero`, a FIFO, a socket, a directory and an empty file are each refused when the
/// manifest is loaded (exit 2), naming the manifest, the field and what was expected; nothing
/// blocks on the FIFO, and nothing is written.
#[test]
fn non_disk_sources_are_refused_before_anything_is_opened() {
    let dir = TestDir::new();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let directory = dir.join("a-directory");
    std::fs::create_dir(&directory).expect("mkdir");
    let empty = dir.join("empty.raw");
    std::fs::write(&empty, b"").expect("empty");
    let cases: [(PathBuf, &str); 5] = [
        (PathBuf::from("/dev/zero"), "is a character device"),
        (fifo, "is a FIFO (named pipe)"),
        (socket, "is a socket"),
        (directory, "is a directory, expected a disk image file"),
        (empty, "is empty (0 bytes)"),
    ];
    for (source, kind) in cases {
        let manifest = raw_manifest(&dir, &source, 1 << 20, json!({}));
        let r = run_bounded(
            hyper2kvm()
                .arg("--manifest")
                .arg(&manifest)
                .args(["--progress", "none"]),
            Duration::from_secs(60),
        );
        assert_eq!(
            r.code,
            Some(2),
            "{} was accepted:\n{}{}",
            source.display(),
            r.stdout,
            r.stderr
        );
        for wanted in [
            manifest.display().to_string(),
            "disks[0].local_path".to_owned(),
            source.display().to_string(),
            kind.to_owned(),
            "expected a disk image file".to_owned(),
        ] {
            assert!(
                r.stderr.contains(&wanted),
                "{}: {wanted:?} missing from:\n{}",
                source.display(),
                r.stderr
            );
        }
        assert!(!dir.join("output").exists(), "{}", source.display());
    }
}

/// A block device is a source only with `allow_block_device: true`; with it, the device
/// converts and the report pins it as a block device of the device's size.
#[test]
#[cfg_attr(
    any(not_root, missing_tool = "losetup", missing_tool = "qemu-img"),
    ignore = "needs root, losetup and qemu-img (install: scripts/install-deps.sh core)"
)]
fn block_device_needs_allow_block_device() {
    if !require_root() || !require_tool("losetup") || !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let backing = patterned_disk(&dir);
    let dev = LoopDevice::attach(&backing);
    let manifest = raw_manifest(&dir, &dev.path, 1 << 20, json!({}));
    let r = run_bounded(
        hyper2kvm().arg("--manifest").arg(&manifest),
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("is a block device; expected a disk image file")
            && r.stderr.contains("disks[0].allow_block_device: true"),
        "{}",
        r.stderr
    );
    let mut m = read_json(&manifest);
    m["disks"][0]["allow_block_device"] = json!(true);
    write_json(&manifest, &m);
    let r = run_bounded(
        hyper2kvm()
            .arg("--manifest")
            .arg(&manifest)
            .args(["--progress", "none"]),
        Duration::from_secs(300),
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(identical(
        &backing,
        "raw",
        &dir.join("output/d0.qcow2"),
        "qcow2"
    ));
    let report = read_json(&dir.join("output/report.json"));
    let pinned = &report["input_manifest"]["sources"][0];
    assert_eq!(pinned["file_type"], "block_device");
    assert_eq!(pinned["size_bytes"], 1 << 20);
    assert_eq!(pinned["path"], dev.path.display().to_string());
}

/// A `pre_convert` hook that truncates the source: convert notices the source is no longer the
/// one pinned at planning, says how it changed, and publishes nothing; the report keeps the
/// pinned identity.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn source_truncated_by_a_hook_fails_the_vm() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = patterned_disk(&dir);
    let meta = std::fs::metadata(&src).expect("stat");
    script(
        &dir,
        "truncate.sh",
        "#!/bin/sh\ntruncate -s 524288 disk.raw\n",
    );
    let manifest = raw_manifest(
        &dir,
        Path::new("disk.raw"),
        1 << 20,
        json!({"hooks": {"pre_convert": [{"type": "script", "path": "truncate.sh",
                                          "working_directory": "."}]}}),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(file_size(&src), 524288, "the hook did not run");
    assert_eq!(tree(&dir.join("output")), ["report.html", "report.json"]);
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["status"], "failed");
    let err = first_error(&report);
    assert!(
        err.contains(&format!("source {} changed", src.display()))
            && err.contains("size 1048576 → 524288 bytes"),
        "{err}"
    );
    assert_eq!(report["errors"][0]["stage"], "convert");
    let pinned = &report["input_manifest"]["sources"][0];
    use std::os::unix::fs::MetadataExt;
    assert_eq!(pinned["disk_id"], "d0");
    assert_eq!(pinned["file_type"], "file");
    assert_eq!(pinned["size_bytes"], 1 << 20);
    assert_eq!(pinned["inode"], meta.ino());
    assert_eq!(pinned["device"], meta.dev());
}

/// A `post_convert` hook that rewrites the source in place (same size, same inode): validate
/// refuses to vouch for the output, because the source is not the one pinned, instead of
/// comparing two things of which one changed.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn source_rewritten_before_validate_fails_validate() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    patterned_disk(&dir);
    script(
        &dir,
        "rewrite.sh",
        "#!/bin/sh\nsleep 0.05\ndd if=/dev/zero of=disk.raw bs=4096 count=1 conv=notrunc 2>/dev/null\n",
    );
    let manifest = raw_manifest(
        &dir,
        Path::new("disk.raw"),
        1 << 20,
        json!({"hooks": {"post_convert": [{"type": "script", "path": "rewrite.sh",
                                           "working_directory": "."}]}}),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let err = first_error(&report);
    assert_eq!(report["errors"][0]["stage"], "validate", "{err}");
    assert!(
        err.contains("changed after convert, before validate compared it") && err.contains("mtime"),
        "{err}"
    );
}

/// A symlink planted at the `.part` name is neither followed nor removed: the run fails, says
/// so, and the link's target keeps its content.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn symlink_at_the_part_name_is_not_followed() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = patterned_disk(&dir);
    let victim = dir.write("precious.txt", "do not overwrite\n");
    std::fs::create_dir(dir.join("output")).expect("mkdir");
    let link = dir.join("output/d0.qcow2.part");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let manifest = raw_manifest(&dir, &src, 1 << 20, json!({}));
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "do not overwrite\n",
        "written through the link"
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("the link is still there")
            .file_type()
            .is_symlink()
    );
    assert!(!dir.join("output/d0.qcow2").exists());
    let err = first_error(&read_json(&dir.join("output/report.json")));
    assert!(
        err.contains(&format!("cannot create {}", link.display()))
            && err.contains("nothing is written through it"),
        "{err}"
    );
}

/// `output.filename` is one plain name inside the output directory, refused at load time
/// otherwise; a name that is the report's is refused when planning. Nothing is written.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn output_filename_is_a_plain_name_apart_from_the_report() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = patterned_disk(&dir);
    for (filename, wanted) in [
        (
            "../x",
            "output.filename must be a plain file name inside the output directory, without \
             '/' (got: '../x')",
        ),
        ("..", "not '.' or '..' (got: '..')"),
        (
            "report.json",
            "the report and disk d0's output would both be",
        ),
        (
            "report.html",
            "the report's page and disk d0's output would both be",
        ),
        (
            "testvm.xml",
            "the domain XML and disk d0's output would both be",
        ),
    ] {
        let manifest = raw_manifest(
            &dir,
            &src,
            1 << 20,
            json!({"output": {"filename": filename}}),
        );
        let before = tree(dir.path());
        let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
        assert_eq!(
            r.code,
            Some(2),
            "{filename} accepted:\n{}{}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stderr.contains(wanted)
                && r.stderr.contains("output.filename")
                && r.stderr.contains(&manifest.display().to_string()),
            "{filename}: {}",
            r.stderr
        );
        assert_eq!(
            tree(dir.path()),
            before,
            "{filename}: something was written"
        );
    }
}

/// Two VMs of a batch whose output directories are one directory under two names (a symlink)
/// would write the same files: refused before anything runs.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn batch_outputs_meeting_through_a_symlink_are_refused() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = patterned_disk(&dir);
    std::fs::create_dir(dir.join("out")).expect("mkdir");
    std::os::unix::fs::symlink(dir.join("out"), dir.join("same-out")).expect("symlink");
    for (name, out) in [("a", "out"), ("b", "same-out")] {
        let m = json!({
            "manifest_version": "1.0",
            "source": {"vm_name": name},
            "disks": [{"id": "d0", "source_format": "raw", "bytes": 1 << 20, "local_path": src}],
            "pipeline": {"convert": {"enabled": true}},
            "output": {"directory": out},
            "options": {"report": {"path": format!("{name}-report.json")}}
        });
        write_json(&dir.join(&format!("{name}.json")), &m);
    }
    let batch = json!({"batch_version": "1.0",
        "vms": [{"manifest": "a.json", "id": "a"}, {"manifest": "b.json", "id": "b"}]});
    write_json(&dir.join("batch.json"), &batch);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(dir.join("batch.json")));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("vms a and b would both write"),
        "{}",
        r.stderr
    );
    assert!(tree(&dir.join("out")).is_empty());
}

/// Under umask 022, the converted disk, the report and the domain XML are 0600 and the output
/// directory the run made is 0700.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn outputs_are_private_under_umask_022() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = patterned_disk(&dir);
    let manifest = raw_manifest(
        &dir,
        &src,
        1 << 20,
        json!({"output": {"directory": "out/nested"}}),
    );
    let bin = assert_cmd::cargo::cargo_bin("hyper2kvm");
    let r = run(Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" --manifest \"$1\" --progress none")
        .arg(&bin)
        .arg(&manifest)
        .env_remove("RUST_LOG"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let mode = |p: &str| {
        std::fs::metadata(dir.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    let out = dir.join("out/nested");
    let mut files = tree(&out);
    files.sort();
    assert_eq!(
        files,
        ["d0.qcow2", "report.html", "report.json", "testvm.xml"]
    );
    for f in files {
        assert_eq!(mode(&format!("out/nested/{f}")), 0o600, "{f}");
    }
    assert_eq!(mode("out"), 0o700);
    assert_eq!(mode("out/nested"), 0o700);
}
