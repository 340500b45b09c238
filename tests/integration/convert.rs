use crate::support::*;

/// (name, qemu driver, create options, manifest source_format)
const SOURCES: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "vmdk-sparse",
        "vmdk",
        Some("subformat=monolithicSparse"),
        "vmdk",
    ),
    (
        "vmdk-stream",
        "vmdk",
        Some("subformat=streamOptimized"),
        "vmdk",
    ),
    (
        "vmdk-2gb",
        "vmdk",
        Some("subformat=twoGbMaxExtentSparse"),
        "vmdk",
    ),
    (
        "vmdk-flat",
        "vmdk",
        Some("subformat=monolithicFlat"),
        "vmdk",
    ),
    ("vhd-dynamic", "vpc", Some("subformat=dynamic"), "vhd"),
    ("vhd-fixed", "vpc", Some("subformat=fixed"), "vhd"),
    ("vhdx", "vhdx", None, "vhdx"),
    ("qcow2", "qcow2", None, "qcow2"),
    ("raw", "raw", None, "raw"),
    ("vdi", "vdi", None, "vdi"),
];

/// (output format, compress)
const OUTPUTS: &[(&str, bool)] = &[
    ("qcow2", false),
    ("qcow2", true),
    ("raw", false),
    ("vdi", false),
];

fn convert_one(source: &str) {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let (_, driver, opts, format) = SOURCES
        .iter()
        .find(|s| s.0 == source)
        .copied()
        .expect("known source");
    let dir = TestDir::new();
    let src = dir.join(&format!("{source}.img"));
    make_image(&src, driver, opts);
    let before = sha256(&src);

    for (out_format, compress) in OUTPUTS {
        let out_dir = dir.join(&format!("out-{out_format}-{compress}"));
        let mut manifest = convert_manifest(vec![disk("d0", format, &src)], out_format, *compress);
        manifest["output"]["directory"] = serde_json::json!(out_dir);
        let manifest_path = dir.join(&format!("vm-{out_format}-{compress}.json"));
        write_json(&manifest_path, &manifest);

        let r = run(hyper2kvm().arg("--manifest").arg(&manifest_path));
        assert_eq!(
            r.code,
            Some(0),
            "{source} -> {out_format} (compress {compress}) failed:\n{}{}",
            r.stdout,
            r.stderr
        );
        let output = out_dir.join(format!("d0.{out_format}"));
        let out_driver = *out_format;
        assert!(
            identical(&src, driver, &output, out_driver),
            "{source} -> {out_format}: content differs"
        );
        assert_eq!(
            tree(&out_dir),
            [
                format!("d0.{out_format}"),
                "report.html".to_owned(),
                "report.json".to_owned(),
                "testvm.xml".to_owned()
            ],
            "only the output, the report and the domain XML are left"
        );
        let report = read_json(&out_dir.join("report.json"));
        assert_eq!(report["status"], "succeeded");
        assert_eq!(
            report["pipeline"]["stages"]["validate"]["result"]["validation_results"][0]["content_check"],
            "identical"
        );
        if *compress {
            let info = run_ok(
                std::process::Command::new("qemu-img")
                    .args(["info", "--output=json", "-f", "qcow2"])
                    .arg(&output),
            );
            let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
            assert_eq!(
                info["format-specific"]["data"]["compression-type"], "zstd",
                "compressed qcow2 uses zstd"
            );
        }
    }
    assert_eq!(sha256(&src), before, "the source was modified");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vmdk_monolithic_sparse() {
    convert_one("vmdk-sparse");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vmdk_stream_optimized() {
    convert_one("vmdk-stream");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vmdk_two_gb_max_extent_sparse() {
    convert_one("vmdk-2gb");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vmdk_monolithic_flat() {
    convert_one("vmdk-flat");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vhd_dynamic() {
    convert_one("vhd-dynamic");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vhd_fixed_is_not_copied_with_its_footer() {
    convert_one("vhd-fixed");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vhdx() {
    convert_one("vhdx");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn qcow2() {
    convert_one("qcow2");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn raw() {
    convert_one("raw");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn vdi() {
    convert_one("vdi");
}

/// A manifest naming the `-flat.vmdk` extent converts through its descriptor.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn flat_extent_is_replaced_by_its_descriptor() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let descriptor = dir.join("vm.vmdk");
    make_image(&descriptor, "vmdk", Some("subformat=monolithicFlat"));
    let extent = dir.join("vm-flat.vmdk");
    assert!(
        extent.is_file(),
        "qemu-img wrote the extent beside the descriptor"
    );
    let manifest = convert_manifest(vec![disk("d0", "vmdk", &extent)], "qcow2", false);
    let path = dir.join("vm.json");
    write_json(&path, &manifest);
    let r = run(hyper2kvm().arg("--manifest").arg(&path));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let output = dir.join("output/d0.qcow2");
    assert!(identical(&descriptor, "vmdk", &output, "qcow2"));
    let report = read_json(&dir.join("output/report.json"));
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("flat VMDK extent"), "{warnings}");
}

/// Disks are converted in boot order, each to `<id>.<format>`, and checksums are verified.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn multi_disk_manifest_in_yaml_with_checksums() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let boot = dir.join("disks/böot disk.vmdk");
    std::fs::create_dir_all(boot.parent().expect("parent")).expect("mkdir");
    make_image(&boot, "vmdk", Some("subformat=streamOptimized"));
    let data = dir.join("disks/data.vhdx");
    make_image(&data, "vhdx", None);
    let yaml = format!(
        r#"manifest_version: "1.0"
source: {{provider: vsphere, vm_name: web01}}
profile: production
profile_overrides:
  pipeline: {{fix: {{enabled: false}}}}
disks:
  - id: data
    source_format: vhdx
    bytes: {}
    local_path: disks/data.vhdx
    checksum: {}
    boot_order_hint: 1
    disk_type: data
  - id: boot
    source_format: vmdk
    bytes: {}
    local_path: "disks/böot disk.vmdk"
    checksum: {}
    boot_order_hint: 0
    disk_type: boot
"#,
        file_size(&data),
        sha256(&data),
        file_size(&boot),
        sha256(&boot)
    );
    let manifest = dir.write("my vms/web01 é.yaml", &yaml.replace("disks/", "../disks/"));
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let out = dir.join("my vms/output");
    assert!(identical(&boot, "vmdk", &out.join("boot.qcow2"), "qcow2"));
    assert!(identical(&data, "vhdx", &out.join("data.qcow2"), "qcow2"));
    let report = read_json(&out.join("report.json"));
    let converted = &report["pipeline"]["stages"]["convert"]["result"]["converted_disks"];
    assert_eq!(converted[0]["disk_id"], "boot", "boot order first");
    assert_eq!(converted[1]["disk_id"], "data");
    assert_eq!(
        report["pipeline"]["stages"]["load_manifest"]["result"]["checksums_verified"],
        true
    );
    assert_eq!(report["summary"]["output_disks"], 2);
    assert_eq!(report["input_manifest"]["profile"], "production");
    // Every stage records the commands it ran.
    let convert_cmds = &report["pipeline"]["stages"]["convert"]["commands"];
    let argv = convert_cmds
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| c["argv"][1].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(argv, ["convert", "convert"]);
    assert_eq!(convert_cmds[0]["status"]["kind"], "exited");
    assert_eq!(convert_cmds[0]["status"]["value"], 0);
}

/// `--output-dir` beats `output.directory`; the report lands there too.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn output_dir_flag_wins() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.qcow2");
    make_image(&src, "qcow2", None);
    let mut m = convert_manifest(vec![disk("d0", "qcow2", &src)], "raw", false);
    m["output"]["directory"] = serde_json::json!("from-manifest");
    let path = dir.join("vm.json");
    write_json(&path, &m);
    let out = dir.join("from-flag");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .arg("--output-dir")
        .arg(&out));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        tree(&out),
        ["d0.raw", "report.html", "report.json", "testvm.xml"]
    );
    assert!(!dir.join("from-manifest").exists());
}

/// A second run refuses to replace outputs; `--overwrite` replaces them.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn existing_output_needs_overwrite() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let path = dir.join("vm.json");
    write_json(
        &path,
        &convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false),
    );
    let first = run(hyper2kvm().arg("--manifest").arg(&path));
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let output = dir.join("output/d0.qcow2");
    let before = sha256(&output);

    let second = run(hyper2kvm().arg("--manifest").arg(&path));
    assert_eq!(second.code, Some(2));
    assert!(
        second
            .stderr
            .contains("already exists; remove it or pass --overwrite"),
        "{}",
        second.stderr
    );
    assert_eq!(
        sha256(&output),
        before,
        "the existing output was not touched"
    );

    let third = run(hyper2kvm().arg("--manifest").arg(&path).arg("--overwrite"));
    assert_eq!(third.code, Some(0), "{}", third.stderr);
    assert!(identical(&src, "raw", &output, "qcow2"));
}

/// `--config` files merge later-wins, and a config may carry tool options.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn configs_merge_later_wins() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    write_json(&dir.join("vm.json"), &m);
    dir.write(
        "site.yaml",
        "output_dir: site-out\nprogress: none\noutput:\n  format: vdi\n",
    );
    dir.write("later.yaml", "output:\n  format: raw\n");
    let r = run(hyper2kvm().current_dir(dir.path()).args([
        "--config",
        "site.yaml",
        "--config",
        "later.yaml",
        "--config",
        "vm.json",
    ]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // The manifest's own output.format beats the config layer.
    assert_eq!(
        tree(&dir.join("site-out")),
        ["d0.qcow2", "report.html", "report.json", "testvm.xml"]
    );
    assert_eq!(
        r.stderr, "",
        "progress: none from the config silences progress"
    );
}

/// The report path comes from options.report.path; a disabled report writes none.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn report_path_and_disabled_report() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["options"] = serde_json::json!({"report": {"path": "reports/vm-report.json"}});
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(dir.join("output/reports/vm-report.json").is_file());

    m["options"] = serde_json::json!({"report": {"enabled": false}});
    write_json(&dir.join("vm2.json"), &m);
    let out2 = dir.join("out2");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm2.json"))
        .arg("--output-dir")
        .arg(&out2));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(tree(&out2), ["d0.qcow2", "testvm.xml"]);
}

/// Stages run only when enabled: with nothing enabled the manifest is only loaded and checked.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn nothing_enabled_only_loads() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let m = serde_json::json!({"manifest_version": "1.0",
        "disks": [{"id": "d0", "source_format": "raw", "bytes": file_size(&src),
                   "local_path": "a.raw", "checksum": sha256(&src)}]});
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(tree(&dir.join("output")), ["report.html", "report.json"]);
    let report = read_json(&dir.join("output/report.json"));
    let stages: Vec<&String> = report["pipeline"]["stages"]
        .as_object()
        .expect("stages")
        .keys()
        .collect();
    assert_eq!(stages, ["load_manifest"]);
}

/// With nothing to fire in between, the checksum is verified while the disk converts, and the
/// report still says so under load_manifest.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn checksum_verified_alongside_convert() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.vmdk");
    make_image(&src, "vmdk", None);
    let mut m = convert_manifest(vec![disk("d0", "vmdk", &src)], "qcow2", false);
    m["disks"][0]["checksum"] = serde_json::json!(sha256(&src));
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let load = &report["pipeline"]["stages"]["load_manifest"]["result"];
    assert_eq!(load["checksums_verified"], true);
    assert_eq!(load["checksums_verified_during_convert"], true);
    assert_eq!(load["verified_checksums"][0]["checksum"], sha256(&src));
    assert!(identical(
        &src,
        "vmdk",
        &dir.join("output/d0.qcow2"),
        "qcow2"
    ));
}

/// A hook between load_manifest and convert sees a verified source: then the checksum is
/// verified first, as the stage order says.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn checksum_verified_first_when_a_hook_follows_it() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let hook = dir.join("after.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    m["disks"][0]["checksum"] = serde_json::json!(sha256(&src));
    m["hooks"] = serde_json::json!({"post_extraction": [{"type": "script", "path": "after.sh"}]});
    write_json(&dir.join("vm.json"), &m);
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("vm.json")));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let load = &report["pipeline"]["stages"]["load_manifest"]["result"];
    assert_eq!(load["checksums_verified"], true);
    assert!(
        load.get("checksums_verified_during_convert").is_none(),
        "{load}"
    );
}

/// A source whose size is not a whole number of 512-byte sectors is read without io_uring
/// (qemu 10.0's io_uring never completes the read of such a file's last sector): the run
/// finishes instead of hanging, and the output matches.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn odd_sized_source_converts_and_validates() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("odd.raw");
    let data: Vec<u8> = (0..65_636u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, data).expect("write");
    let m = convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false);
    write_json(&dir.join("vm.json"), &m);
    let mut child = hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("vm.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the conversion of an odd-sized source hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(report["pipeline"]["stages"]["validate"]["success"], true);
    for stage in ["convert", "validate"] {
        let commands = report["pipeline"]["stages"][stage]["commands"]
            .as_array()
            .expect("commands");
        for arg in commands
            .iter()
            .flat_map(|c| c["argv"].as_array().expect("argv"))
        {
            let arg = arg.as_str().unwrap_or("");
            assert!(
                !(arg.contains("odd.raw") && arg.contains("io_uring")),
                "{arg}"
            );
        }
    }
}
