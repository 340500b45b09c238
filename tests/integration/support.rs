//! Helpers shared by the integration tests: temp dirs, real images made with qemu-img and
//! qemu-io, manifests, running the binary, and redaction for snapshots.
//!
//! A test that needs an external tool, root, OVMF or time says so twice. At build time,
//! `#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img (install: ...)")]` (or
//! `not_root`, `missing_ovmf`, `skip_slow_tests`; build.rs sets them) makes it ignored, so
//! nextest reports it as SKIP and cargo test as `ignored, <reason>` instead of as passed: libtest
//! cannot skip a test once it runs. At run time, [`require_tool`], [`require_root`] and
//! [`skip_slow`] are the guard for CI: under `CI=true` build.rs declares everything present, and
//! a missing tool panics there instead. A new test that needs a tool takes both: the
//! `require_*` call alone would pass, silently, wherever the tool is missing. Python's jsonschema
//! module, which validates files against `schemas/`, is such a tool: `missing_jsonschema` and
//! [`require_jsonschema`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

/// Whether a tool a test needs is present. Missing: fail under CI (`CI=true`), where every tool
/// must have been installed by `.ci/run`; elsewhere build.rs has normally had the test ignored
/// already, and this returns false with a message (a test run with `--include-ignored`).
pub fn require_tool(tool: &str) -> bool {
    if which::which(tool).is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{tool} is required by this test and missing under CI: .ci/run must install it");
    }
    eprintln!("SKIPPED: {tool} is not installed (run scripts/install-deps.sh)");
    false
}

/// Tests that mount filesystems need root; same rule as tools (`not_root` at build time).
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("this test needs root under CI");
    }
    eprintln!("SKIPPED: this test needs root");
    false
}

/// A per-test directory, removed at the end of the test.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("h2k-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A region of known bytes written into a test image.
pub const PATTERN: &[(u8, &str, &str)] = &[
    (0xa1, "0", "1M"),
    (0x5c, "7M", "2M"),
    (0xe7, "30M", "512k"),
    (0x3d, "63M", "1M"),
];

/// Creates a 64 MiB image of `driver` with `opts` (e.g. `subformat=streamOptimized`) and writes
/// [`PATTERN`] into it with qemu-io.
pub fn make_image(path: &Path, driver: &str, opts: Option<&str>) {
    let mut create = Command::new("qemu-img");
    create.args(["create", "-q", "-f", driver]);
    if let Some(o) = opts {
        create.args(["-o", o]);
    }
    run_ok(create.arg(path).arg("64M"));
    let mut io = Command::new("qemu-io");
    io.args(["-f", driver]);
    for (byte, off, len) in PATTERN {
        io.args(["-c", &format!("write -P {byte:#x} {off} {len}")]);
    }
    run_ok(io.arg(path));
}

/// Converts a raw image into a streamOptimized VMDK (what vSphere exports) and removes the raw
/// file.
pub fn raw_to_stream_optimized(raw: &Path, vmdk: &Path) {
    run_ok(
        Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
            ])
            .arg(raw)
            .arg(vmdk),
    );
    std::fs::remove_file(raw).expect("rm raw");
}

/// `qemu-img compare`: true when the guest-visible content is identical.
pub fn identical(a: &Path, a_driver: &str, b: &Path, b_driver: &str) -> bool {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", a_driver, "-F", b_driver])
        .arg(a)
        .arg(b)
        .output()
        .expect("spawn qemu-img");
    out.status.code() == Some(0)
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

pub fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).expect("read");
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One disk entry for a manifest.
pub fn disk(id: &str, format: &str, path: &Path) -> Value {
    serde_json::json!({
        "id": id,
        "source_format": format,
        "bytes": file_size(path),
        "local_path": path,
    })
}

/// A manifest converting `disks` to `format` (optionally compressed), with validation on.
pub fn convert_manifest(disks: Vec<Value>, format: &str, compress: bool) -> Value {
    serde_json::json!({
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_name": "testvm"},
        "disks": disks,
        "pipeline": {
            "inspect": {"enabled": true},
            "convert": {"enabled": true, "compress": compress},
            "validate": {"enabled": true, "check_image_integrity": true}
        },
        "output": {"format": format}
    })
}

pub fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).expect("json")).expect("write");
}

/// The binary under test, with a clean environment for what it reads.
pub fn hyper2kvm() -> Command {
    let mut cmd = Command::cargo_bin("hyper2kvm").expect("binary");
    cmd.env_remove("RUST_LOG");
    cmd
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("spawn hyper2kvm");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads a JSON file. A `report.json` or `batch_report.json` is first validated against its
/// schema (schemas/report.schema.json, schemas/batch-report.schema.json), so every report a test
/// reads is also a test of the published schema.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read report");
    let value = serde_json::from_str(&text).expect("report is JSON");
    let schema = match path.file_name().and_then(|n| n.to_str()) {
        Some("report.json") => Some("report"),
        Some("batch_report.json") => Some("batch-report"),
        _ => None,
    };
    if let Some(name) = schema
        && reports_are_validated()
    {
        let errors = schema_errors(&schema_path(name), &text);
        assert!(
            errors.is_empty(),
            "{} does not match schemas/{name}.schema.json:\n{}\n{text}",
            path.display(),
            errors.join("\n")
        );
    }
    value
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `python3` on PATH can import jsonschema, asked once per test process.
fn jsonschema_present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRESENT.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import jsonschema"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Python's jsonschema module, the schemas' validator, as [`require_tool`] for a tool: build.rs
/// sets `missing_jsonschema` where it is missing, and under CI it must be there.
pub fn require_jsonschema() -> bool {
    if jsonschema_present() {
        return true;
    }
    assert!(
        !under_ci(),
        "python3 with the jsonschema module is required under CI: .ci/run must install it \
         (scripts/install-deps.sh full)"
    );
    eprintln!("SKIPPED: python3 -c 'import jsonschema' failed (run scripts/install-deps.sh full)");
    false
}

/// Whether [`read_json`] validates reports: always under CI, elsewhere when jsonschema is here
/// (a test that only reads a report is not ignored for want of it; it says so once).
fn reports_are_validated() -> bool {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if jsonschema_present() {
        return true;
    }
    assert!(
        !under_ci(),
        "python3 with the jsonschema module is required under CI to validate reports"
    );
    WARNED.call_once(|| {
        eprintln!(
            "NOTE: reports are not validated against their schemas: python3 lacks jsonschema"
        );
    });
    false
}

/// `schemas/<name>.schema.json` in the checkout.
pub fn schema_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{name}.schema.json"))
}

/// Validates `text` against the schema file with Python's jsonschema (draft 2020-12, the schema
/// itself checked first); returns the errors, one line each (`$.path: message`). `text` is one
/// JSON document, or JSON lines (the event stream), whose errors start with `line N: `.
pub fn schema_errors(schema: &Path, text: &str) -> Vec<String> {
    let dir = TestDir::new();
    let input = dir.write("document.json", text);
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        v = jsonschema.Draft202012Validator(schema)\n\
        text = open(sys.argv[2]).read()\n\
        try:\n\
        \x20   docs = [('', json.loads(text))]\n\
        except ValueError:\n\
        \x20   docs = [(f'line {n}: ', json.loads(l)) for n, l in enumerate(text.splitlines(), 1) if l.strip()]\n\
        for where, doc in docs:\n\
        \x20   for e in sorted(v.iter_errors(doc), key=lambda e: e.json_path):\n\
        \x20       print(f'{where}{e.json_path}: {e.message}')\n";
    let out = run_ok(
        Command::new("python3")
            .args(["-c", script])
            .arg(schema)
            .arg(&input),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts that `value` is valid against `schemas/<name>.schema.json`.
pub fn assert_matches_schema(name: &str, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("json");
    let errors = schema_errors(&schema_path(name), &text);
    assert!(
        errors.is_empty(),
        "not valid against schemas/{name}.schema.json:\n{}\n{text}",
        errors.join("\n")
    );
}

/// Every file under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .expect("under base")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Replaces the test directory and other run-specific text with stable placeholders.
pub fn redact(text: &str, dir: &TestDir) -> String {
    let mut s = text.replace(&dir.path().display().to_string(), "[TMP]");
    if let Ok(q) = which::which("qemu-img") {
        s = s.replace(&q.display().to_string(), "[QEMU_IMG]");
    }
    let re_duration = regex_lite::Regex::new(r"\d+\.\d+s\b").expect("regex");
    s = re_duration.replace_all(&s, "[DURATION]").into_owned();
    let re_stamp =
        regex_lite::Regex::new(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex");
    s = re_stamp.replace_all(&s, "[TIME]").into_owned();
    let re_digest = regex_lite::Regex::new(r"sha256:[0-9a-f]{64}").expect("regex");
    s = re_digest.replace_all(&s, "sha256:[DIGEST]").into_owned();
    let re_uuid = regex_lite::Regex::new(DERIVED_UUID).expect("regex");
    re_uuid.replace_all(&s, "[DERIVED_UUID]").into_owned()
}

/// A domain UUID hyper2kvm derived (version 8): it follows from the VM's identity, which holds
/// the boot disk's path (the test directory) when the source has no UUID. A source's own UUID
/// (another version) is kept.
pub const DERIVED_UUID: &str =
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\b";

/// A 1 GiB file of random bytes (slow to compress, for interrupting a conversion), cached
/// outside the checkout across test runs.
pub fn random_gib() -> PathBuf {
    let cache = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/hyper2kvm-test/random-1g-v1");
    let path = cache.join("random.raw");
    if path.is_file() && file_size(&path) == 1 << 30 {
        return path;
    }
    std::fs::create_dir_all(&cache).expect("mkdir cache");
    let tmp = cache.join(format!("random.raw.{}", std::process::id()));
    run_ok(
        Command::new("head")
            .args(["-c", "1G", "/dev/urandom"])
            .stdout(std::fs::File::create(&tmp).expect("create")),
    );
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Snapshot settings that keep golden files next to the libvirt fixtures, named after the
/// fixture (`tests/fixtures/libvirt/golden/<name>.snap`).
pub fn golden_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../fixtures/libvirt/golden");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

/// Whether libvirt's own checkers are here (virt-xml-validate needs xmllint from libxml2-utils).
pub fn require_libvirt_tools() -> bool {
    require_tool("virt-xml-validate") && require_tool("xmllint") && require_tool("virsh")
}

/// Validates a domain XML against libvirt's schema and defines it on the test driver (no
/// daemon; the definition lasts this one connection). Returns `virsh dumpxml` of the result.
pub fn validate_and_define(domain_xml: &Path, name: &str) -> String {
    let v = Command::new("virt-xml-validate")
        .arg(domain_xml)
        .arg("domain")
        .output()
        .expect("spawn virt-xml-validate");
    assert!(
        v.status.success(),
        "virt-xml-validate rejected {}:\n{}{}",
        domain_xml.display(),
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let script = format!(
        "define {}; dumpxml {name}",
        exec_quote(&domain_xml.display().to_string())
    );
    let d = Command::new("virsh")
        .args(["-q", "-c", "test:///default", &script])
        .output()
        .expect("spawn virsh");
    assert!(
        d.status.success(),
        "virsh define refused {}:\n{}",
        domain_xml.display(),
        String::from_utf8_lossy(&d.stderr)
    );
    String::from_utf8_lossy(&d.stdout).into_owned()
}

fn exec_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A loop device over a file, detached when dropped.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(file: &Path) -> Self {
        let out = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(file));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Self { path }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Whether slow end-to-end tests are skipped (`make test-fast` sets HYPER2KVM_SKIP_SLOW=1;
/// build.rs turns it into `skip_slow_tests`, so this only matters for a test binary built
/// without it and run with it).
pub fn skip_slow() -> bool {
    if std::env::var("HYPER2KVM_SKIP_SLOW").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: a slow end-to-end test (HYPER2KVM_SKIP_SLOW=1)");
        return true;
    }
    false
}

/// The real Debian 12 guest of `scripts/build-test-guest.sh` (a streamOptimized VMDK whose fstab
/// and grub.cfg say /dev/sda1), built by that script on first use and cached outside the
/// checkout; the demo and benchmarks call the same script, so they share the cache.
/// `None` when a tool or root is missing (a failure under CI). Its tests are ignored at build
/// time on the same conditions: `not_root` and a `missing_tool` for each tool listed here.
pub fn debian_guest() -> Option<PathBuf> {
    debian_guest_layout("basic")
}

/// A guest of the family `scripts/build-test-guest.sh LAYOUT` builds (see the script for the
/// layouts), cached like [`debian_guest`].
pub fn debian_guest_layout(layout: &str) -> Option<PathBuf> {
    let tools = [
        "debootstrap",
        "qemu-img",
        "sfdisk",
        "mkfs.ext4",
        "guestfish",
        "qemu-system-x86_64",
    ];
    if !require_root() || !tools.iter().all(|t| require_tool(t)) {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-guest.sh");
    let out = Command::new(&script)
        .arg(layout)
        .output()
        .expect("run build-test-guest.sh");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the path")
            .trim(),
    );
    assert!(path.is_absolute() && path.is_file(), "{stdout}");
    Some(path)
}

/// Processes whose command line mentions `needle` (a path only the calling test uses).
pub fn processes_naming(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// A real libvirtd (qemu driver, `qemu:///system`) for the tests that define domains on one.
///
/// There is no systemd here, so the tests start `virtlogd` and `libvirtd` themselves, once for
/// all the tests that use them at the same time, and the last one out stops them: each user
/// holds a shared `flock` on a lock file for as long as it lives; whoever starts the daemons
/// writes their pids next to it; on drop a user that can take the lock exclusively (no one else
/// uses the daemons) stops the daemons the tests started. A libvirtd that was already running
/// (a developer's own) is used and never stopped.
pub struct Libvirtd {
    lock: std::fs::File,
}

const LIBVIRTD_LOCK: &str = "/run/hyper2kvm-test-libvirtd.lock";
const LIBVIRTD_PIDS: &str = "/run/hyper2kvm-test-libvirtd.pids";
pub const SYSTEM_URI: &str = "qemu:///system";

impl Libvirtd {
    /// The daemon, started when needed; `None` (with the reason printed) where the test cannot
    /// run: not root, or libvirt missing (a failure under CI, like every missing tool).
    pub fn get() -> Option<Libvirtd> {
        if !(require_root()
            && require_tool("libvirtd")
            && require_tool("virtlogd")
            && require_tool("virsh"))
        {
            return None;
        }
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LIBVIRTD_LOCK)
            .expect("open the libvirtd lock file");
        lock(file.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive).expect("lock libvirtd");
        if !answers() {
            let scratch = Path::new("/run");
            let mut pids = Vec::new();
            for (daemon, pid_file) in [
                ("virtlogd", scratch.join("hyper2kvm-test-virtlogd.pid")),
                ("libvirtd", scratch.join("hyper2kvm-test-libvirtd.pid")),
            ] {
                let _ = std::fs::remove_file(&pid_file);
                run_ok(
                    Command::new(daemon)
                        .arg("--daemon")
                        .arg("--pid-file")
                        .arg(&pid_file),
                );
                let started = std::time::Instant::now();
                let pid = loop {
                    if let Some(pid) = std::fs::read_to_string(&pid_file)
                        .ok()
                        .and_then(|t| t.trim().parse::<i32>().ok())
                    {
                        break pid;
                    }
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(30),
                        "{daemon} wrote no pid file"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(100));
                };
                pids.push(pid.to_string());
            }
            std::fs::write(LIBVIRTD_PIDS, pids.join("\n")).expect("write the daemons' pids");
            let started = std::time::Instant::now();
            while !answers() {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "libvirtd did not answer on {SYSTEM_URI} within 60 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        // Downgraded: other tests may use the daemons now, and no one stops them under us.
        lock(file.as_raw_fd(), nix::fcntl::FlockArg::LockShared).expect("share the lock");
        Some(Libvirtd { lock: file })
    }

    /// `virsh -c qemu:///system <args>`, which must succeed; its stdout.
    pub fn virsh(&self, args: &[&str]) -> String {
        let out = run_ok(
            Command::new("virsh")
                .args(["-q", "-c", SYSTEM_URI])
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `virsh …` whatever it returns.
    pub fn try_virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .args(["-q", "-c", SYSTEM_URI])
            .args(args)
            .output()
            .expect("spawn virsh")
    }

    /// Removes a test's domain and pool (whatever state they are in).
    pub fn forget(&self, domain: &str, pool: Option<&str>) {
        let _ = self.try_virsh(&["destroy", domain]);
        let _ = self.try_virsh(&["undefine", "--nvram", "--snapshots-metadata", domain]);
        if let Some(p) = pool {
            let _ = self.try_virsh(&["pool-destroy", p]);
            let _ = self.try_virsh(&["pool-undefine", p]);
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let alone = lock(
            self.lock.as_raw_fd(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        );
        if alone.is_ok()
            && let Ok(pids) = std::fs::read_to_string(LIBVIRTD_PIDS)
        {
            // libvirtd first, then virtlogd.
            for pid in pids
                .lines()
                .rev()
                .filter_map(|p| p.trim().parse::<i32>().ok())
            {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let started = std::time::Instant::now();
                while nix::sys::signal::kill(pid, None).is_ok()
                    && started.elapsed() < std::time::Duration::from_secs(30)
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            let _ = std::fs::remove_file(LIBVIRTD_PIDS);
        }
    }
}

/// Whether a libvirtd answers on `qemu:///system`.
fn answers() -> bool {
    Command::new("virsh")
        .args(["-q", "-c", SYSTEM_URI, "uri"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `flock(2)` on a descriptor we keep (nix's `Flock` owns the file, which a lock that changes
/// from exclusive to shared cannot use).
#[allow(deprecated)]
fn lock(fd: std::os::fd::RawFd, arg: nix::fcntl::FlockArg) -> nix::Result<()> {
    nix::fcntl::flock(fd, arg)
}
