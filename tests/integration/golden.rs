//! Golden `report.json`, `batch_report.json` and `batch_summary.txt`: every field, its value and
//! its position, as the binary writes them today. Only what changes from run to run or from host
//! to host is redacted:
//!
//! - times: RFC 3339 timestamps (a pinned source's mtime among them), and the numbers under
//!   the keys in [`TIMED`];
//! - a pinned source's device and inode numbers ([`PINNED`]) and its size;
//! - the test directory (`[TMP]`), the programs' install paths, guestfish's `--remote=<pid>`,
//!   the scratch directories of guest sessions and boot tests, backup name stamps;
//! - values that follow from those: a derived domain UUID (a version 8 UUID over the VM's
//!   identity, which holds the boot disk's path when the source has no UUID), the domain XML's
//!   size (it holds the test directory's path) and so `bytes_written`, `bytes_read` (qemu-img's `actual-size` is what the filesystem
//!   allocated), batch fingerprints (a hash over the manifest path);
//! - host facts: the appliance's vCPU count, the KVM probe's verdict, SeaBIOS's version, the
//!   free-space check's filesystem and free bytes (and, in a batch, the bytes the VMs running
//!   beside one had still to write);
//! - where a console read stopped: the period after SeaBIOS's `No bootable device`;
//! - values the fixtures make at random: VMDK digests (qemu-img writes a random CID), the phony
//!   guest's filesystem UUIDs.
//!
//! Each redacted size or count is checked against the files on disk before it is redacted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::guests::{Guest, phony_guest};
use crate::support::*;

/// Keys whose numeric values are measured times.
const TIMED: &[&str] = &[
    "duration",
    "duration_seconds",
    "start_offset",
    "start_offset_seconds",
    "checksum_seconds",
    "seconds",
    "time_to_pass_seconds",
    "total_duration",
    "average_duration",
];

/// Keys whose numeric values are a pinned source's host identity (`input_manifest.sources`).
const PINNED: &[&str] = &["device", "inode"];

fn re(pattern: &str) -> regex_lite::Regex {
    regex_lite::Regex::new(pattern).expect("regex")
}

/// Replaces times by key name and timestamps by form, and the appliance's vCPU count (the host's
/// core count, at most 4) in guestfish's `-set-smp` calls.
fn redact_times(v: &mut Value) {
    let rfc3339 = re(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$");
    fn walk(v: &mut Value, rfc3339: &regex_lite::Regex) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if TIMED.contains(&k.as_str()) && val.is_number() {
                        *val = json!("[DURATION]");
                    } else if PINNED.contains(&k.as_str()) && val.is_number() {
                        *val = json!(format!("[{}]", k.to_uppercase()));
                    } else if k == "sources" {
                        redact_pinned_sizes(val);
                        walk(val, rfc3339);
                    } else if k == "output_space" {
                        redact_free_space(val);
                    } else {
                        walk(val, rfc3339);
                    }
                }
            }
            Value::Array(items) => {
                for i in 1..items.len() {
                    if items[i - 1] == "-set-smp" {
                        items[i] = json!("[APPLIANCE_CPUS]");
                    }
                }
                for item in items {
                    walk(item, rfc3339);
                }
            }
            Value::String(s) if rfc3339.is_match(s) => *v = json!("[TIMESTAMP]"),
            _ => {}
        }
    }
    walk(v, &rfc3339);
}

/// A pinned source's size (`input_manifest.sources`), checked against the file, then redacted:
/// a phony guest's VMDK need not come out the same size on every host.
fn redact_pinned_sizes(sources: &mut Value) {
    for s in sources.as_array_mut().expect("sources is a list") {
        let path = PathBuf::from(s["path"].as_str().expect("path"));
        assert_eq!(
            s["size_bytes"].as_u64(),
            Some(file_size(&path)),
            "{}",
            path.display()
        );
        s["size_bytes"] = json!("[SOURCE_BYTES]");
    }
}

/// The free-space check's host facts (the filesystem the test directory is on, its free bytes,
/// and in a batch what the VMs running beside one had still to write, which depends on timing),
/// checked for sense, then redacted.
fn redact_free_space(checks: &mut Value) {
    for c in checks.as_array_mut().expect("output_space is a list") {
        let fs = PathBuf::from(c["filesystem"].as_str().expect("filesystem"));
        for d in c["directories"].as_array().expect("directories") {
            let d = Path::new(d.as_str().expect("a directory"));
            let real = d.canonicalize().expect("the output directory exists");
            assert!(
                real.starts_with(&fs),
                "{} not on {}",
                d.display(),
                fs.display()
            );
        }
        let (free, promised) = (
            c["free_bytes"].as_u64().expect("free_bytes"),
            c["promised_bytes"].as_u64().expect("promised_bytes"),
        );
        // A test that redacted the measure itself has checked it against qemu-img already.
        let required = match &c["required_bytes"] {
            Value::String(placeholder) => {
                assert!(placeholder.starts_with('['), "{c:#}");
                1
            }
            n => n.as_u64().expect("required_bytes"),
        };
        assert!(required > 0 && required + promised <= free, "{c:#}");
        c["filesystem"] = json!("[FILESYSTEM]");
        c["free_bytes"] = json!("[FREE_BYTES]");
        c["promised_bytes"] = json!("[PROMISED_BYTES]");
    }
}

/// Sets the value at a JSON pointer, which must exist.
fn set(v: &mut Value, pointer: &str, to: Value) {
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} is missing")) = to;
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {v:#}"))
}

/// What the filesystem allocated for an image (qemu-img's `actual-size`, which bytes_read
/// counts for each converted source).
fn allocated(path: &Path) -> u64 {
    let out = run_ok(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(path),
    );
    let info: Value = serde_json::from_slice(&out.stdout).expect("qemu-img info JSON");
    info["actual-size"].as_u64().expect("actual-size")
}

/// The domain XML artifact's size holds the length of the test directory's path, and
/// `bytes_written` with it: both are checked against the files, then redacted. `bytes_read`,
/// when given, is checked and redacted too.
fn redact_sizes(report: &mut Value, bytes_read: Option<u64>) {
    let mut written = 0;
    let mut has_xml = false;
    for a in report["artifacts"]
        .as_array_mut()
        .expect("artifacts")
        .iter_mut()
    {
        let size = a["size_bytes"].as_u64().expect("size_bytes");
        let path = PathBuf::from(a["path"].as_str().expect("path"));
        assert_eq!(size, file_size(&path), "{}", path.display());
        written += size;
        if a["type"] == "libvirt_domain" {
            has_xml = true;
            a["size_bytes"] = json!("[XML_BYTES]");
            a["size_human"] = json!("[XML_SIZE]");
        }
    }
    assert_eq!(u64_at(report, "/pipeline/bytes_written"), written);
    if has_xml {
        set(report, "/pipeline/bytes_written", json!("[BYTES_WRITTEN]"));
    }
    if let Some(expected) = bytes_read {
        assert_eq!(u64_at(report, "/pipeline/bytes_read"), expected);
        set(report, "/pipeline/bytes_read", json!("[BYTES_READ]"));
    }
}

/// The redacted pretty JSON (key order kept), with `exact` replacements made first.
fn golden_text(v: &Value, dir: &TestDir, exact: &[(String, &str)]) -> String {
    let mut v = v.clone();
    redact_times(&mut v);
    let mut s = serde_json::to_string_pretty(&v).expect("json");
    for (from, to) in exact {
        assert!(s.contains(from.as_str()), "{from} is not in the report");
        s = s.replace(from.as_str(), to);
    }
    s = s.replace(&dir.path().display().to_string(), "[TMP]");
    let binary = hyper2kvm().get_program().to_string_lossy().into_owned();
    s = s.replace(&binary, "[HYPER2KVM]");
    for (tool, name) in [
        ("qemu-img", "[QEMU_IMG]"),
        ("qemu-system-x86_64", "[QEMU_SYSTEM]"),
        ("guestfish", "[GUESTFISH]"),
    ] {
        if let Ok(path) = which::which(tool) {
            s = s.replace(&path.display().to_string(), name);
        }
    }
    let tmp = regex_lite::escape(&std::env::temp_dir().display().to_string());
    let rules = [
        (r"--remote=\d+".to_owned(), "--remote=[PID]"),
        (
            format!(r"{tmp}/hyper2kvm-guest-[A-Za-z0-9]+"),
            "[GUEST_SCRATCH]",
        ),
        (
            format!(r"{tmp}/hyper2kvm-boot-test-[A-Za-z0-9]+"),
            "[BOOT_TEST_SCRATCH]",
        ),
        (
            r"\.backup\.hyper2kvm\.\d{8}-\d{6}".to_owned(),
            ".backup.hyper2kvm.[STAMP]",
        ),
        (r"from pid \d+".to_owned(), "from pid [PID]"),
        (DERIVED_UUID.to_owned(), "[DERIVED_UUID]"),
        (r"after \d+(\.\d+)? s\b".to_owned(), "after [SECONDS] s"),
        (
            r"SeaBIOS \(version [^)]*\)".to_owned(),
            "SeaBIOS (version [SEABIOS_VERSION])",
        ),
        // The boot test matches the console's unfinished last line too, and reads the console
        // while SeaBIOS writes it: the decision, and the tail kept after it, may come before
        // or after the final period.
        (
            r"No bootable device\.?".to_owned(),
            "No bootable device[.?]",
        ),
    ];
    for (pattern, to) in rules {
        s = re(&pattern).replace_all(&s, to).into_owned();
    }
    s.push('\n');
    s
}

fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn show(r: &Run) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// Two disks of a VM: a streamOptimized VMDK (boot) and a VHDX (data), with [`PATTERN`].
fn two_disks(dir: &TestDir) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    let boot = dir.join("disks/web01-boot.vmdk");
    make_image(&boot, "vmdk", Some("subformat=streamOptimized"));
    let data = dir.join("disks/web01-data.vhdx");
    make_image(&data, "vhdx", None);
    (boot, data)
}

/// A profile-free manifest: inspect, compressed qcow2 convert, validate with compare, the
/// domain written; the boot disk carries `checksum`.
fn two_disk_manifest(dir: &TestDir, checksum: &str, hooks: Option<Value>) -> PathBuf {
    let (boot, data) = (
        dir.join("disks/web01-boot.vmdk"),
        dir.join("disks/web01-data.vhdx"),
    );
    let mut m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_id": "vm-1042", "vm_name": "web01"},
        "vm": {"firmware": "bios", "os_hint": "linux"},
        "disks": [
            {"id": "web01-boot", "source_format": "vmdk", "bytes": file_size(&boot),
             "local_path": "disks/web01-boot.vmdk", "checksum": checksum,
             "boot_order_hint": 0, "disk_type": "boot"},
            {"id": "web01-data", "source_format": "vhdx", "bytes": file_size(&data),
             "local_path": "disks/web01-data.vhdx", "boot_order_hint": 1, "disk_type": "data"}
        ],
        "pipeline": {
            "inspect": {"enabled": true},
            "convert": {"enabled": true, "compress": true},
            "validate": {"enabled": true, "check_image_integrity": true}
        },
        "output": {"format": "qcow2"}
    });
    if let Some(h) = hooks {
        m["hooks"] = h;
    }
    let path = dir.join("web01.json");
    write_json(&path, &m);
    path
}

/// One VM, two disks (one with a correct checksum): inspect, convert to compressed qcow2,
/// validate with compare, and the libvirt domain.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn golden_convert_report() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let (boot, data) = two_disks(&dir);
    let digest = sha256(&boot);
    let manifest = two_disk_manifest(&dir, &digest, None);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let out = dir.join("output");
    assert_eq!(
        tree(&out),
        [
            "report.html",
            "report.json",
            "web01-boot.qcow2",
            "web01-data.qcow2",
            "web01.xml"
        ]
    );
    let mut report = read_json(&out.join("report.json"));
    redact_sizes(
        &mut report,
        Some(file_size(&boot) + allocated(&boot) + allocated(&data)),
    );
    snapshot(
        "golden_convert_report",
        &golden_text(&report, &dir, &[(digest, "sha256:[WEB01_BOOT_SHA256]")]),
    );
}

/// A checksum that does not match, with extraction hooks: `post_extraction` makes the checksums
/// be verified before anything else, so the VM fails at load_manifest after only the
/// `pre_extraction` hook ran.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn golden_failed_checksum_report() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let (boot, _) = two_disks(&dir);
    let digest = sha256(&boot);
    let hook = dir.write(
        "hooks/note.sh",
        "#!/bin/sh\necho \"$1 $2\"\necho 'hook ran' >&2\nexit 0\n",
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let args = json!(["{{ stage }}", "{{ vm_name }}"]);
    let manifest = two_disk_manifest(
        &dir,
        &format!("sha256:{}", "0123456789abcdef".repeat(4)),
        Some(json!({
            "pre_extraction": [{"type": "script", "path": "hooks/note.sh", "args": args}],
            "post_extraction": [{"type": "script", "path": "hooks/note.sh", "args": args}]
        })),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    let out = dir.join("output");
    assert_eq!(
        tree(&out),
        ["report.html", "report.json"],
        "nothing converted"
    );
    let mut report = read_json(&out.join("report.json"));
    redact_sizes(&mut report, None);
    snapshot(
        "golden_failed_checksum_report",
        &golden_text(&report, &dir, &[(digest, "sha256:[WEB01_BOOT_SHA256]")]),
    );
}

/// The UUID of the filesystem (or swap area) at `offset` bytes into a raw image.
fn uuid_at(raw: &Path, offset: u64) -> String {
    let out = run_ok(
        Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "UUID", "-O", &offset.to_string()])
            .arg(raw),
    );
    let uuid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(uuid.len(), 36, "{uuid:?}");
    uuid
}

/// `debugfs` on the root filesystem of a phony guest (sda1, at sector 2048 of its raw image).
fn debugfs(raw: &Path, write: bool, request: &str) -> String {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let out = run_ok(cmd.args(["-R", request]).arg(format!(
        "{}?offset={}",
        raw.display(),
        2048 * 512
    )));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The phony Debian guest as a streamOptimized VMDK, with the root's and swap's UUIDs. Its
/// fstab names the absent data disk `/dev/disk/by-label/data` instead of `/dev/sdb1`:
/// libguestfs resolves a guest's `/dev/sdb1` through the appliance's kernel disk names, which
/// its SCSI scan hands out in either order, so that line came back as the boot disk's
/// `/dev/sda1` in some runs. The by-label name reaches the same "no disk of this VM holds it"
/// path every time.
fn debian_source(dir: &TestDir) -> (PathBuf, String, String) {
    let raw = dir.join("debian.raw");
    phony_guest(Guest::Debian, &raw);
    let fstab = debugfs(&raw, false, "cat /etc/fstab");
    let edited = fstab.replace("\n/dev/sdb1  /data  ", "\n/dev/disk/by-label/data  /data  ");
    assert_ne!(edited, fstab, "the phony guest's fstab changed: {fstab}");
    let local = dir.write("fstab", &edited);
    debugfs(&raw, true, "rm /etc/fstab");
    debugfs(&raw, true, &format!("write {} /etc/fstab", local.display()));
    assert_eq!(debugfs(&raw, false, "cat /etc/fstab"), edited);
    // guests.rs's layout: sda1 (ext4 root) at sector 2048, sda2 (swap) at sector 917504.
    // The cached guest's UUIDs were made at random when it was built.
    let root = uuid_at(&raw, 2048 * 512);
    let swap = uuid_at(&raw, 917_504 * 512);
    let src = dir.join("debian.vmdk");
    raw_to_stream_optimized(&raw, &src);
    (src, root, swap)
}

/// The phony Debian guest as a VMware-style VMDK through the production profile (with VMware
/// tools removal): inspect with guest info, fix in an overlay, convert, validate, domain.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "guestfish",
        missing_tool = "blkid",
        missing_tool = "debugfs"
    ),
    ignore = "needs qemu-img, guestfish, blkid and debugfs (install: scripts/install-deps.sh full)"
)]
fn golden_guest_fix_report() {
    if !["qemu-img", "guestfish", "blkid", "debugfs"]
        .iter()
        .all(|t| require_tool(t))
    {
        return;
    }
    let dir = TestDir::new();
    let (src, root, swap) = debian_source(&dir);
    let manifest = dir.write(
        "guest.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: guest}}\nprofile: production\nprofile_overrides:\n  pipeline:\n    fix: {{remove_vmware_tools: true}}\ndisks:\n  - {{id: boot, source_format: vmdk, bytes: {}, local_path: debian.vmdk, boot_order_hint: 0, disk_type: boot}}\n",
            file_size(&src)
        ),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}", show(&r));
    let out = dir.join("output");
    assert_eq!(
        tree(&out),
        ["boot.qcow2", "guest.xml", "report.html", "report.json"]
    );
    let mut report = read_json(&out.join("report.json"));
    // The source VMDK compresses a guest whose UUIDs and inode times were made when the cached
    // guest was built, so its size moves with each new cache by a grain or two.
    let source_bytes = file_size(&src);
    for p in [
        "/pipeline/stages/inspect/result/disks/0/expected_bytes",
        "/pipeline/stages/inspect/result/disks/0/actual_bytes",
    ] {
        assert_eq!(u64_at(&report, p), source_bytes, "{p}");
        set(&mut report, p, json!("[VMDK_BYTES]"));
    }
    set(
        &mut report,
        "/pipeline/stages/inspect/result/disks/0/size_human",
        json!("[VMDK_SIZE]"),
    );
    // What the free-space check measured follows the source's allocation, so it moves the same
    // way: checked against qemu-img itself.
    let measured = run_ok(
        Command::new("qemu-img")
            .args(["measure", "--output=json", "-f", "vmdk", "-O", "qcow2"])
            .arg(&src),
    );
    let measured: Value = serde_json::from_slice(&measured.stdout).expect("measure JSON");
    let p = "/pipeline/stages/load_manifest/result/output_space/0/required_bytes";
    assert_eq!(Some(u64_at(&report, p)), measured["required"].as_u64());
    set(&mut report, p, json!("[MEASURED_BYTES]"));
    // The source converted is the repaired overlay, gone after the run: its allocation is
    // whatever the repair wrote.
    let read = u64_at(&report, "/pipeline/bytes_read");
    assert!(read > 0);
    redact_sizes(&mut report, Some(read));
    // The repaired guest's files hold inode times and backup stamps, so its compressed size
    // moves with them.
    let size = u64_at(
        &report,
        "/pipeline/stages/convert/result/converted_disks/0/output_size_bytes",
    );
    assert_eq!(size, file_size(&out.join("boot.qcow2")));
    for p in [
        "/pipeline/stages/convert/result/converted_disks/0/output_size_bytes",
        "/artifacts/0/size_bytes",
    ] {
        set(&mut report, p, json!("[QCOW2_BYTES]"));
    }
    for p in [
        "/pipeline/stages/convert/result/converted_disks/0/output_size_human",
        "/artifacts/0/size_human",
    ] {
        set(&mut report, p, json!("[QCOW2_SIZE]"));
    }
    snapshot(
        "golden_guest_fix_report",
        &golden_text(
            &report,
            &dir,
            &[(root, "[ROOT-UUID]"), (swap, "[SWAP-UUID]")],
        ),
    );
}

/// A blank 64 MiB raw disk with the boot test on: SeaBIOS finds nothing to boot, validate fails
/// and its result keeps the boot test's outcome.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-system-x86_64"),
    ignore = "needs qemu-img and qemu-system-x86_64 (install: scripts/install-deps.sh full)"
)]
fn golden_failed_boot_test_report() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let dir = TestDir::new();
    let disk = dir.join("blank.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("64M"),
    );
    // The firmware decides in well under a second; the timeout only bounds a stuck qemu.
    let manifest = dir.write(
        "blank.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: local, vm_name: blank}}\nvm: {{firmware: bios}}\npipeline:\n  convert: {{enabled: true}}\n  validate:\n    enabled: true\n    boot_test: {{enabled: true, timeout: 60, memory_mb: 256}}\ndisks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: blank.raw}}\n",
            file_size(&disk)
        ),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}", show(&r));
    let out = dir.join("output");
    assert_eq!(
        tree(&out),
        [
            "blank.boot-test-console.log",
            "boot.qcow2",
            "report.html",
            "report.json"
        ]
    );
    let mut report = read_json(&out.join("report.json"));
    redact_sizes(&mut report, Some(allocated(&disk)));
    let bt = "/pipeline/stages/validate/result/boot_test";
    assert_eq!(
        report.pointer(&format!("{bt}/reason")),
        Some(&json!("no_bootable_device"))
    );
    // Why KVM was or was not used is the host's story (here: the probe's qemu error).
    set(
        &mut report,
        &format!("{bt}/accel_reason"),
        json!("[ACCEL_REASON]"),
    );
    snapshot(
        "golden_failed_boot_test_report",
        &golden_text(&report, &dir, &[]),
    );
}

/// A batch of three VMs, two at a time, one failing at inspect (a qcow2 listed as vmdk):
/// batch_report.json, batch_summary.txt and the failed VM's report.json.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn golden_batch_report() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    // (vm, driver, create options, manifest format, vm section). db01 leaves memory and vCPUs
    // unset, for a planning warning.
    let vms = [
        (
            "app01",
            "vmdk",
            Some("subformat=streamOptimized"),
            "vmdk",
            "{firmware: bios, cpu: 2, mem_gb: 4}",
        ),
        ("db01", "qcow2", None, "qcow2", "{firmware: bios}"),
        ("web01", "qcow2", None, "vmdk", "{cpu: 1, mem_gb: 1}"),
    ];
    let mut entries = Vec::new();
    let mut sources = Vec::new();
    for (name, driver, opts, format, vm) in vms {
        let disk = dir.join(&format!("disks/{name}.img"));
        make_image(&disk, driver, opts);
        dir.write(
            &format!("vms/{name}.yaml"),
            &format!(
                "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: {name}}}\nvm: {vm}\ndisks:\n  - {{id: {name}-disk0, source_format: {format}, bytes: {}, local_path: ../disks/{name}.img}}\n",
                file_size(&disk)
            ),
        );
        entries.push(json!({"manifest": format!("vms/{name}.yaml"), "id": name}));
        sources.push(disk);
    }
    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &json!({
            "batch_version": "1.0",
            "batch_metadata": {"batch_id": "golden-wave", "parallel_limit": 2, "continue_on_error": true},
            "shared_config": {
                "output_directory": "converted",
                "pipeline": {
                    "inspect": {"enabled": true},
                    "convert": {"enabled": true, "compress": true},
                    "validate": {"enabled": true}
                }
            },
            "vms": entries,
        }),
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch).args([
        "--batch-parallel",
        "2",
        "--progress",
        "none",
    ]));
    assert_eq!(r.code, Some(3), "{}", show(&r));
    let out = dir.join("converted");
    let mut report = read_json(&out.join("batch_report.json"));

    let mut read_total = 0;
    let mut written_total = 0;
    for (i, (name, ..)) in vms.iter().enumerate() {
        let vm = &mut report["vm_results"][i];
        assert_eq!(vm["vm_id"], *name);
        // The batch embeds each VM's report.json as it was written.
        let file = read_json(&out.join(format!("{name}/report.json")));
        assert_eq!(vm["pipeline_report"], file, "{name}");
        let succeeded = vm["status"] == "succeeded";
        let read = if succeeded { allocated(&sources[i]) } else { 0 };
        read_total += read;
        redact_sizes(&mut vm["pipeline_report"], succeeded.then_some(read));
        assert_eq!(u64_at(vm, "/bytes_read"), read);
        let mut written = 0;
        for a in vm["artifacts"].as_array_mut().expect("artifacts") {
            let size = a["size_bytes"].as_u64().expect("size_bytes");
            let path = PathBuf::from(a["path"].as_str().expect("path"));
            assert_eq!(size, file_size(&path), "{}", path.display());
            written += size;
            if path.extension().is_some_and(|e| e == "xml") {
                a["size_bytes"] = json!("[XML_BYTES]");
            }
        }
        assert_eq!(u64_at(vm, "/bytes_written"), written);
        written_total += written;
        if succeeded {
            vm["bytes_read"] = json!("[BYTES_READ]");
            vm["bytes_written"] = json!("[BYTES_WRITTEN]");
        }
        // A hash over the manifest's absolute path.
        let fp = vm["fingerprint"].as_str().expect("fingerprint");
        assert!(
            fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
            "{fp}"
        );
        vm["fingerprint"] = json!("[FINGERPRINT]");
        // Which of the two workers took a VM is a matter of timing.
        assert!(u64_at(vm, "/slot") < 2, "{vm:#}");
        vm["slot"] = json!("[SLOT]");
    }
    assert_eq!(u64_at(&report, "/batch/bytes_read"), read_total);
    assert_eq!(u64_at(&report, "/batch/bytes_written"), written_total);
    set(&mut report, "/batch/bytes_read", json!("[BYTES_READ]"));
    set(
        &mut report,
        "/batch/bytes_written",
        json!("[BYTES_WRITTEN]"),
    );
    // Which of the two good VMs was faster is a matter of timing.
    for k in ["fastest_conversion", "slowest_conversion"] {
        let p = format!("/aggregate_stats/{k}/vm_id");
        let id = report.pointer(&p).and_then(Value::as_str).expect("vm_id");
        assert!(["app01", "db01"].contains(&id), "{k}: {id}");
        set(&mut report, &p, json!("[VM]"));
    }
    snapshot("golden_batch_report", &golden_text(&report, &dir, &[]));

    let summary = std::fs::read_to_string(out.join("batch_summary.txt")).expect("summary");
    let summary = re(r"Timestamp: \S+").replace_all(&summary, "Timestamp: [TIMESTAMP]");
    let summary = re(r"(?m)^  (Fastest|Slowest): \S+").replace_all(&summary, "  $1: [VM]");
    snapshot("golden_batch_summary", &redact(&summary, &dir));

    let mut failed = read_json(&out.join("web01/report.json"));
    redact_sizes(&mut failed, None);
    snapshot(
        "golden_batch_failed_vm_report",
        &golden_text(&failed, &dir, &[]),
    );
}
