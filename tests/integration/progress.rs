//! What the operator sees while a run goes: the live display on a real terminal (a pty read
//! through a terminal emulator), timestamped lines, the JSON event stream against its schema,
//! failures explained where they happen, and the log file.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A batch of two small VMs: `good` converts; `bad`'s disk is truncated, so its convert
/// stage's source check fails.
fn two_vm_batch(dir: &TestDir) -> PathBuf {
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    let mut vms = Vec::new();
    for name in ["good", "bad"] {
        let disk = dir.join(&format!("disks/{name}.vmdk"));
        make_image(&disk, "vmdk", Some("subformat=monolithicSparse"));
        if name == "bad" {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&disk)
                .expect("open");
            f.set_len(file_size(&disk) / 2).expect("truncate");
        }
        dir.write(
            &format!("vms/{name}.yaml"),
            &format!(
                "manifest_version: \"1.0\"\nsource: {{vm_name: {name}}}\ndisks:\n  - {{id: {name}-d0, source_format: vmdk, bytes: {}, local_path: ../disks/{name}.vmdk}}\n",
                file_size(&disk)
            ),
        );
        vms.push(json!({"manifest": format!("vms/{name}.yaml"), "id": name}));
    }
    let path = dir.join("batch.json");
    write_json(
        &path,
        &json!({
            "batch_version": "1.0",
            "batch_metadata": {"parallel_limit": 1, "continue_on_error": true},
            "shared_config": {
                "output_directory": "converted",
                "pipeline": {
                    "inspect": {"enabled": true},
                    "convert": {"enabled": true},
                    "validate": {"enabled": true}
                }
            },
            "vms": vms,
        }),
    );
    path
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_jsonschema),
    ignore = "needs qemu-img and python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn the_json_stream_follows_its_schema_and_explains_the_failure() {
    if !require_tool("qemu-img") || !require_jsonschema() {
        return;
    }
    let dir = TestDir::new();
    let batch = two_vm_batch(&dir);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "json"]));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let errors = schema_errors(&schema_path("events"), &r.stdout);
    assert!(errors.is_empty(), "{errors:#?}\n{}", r.stdout);
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout holds only JSON lines"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert_eq!(events[0]["vms_total"], 2);
    let run_id = &events[0]["run"];
    assert!(events.iter().all(|e| &e["run"] == run_id), "one run id");
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "vm_finished")
        .collect();
    assert_eq!(finished.len(), 2);
    let bad = finished
        .iter()
        .find(|e| e["vm"] == "bad")
        .expect("bad finished");
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["code"].as_str().is_some_and(|c| c.ends_with("_failed")),
        "{bad}"
    );
    let report = PathBuf::from(bad["report"].as_str().expect("a report path"));
    assert!(report.is_file(), "the report it names exists: {bad}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "progress" && e["vm"] == "good" && e["activity"] == "convert"),
        "convert progress is streamed"
    );
    let last = events.last().expect("events");
    assert_eq!(
        last["counts"],
        json!({"succeeded": 1, "failed": 1, "interrupted": 0})
    );
    // The summary is for people: on stderr, so stdout stays a stream.
    assert!(r.stderr.contains("Batch Conversion Summary") || r.stderr.contains("SUMMARY"));
    assert!(r.stderr.contains("--batch-resume"), "{}", r.stderr);
}

#[test]
fn lines_say_why_a_vm_failed_when_it_fails_and_how_to_resume() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = two_vm_batch(&dir);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "lines"]));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let stamp = regex_lite::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ").expect("regex");
    for line in r
        .stderr
        .lines()
        .filter(|l| l.contains("] ") || l.contains(" batch: "))
    {
        assert!(stamp.is_match(line), "every line is stamped: {line}");
    }
    let failed = r
        .stderr
        .lines()
        .find(|l| l.contains("[bad] FAILED"))
        .expect("a live failure line");
    insta::assert_snapshot!("live_failure_line", redact(failed, &dir));
    let tally: Vec<String> = r
        .stderr
        .lines()
        .filter(|l| l.contains(" batch: "))
        .map(|l| redact(l, &dir))
        .collect();
    assert_eq!(tally.len(), 2, "{}", r.stderr);
    assert!(
        tally[1].contains("running 0 · done 2 · failed 1 · of 2"),
        "{tally:?}"
    );
    let resume = r.stdout.lines().last().expect("stdout");
    assert!(
        resume.trim_start().ends_with(&format!(
            "--batch-manifest {} --progress lines --batch-resume",
            batch.display()
        )),
        "{}",
        r.stdout
    );
    // And the command it gives works: only the failed VM runs again.
    let again = run(hyper2kvm().arg("--batch-manifest").arg(&batch).args([
        "--progress",
        "lines",
        "--batch-resume",
    ]));
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert!(!again.stderr.contains("[good] started"), "{}", again.stderr);
    assert!(again.stderr.contains("[bad] started"), "{}", again.stderr);
}

#[test]
fn the_log_file_records_each_vm_stage_warning_and_outcome() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = two_vm_batch(&dir);
    let log = dir.join("run.log");
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none", "--log-file"])
        .arg(&log)
        .env("TERM", "xterm-256color"));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains('\x1b'), "no colour codes in a file: {text}");
    for needle in [
        "vm{id=good}:stage{name=convert}: started",
        "vm{id=good}:stage{name=convert}: finished in",
        "vm{id=good}: succeeded in",
        "vm{id=bad}: failed in inspect:",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    // Stage records are for the file: the display already says them on stderr.
    assert!(!r.stderr.contains("stage{name="), "{}", r.stderr);

    let json_log = dir.join("run.jsonl");
    let dir2 = TestDir::new();
    let batch2 = two_vm_batch(&dir2);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch2)
        .args(["--progress", "none", "--log-format", "json", "--log-file"])
        .arg(&json_log));
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let lines: Vec<Value> = std::fs::read_to_string(&json_log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "started"
            && l["span"]["name"] == "stage"
            && l["spans"][0]["id"] == "good"),
        "{lines:#?}"
    );
}

/// PATH with the directory of the binary under test first.
fn search_path() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_hyper2kvm"));
    let mut dirs = vec![bin.parent().expect("bin dir").to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

/// Tall enough for the whole run's output to stay on the screen: the end shows everything
/// that was printed, and nothing left of the bars.
const ROWS: u16 = 60;

/// A pty of 80 columns and [`ROWS`] rows whose output is read into a terminal emulator.
struct Pty {
    screen: Arc<Mutex<vt100::Parser>>,
    child: std::process::Child,
    master: std::fs::File,
}

impl Pty {
    /// Runs `args` (after the binary) as the pty's session leader, so Ctrl-C typed into it
    /// reaches the run as it would from a shell.
    fn spawn(args: &[&std::ffi::OsStr], cwd: &Path) -> Self {
        let size = nix::pty::Winsize {
            ws_row: ROWS,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        let child = std::process::Command::new("setsid")
            .args(["--ctty", "--wait"])
            // Found on PATH, so that the resume command it prints names `hyper2kvm` whatever
            // the target directory.
            .arg("hyper2kvm")
            .env("PATH", search_path())
            .args(args)
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave)
            .spawn()
            .expect("spawn under a pty");
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(ROWS).expect("rows"),
            std::num::NonZeroU16::new(80).expect("cols"),
            0,
        )));
        let (reader, feed) = (master.try_clone().expect("dup"), screen.clone());
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the slave side is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock().expect("screen").process(&buf[..n]);
            }
        });
        Self {
            screen,
            child,
            master,
        }
    }

    /// The screen, row by row (a full-width row is its own line, not wrapped into the next).
    fn contents(&self) -> String {
        let parser = self.screen.lock().expect("screen");
        let rows: Vec<String> = parser.screen().rows(0, 80).collect();
        rows.join("\n")
    }

    /// Waits until the screen shows something `ready` accepts; returns that screen.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let screen = self.contents();
            if ready(&screen) {
                return screen;
            }
            assert!(
                self.child.try_wait().expect("wait").is_none(),
                "the run ended before {what}:\n{screen}"
            );
            assert!(Instant::now() < deadline, "no {what} in 120 s:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Numbers and spinner frames vary from run to run; the shape of the screen does not.
fn shape(screen: &str) -> String {
    let sizes = regex_lite::Regex::new(r"\d+(\.\d+)? (B|KiB|MiB|GiB)\b").expect("regex");
    let times = regex_lite::Regex::new(r"\b(\d+[hm])?\d+[ms]\b").expect("regex");
    let numbers = regex_lite::Regex::new(r"\d+(\.\d+)?").expect("regex");
    let spinner = regex_lite::Regex::new(r"[⠁-⣿]").expect("regex");
    let s = spinner.replace_all(screen, "*");
    let s = sizes.replace_all(&s, "SIZE");
    let s = times.replace_all(&s, "TIME");
    let s = numbers.replace_all(&s, "N");
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bars_on_a_terminal_show_steps_bytes_and_the_batch_and_ctrl_c_leaves_a_clean_screen() {
    if !require_tool("qemu-img") || !require_tool("setsid") {
        return;
    }
    let dir = TestDir::new();
    // `wait`: its pre_extraction hook sleeps (a step that moves no bytes) until Ctrl-C; `slow`:
    // a 1 GiB random disk compressed, slow enough to see its bar and to be interrupted.
    let hook = dir.write("vms/nap.sh", "#!/bin/sh\nsleep 60\n");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let small = dir.join("disks/wait.qcow2");
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    make_image(&small, "qcow2", None);
    dir.write(
        "vms/wait.yaml",
        &format!(
            "manifest_version: \"1.0\"\nhooks:\n  pre_extraction:\n    - {{type: script, path: nap.sh}}\ndisks:\n  - {{id: wait-d0, source_format: qcow2, bytes: {}, local_path: ../disks/wait.qcow2}}\n",
            file_size(&small)
        ),
    );
    let slow = random_gib();
    dir.write(
        "vms/slow.yaml",
        &format!(
            "manifest_version: \"1.0\"\npipeline: {{convert: {{compress: true}}}}\ndisks:\n  - {{id: slow-data, source_format: raw, bytes: {}, local_path: {}}}\n",
            file_size(&slow),
            slow.display()
        ),
    );
    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &json!({
            "batch_version": "1.0",
            "batch_metadata": {"parallel_limit": 2},
            "shared_config": {"output_directory": "converted", "pipeline": {"convert": {"enabled": true}}},
            "vms": [
                {"manifest": "vms/wait.yaml", "id": "wait"},
                {"manifest": "vms/slow.yaml", "id": "slow"},
            ],
        }),
    );
    let mut pty = Pty::spawn(
        &["--batch-manifest".as_ref(), batch.as_os_str()],
        dir.path(),
    );

    let hooks = pty.wait_for("the hook's spinner line", |s| {
        s.lines()
            .any(|l| l.starts_with("wait ") && l.contains("pre_extraction hooks"))
    });
    let line = hooks
        .lines()
        .find(|l| l.starts_with("wait "))
        .expect("wait's line");
    assert!(
        regex_lite::Regex::new(r"^wait +[⠁-⣿] +\d+s pre_extraction hooks")
            .expect("regex")
            .is_match(line),
        "a spinner, the elapsed time and the step: {line:?}"
    );

    // Once bytes have moved, the batch line has an estimate too.
    let bytes = pty.wait_for("slow's byte bar and the batch estimate", |s| {
        s.lines()
            .any(|l| l.contains("convert disk 1/1 slow-data") && l.contains(" eta "))
            && s.lines()
                .any(|l| l.starts_with("batch ") && l.contains(" eta "))
    });
    for l in bytes.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.chars().count() <= 80,
            "each line fits the terminal: {l:?}"
        );
    }
    let bar = bytes
        .lines()
        .find(|l| l.contains("slow-data"))
        .expect("bar");
    assert!(
        bar.starts_with("slow ") && bar.contains("/s eta "),
        "the bar names its VM and disk, with a rate and an ETA, on one line: {bar:?}"
    );
    let batch_line = bytes
        .lines()
        .find(|l| l.starts_with("batch "))
        .expect("the batch line");
    assert!(
        batch_line.contains("of 2") && batch_line.contains("GiB"),
        "{batch_line:?}"
    );
    // The batch line first; the VMs' lines in the order they started, which is a race.
    let mut rows: Vec<String> = shape(&bytes).lines().map(str::to_owned).collect();
    rows[1..].sort();
    insta::assert_snapshot!("bars_mid_run", rows.join("\n"));

    // Ctrl-C, typed into the terminal.
    std::io::Write::write_all(&mut pty.master, b"\x03").expect("type ^C");
    let status = pty.child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(300));
    let end = pty.contents();
    assert!(
        !end.contains(" eta ") && !end.lines().any(|l| l.starts_with("slow ")),
        "no bar is left on the screen:\n{end}"
    );
    assert!(
        end.contains("--batch-resume"),
        "the resume command is shown:\n{end}"
    );
    insta::assert_snapshot!("bars_after_ctrl_c", shape(&redact(&end, &dir)));
}
