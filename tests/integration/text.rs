//! Text for users is part of the product: --help, --dry-run, the run summary and exit codes are
//! snapshot-tested.

use crate::support::*;

#[test]
fn help() {
    let r = run(hyper2kvm().arg("--help"));
    assert_eq!(r.code, Some(0));
    insta::assert_snapshot!(r.stdout);
}

/// `-h` is the summary: one line per option, in the same groups.
#[test]
fn short_help() {
    let r = run(hyper2kvm().arg("-h"));
    assert_eq!(r.code, Some(0));
    insta::assert_snapshot!(r.stdout);
}

fn two_disk_manifest(dir: &TestDir) -> std::path::PathBuf {
    let boot = dir.join("disks/boot.vmdk");
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    make_image(&boot, "vmdk", Some("subformat=streamOptimized"));
    let data = dir.join("disks/data.vhd");
    make_image(&data, "vpc", None);
    dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: vsphere, vm_name: web01}}\nprofile: archive\nprofile_overrides:\n  pipeline: {{fix: {{enabled: false}}, inspect: {{collect_guest_info: false}}}}\ndisks:\n  - {{id: boot, source_format: vmdk, bytes: {}, local_path: disks/boot.vmdk, boot_order_hint: 0, disk_type: boot, checksum: {}}}\n  - {{id: data, source_format: vhd, bytes: 1, local_path: disks/data.vhd, boot_order_hint: 1, disk_type: data}}\n",
            file_size(&boot),
            sha256(&boot)
        ),
    )
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn dry_run_prints_the_plan_and_touches_nothing() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = two_disk_manifest(&dir);
    let before = tree(dir.path());
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(tree(dir.path()), before, "a dry run writes nothing");
    insta::assert_snapshot!(redact(&r.stdout, &dir));
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn run_summary() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = two_disk_manifest(&dir);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "lines"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let sizes = regex_lite::Regex::new(r"qcow2, [0-9.]+ [KMG]iB").expect("regex");
    let stdout = sizes.replace_all(&r.stdout, "qcow2, [SIZE]");
    insta::assert_snapshot!("run_summary_stdout", redact(&stdout, &dir));
    let stage_lines: Vec<&str> = r.stderr.lines().filter(|l| !l.contains('%')).collect();
    insta::assert_snapshot!(
        "run_summary_progress_lines",
        redact(&stage_lines.join("\n"), &dir)
    );
}

/// The documented exit codes, scenario by scenario (docs/exit-codes.md).
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn exit_codes() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let good = dir.join("good.json");
    write_json(
        &good,
        &convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false),
    );
    let failing = dir.join("failing.json");
    let mut m = convert_manifest(vec![disk("d0", "vmdk", &src)], "qcow2", false);
    m["output"]["directory"] = serde_json::json!("failing-out");
    write_json(&failing, &m);
    let invalid = dir.write("invalid.json", r#"{"manifest_version": "1.0"}"#);
    let empty_path = dir.join("no-tools");
    std::fs::create_dir(&empty_path).expect("mkdir");

    let mut rows = Vec::new();
    let mut row = |what: &str, cmd: &mut std::process::Command| {
        let code = run(cmd.arg("--progress").arg("none")).code;
        rows.push(format!("{code:?}\t{what}"));
    };
    row("success", hyper2kvm().arg("--manifest").arg(&good));
    row("VM failed", hyper2kvm().arg("--manifest").arg(&failing));
    row(
        "invalid manifest",
        hyper2kvm().arg("--manifest").arg(&invalid),
    );
    row("usage error", hyper2kvm().arg("--no-such-flag"));
    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &serde_json::json!({"batch_version": "1.0", "shared_config": {"output_directory": "b"},
            "vms": [{"manifest": "good.json", "id": "ok"}, {"manifest": "failing.json", "id": "bad"}]}),
    );
    row(
        "batch with a failed VM",
        hyper2kvm().arg("--batch-manifest").arg(&batch),
    );
    row(
        "missing tool",
        hyper2kvm()
            .arg("--manifest")
            .arg(&good)
            .arg("--overwrite")
            .env("PATH", &empty_path),
    );
    insta::assert_snapshot!(rows.join("\n"));
}

/// `--log-file` keeps an audit trail of every command run, whatever the terminal shows.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn log_file_records_every_command() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    write_json(
        &dir.join("vm.json"),
        &convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false),
    );
    let log = dir.join("logs/run.log");
    std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.json"))
        .arg("--log-file")
        .arg(&log)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stderr, "",
        "the terminal stays quiet at the default level"
    );
    let text = std::fs::read_to_string(&log).expect("log written");
    for sub in ["info", "check", "convert", "compare"] {
        assert!(
            text.lines()
                .any(|l| l.contains("finished") && l.contains(&format!("qemu-img {sub} "))),
            "no finished `qemu-img {sub}` line in:\n{text}"
        );
    }
}

/// Off a terminal, `--progress bars` falls back to the line display (bars draw nothing there,
/// and the warnings, failures and summary with them), and log lines carry no colour codes.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn bars_and_logs_off_a_terminal_are_plain_lines() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let disk = dir.join("disk.raw");
    make_image(&disk, "raw", None);
    let manifest = dir.write(
        "vm.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{vm_name: web01}}\npipeline:\n  inspect: {{enabled: true}}\n  convert: {{enabled: true}}\ndisks:\n  - {{id: d0, source_format: raw, bytes: {}, local_path: disk.raw}}\n",
            file_size(&disk) + 1
        ),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "bars", "-v"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        !r.stderr.contains("\x1b["),
        "no colour codes: {:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains(" INFO "),
        "the log lines are there: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("[web01] started") && r.stderr.contains("[web01] convert: done"),
        "the line display stands in for the bars: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("[web01] warning:"),
        "the size warning is shown: {}",
        r.stderr
    );
}
