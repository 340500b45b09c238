//! Manifests in the shapes the guide documents and the Python tool writes: disks with only `id`
//! and `local_path` (format and size probed at planning), `checksum: null`, the guide's
//! generated-manifest shape; and the paths and files the loader's errors name.

use crate::support::*;
use serde_json::json;

/// A 64 MiB qcow2 image with the test pattern, and a manifest converting it that gives the
/// disk only `id` and `local_path`.
fn probed_manifest(dir: &TestDir) -> std::path::PathBuf {
    let src = dir.join("vm.qcow2");
    make_image(&src, "qcow2", None);
    let manifest = dir.join("vm.json");
    write_json(
        &manifest,
        &json!({
            "manifest_version": "1.0",
            "source": {"vm_name": "probed"},
            "disks": [{"id": "disk0", "local_path": "vm.qcow2", "checksum": null}],
            "pipeline": {"convert": {"enabled": true}, "validate": {"enabled": true}},
            "output": {"directory": "out", "format": "raw"}
        }),
    );
    manifest
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn format_and_size_are_probed_when_left_out() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let manifest = probed_manifest(&dir);
    let size = file_size(&dir.join("vm.qcow2"));

    let dry = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run"));
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let shown = redact(&dry.stdout, &dir).replace(&format!("{size} bytes"), "[SIZE] bytes");
    insta::assert_snapshot!("probed_dry_run", shown);

    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        identical(
            &dir.join("vm.qcow2"),
            "qcow2",
            &dir.join("out/disk0.raw"),
            "raw"
        ),
        "the probed qcow2 is converted as qcow2"
    );
    let report = read_json(&dir.join("out/report.json"));
    assert_eq!(
        report["input_manifest"]["sources"][0]["probed"],
        json!({"source_format": "qcow2", "bytes": size}),
        "the report says which values were probed"
    );
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn written_values_are_not_reported_as_probed_and_are_still_checked() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let src = dir.join("vm.qcow2");
    make_image(&src, "qcow2", None);
    let manifest = dir.join("vm.json");
    let mut m = convert_manifest(vec![disk("disk0", "qcow2", &src)], "raw", false);
    m["disks"][0]["bytes"] = json!(1);
    m["output"]["directory"] = json!(dir.join("out"));
    write_json(&manifest, &m);
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report = read_json(&dir.join("out/report.json"));
    assert!(
        report["input_manifest"]["sources"][0]
            .get("probed")
            .is_none(),
        "{report:#}"
    );
    let warned = report["warnings"].to_string();
    assert!(
        warned.contains("the manifest says 1 bytes"),
        "a written size is still compared: {warned}"
    );

    // A written format that the file does not have is refused as before.
    m["disks"][0]["source_format"] = json!("vdi");
    m["disks"][0]["bytes"] = json!(file_size(&src));
    write_json(&manifest, &m);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--overwrite"));
    assert_ne!(r.code, Some(0));
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("source_format is vdi but qemu-img detects qcow2"),
        "{said}"
    );
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn an_ambiguous_probe_is_refused() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    // A fixed VHD probes as raw: whether its footer is data must not be guessed.
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=fixed"])
            .arg(dir.join("fixed.vhd"))
            .arg("8M"),
    );
    std::fs::write(dir.join("data-flat.vmdk"), vec![0u8; 1 << 20]).expect("write");
    let manifest = dir.join("vm.json");
    write_json(
        &manifest,
        &json!({
            "manifest_version": "1.0",
            "disks": [
                {"id": "d0", "local_path": "fixed.vhd"},
                {"id": "d1", "local_path": "data-flat.vmdk"}
            ],
            "pipeline": {"convert": {"enabled": true}}
        }),
    );
    let before = tree(dir.path());
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(tree(dir.path()), before, "nothing is written");
    insta::assert_snapshot!("ambiguous_probe_refused", redact(&r.stderr, &dir));
}

#[test]
fn checksum_errors_say_what_is_expected() {
    let dir = TestDir::new();
    dir.write("a.raw", "x");
    let manifest = dir.join("vm.json");
    write_json(
        &manifest,
        &json!({
            "manifest_version": "1.0",
            "disks": [
                {"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw",
                 "checksum": "sha256:ABC"},
                {"id": "d1", "source_format": "raw", "bytes": 1, "local_path": "a.raw",
                 "checksum": null}
            ]
        }),
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    insta::assert_snapshot!("checksum_error", redact(&r.stderr, &dir));
}

/// Converts a 1 MiB raw disk with `vm` (our shape) merged into the manifest, and returns the
/// domain XML written, with the paths of the test directory replaced.
fn domain_of(dir: &TestDir, name: &str, shape: serde_json::Value) -> String {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(sub.join("boot.raw"), vec![0x5au8; 1 << 20]).expect("write disk");
    let mut m = json!({
        "manifest_version": "1.0",
        // One source VM (its UUID) described two ways: its disk copies lie in different
        // directories, which without a source UUID would make them two VMs.
        "source": {"provider": "libvirt", "vm_name": "web-server",
                   "uuid": "6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab",
                   "libvirt_xml_path": "/etc/libvirt/qemu/web-server.xml"},
        "disks": [{"id": "vda", "source_format": "raw", "local_path": "boot.raw",
                   "bytes": 1 << 20, "checksum": null, "boot_order_hint": 0,
                   "disk_type": "boot"}],
        "pipeline": {"convert": {"enabled": true}},
        "output": {"directory": "out", "format": "qcow2"}
    });
    for (k, v) in shape.as_object().expect("shape").clone() {
        m[k] = v;
    }
    let manifest = sub.join("manifest.json");
    write_json(&manifest, &m);
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(0), "{name}: {}", r.stderr);
    std::fs::read_to_string(sub.join("out/web-server.xml"))
        .expect("domain xml")
        .replace(&sub.display().to_string(), "[VM]")
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn the_guides_generated_manifest_makes_the_same_domain_as_ours() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let guide = domain_of(
        &dir,
        "guide",
        json!({
            "firmware": {"type": "uefi"},
            "os_hint": "rhel9",
            "metadata": {
                "networks": [{"type": "bridge", "source": "br0", "mac": "52:54:00:6b:3c:58"}],
                "memory_bytes": 8_589_934_592_u64,
                "vcpus": 4
            }
        }),
    );
    let ours = domain_of(
        &dir,
        "ours",
        json!({
            "vm": {"firmware": "uefi", "os_hint": "rhel9", "mem_gb": 8, "cpu": 4},
            "nics": [{"id": "net0", "type": "bridge", "network": "br0",
                      "mac": "52:54:00:6b:3c:58"}]
        }),
    );
    assert_eq!(guide, ours, "the guide's shape and ours make one domain");
    for wanted in [">4</vcpu>", "8388608", "pflash", "br0", "52:54:00:6b:3c:58"] {
        assert!(guide.contains(wanted), "{wanted} missing from:\n{guide}");
    }

    // Where both are given, vm.* wins.
    let both = domain_of(
        &dir,
        "both",
        json!({"firmware": {"type": "uefi"}, "metadata": {"vcpus": 4}, "vm": {"firmware": "bios", "cpu": 1}}),
    );
    assert!(!both.contains("pflash"), "{both}");
    assert!(both.contains(">1</vcpu>"), "{both}");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn an_unknown_libosinfo_id_is_kept_not_made_into_a_hint() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("bios-vm.qcow2"), "qcow2", None);
    let text = fixture("libvirt/bios-network.xml")
        .replace("@DIR@", &dir.path().display().to_string())
        .replace(
            "http://debian.org/debian/12",
            "http://example.com/unknown/1",
        );
    let xml = dir.write("domain.xml", &text);
    let r = run(hyper2kvm()
        .arg("--libvirt-xml")
        .arg(&xml)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let manifest = read_json(&dir.join("out/manifest.json"));
    assert_eq!(
        manifest["vm"]["os_hint"],
        json!("http://example.com/unknown/1"),
        "no invented hint ('unknown1'): {manifest:#}"
    );
    assert!(manifest["vm"].get("os_version").is_none(), "{manifest:#}");
    let said: Vec<&str> = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .filter(|l| l.contains("libosinfo"))
        .collect();
    insta::assert_snapshot!("unknown_libosinfo_id", said.join("\n"));
}

#[test]
fn a_typo_in_profile_overrides_is_named_there() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let manifest = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: production\nprofile_overrides:\n  pipeline:\n    convert: {compres: true}\n    fix: {fstab_mode: bypath}\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\npipeline:\n  inspect: {colect_guest_info: true}\n",
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&manifest));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    insta::assert_snapshot!("profile_overrides_typo", redact(&r.stderr, &dir));
}

#[test]
fn a_typo_in_shared_config_is_the_batch_files_once() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    for vm in ["a", "b"] {
        dir.write(
            &format!("{vm}.yaml"),
            "manifest_version: \"1.0\"\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
        );
    }
    let batch = dir.write(
        "batch.yaml",
        "batch_version: \"1.0\"\nvms:\n  - {manifest: a.yaml, id: a}\n  - {manifest: b.yaml, id: b}\nshared_config:\n  pipelin: {}\n  pipeline:\n    convert: {compres: true}\n",
    );
    let r = run(hyper2kvm().arg("--batch-manifest").arg(&batch));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    insta::assert_snapshot!("shared_config_typo", redact(&r.stderr, &dir));
}

/// `--manifest FILE --dump-config`, which must succeed: the run (for its stderr) and the JSON.
fn dump_manifest(manifest: &std::path::Path) -> (Run, serde_json::Value) {
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(manifest)
        .arg("--dump-config"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let dumped = serde_json::from_str(&r.stdout).expect("json");
    (r, dumped)
}

/// Whether a JSON value holds `null` anywhere.
fn has_null(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.iter().any(has_null),
        serde_json::Value::Object(map) => map.values().any(has_null),
        _ => false,
    }
}

#[test]
fn dump_config_leaves_unset_values_out_and_refuses_what_a_run_refuses() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let manifest = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: production\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw, checksum: null}\n",
    );
    let (_, dumped) = dump_manifest(&manifest);
    assert!(!has_null(&dumped), "unset values are left out:\n{dumped:#}");
    assert!(dumped["storage_mapping"].is_object(), "{dumped:#}");

    let config = dir.write(
        "site.yaml",
        "verbose: 1\npipeline: {convert: {enabled: true}}\n",
    );
    let real = run(hyper2kvm().arg("--config").arg(&config));
    let dump = run(hyper2kvm()
        .arg("--config")
        .arg(&config)
        .arg("--dump-config"));
    assert_eq!(real.code, Some(2), "{}", real.stderr);
    assert_eq!(dump.code, real.code, "{}", dump.stdout);
    assert_eq!(dump.stderr, real.stderr);
    assert!(dump.stdout.is_empty(), "{}", dump.stdout);
    insta::assert_snapshot!("dump_config_without_manifest", dump.stderr);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn shared_disk_mappings_need_only_fit_the_disks_a_vm_has() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    dir.write("boot.raw", "x");
    // An organisation profile that maps a boot and a data disk, for every VM.
    dir.write(
        "profiles/org.yaml",
        "extends: minimal\nstorage_mapping:\n  disk_mappings: {boot: /srv/boot, data: /srv/data}\n",
    );
    let manifest = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: org\ncustom_profile_path: profiles\ndisks:\n  - {id: boot, source_format: raw, bytes: 1, local_path: boot.raw}\npipeline: {convert: {enabled: true}}\n",
    );
    let (dump, dumped) = dump_manifest(&manifest);
    assert_eq!(
        dumped["storage_mapping"]["disk_mappings"],
        json!({"boot": "/srv/boot"}),
        "the key that fits no disk is left out"
    );
    let dry = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run"));
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let dry_notes: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.contains("disk_mappings"))
        .collect();
    insta::assert_snapshot!(
        "shared_disk_mapping_notes",
        format!(
            "--dump-config:\n{}--dry-run:\n{}",
            dump.stderr,
            dry_notes.join("\n")
        )
    );

    // A --config file is a shared layer too; the VM's own manifest is not.
    let config = dir.write(
        "site.yaml",
        "storage_mapping:\n  disk_mappings: {swap: /srv/swap}\n",
    );
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&config)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dump-config"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("disk_mappings.swap from the shared configuration"),
        "{}",
        r.stderr
    );
    let own = dir.write(
        "own.yaml",
        "manifest_version: \"1.0\"\nprofile: org\ncustom_profile_path: profiles\ndisks:\n  - {id: boot, source_format: raw, bytes: 1, local_path: boot.raw}\nstorage_mapping:\n  disk_mappings: {bot: /srv/x}\n",
    );
    let r = run(hyper2kvm().arg("--manifest").arg(&own).arg("--dump-config"));
    assert_eq!(r.code, Some(2), "{}", r.stdout);
    insta::assert_snapshot!("own_disk_mapping_typo", redact(&r.stderr, &dir));
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn a_batch_shares_disk_mappings_across_vms_with_different_disks() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    std::fs::write(dir.join("boot.raw"), vec![1u8; 1 << 20]).expect("write");
    std::fs::write(dir.join("data.raw"), vec![2u8; 1 << 20]).expect("write");
    dir.write(
        "a.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: boot, local_path: boot.raw}\n",
    );
    dir.write(
        "b.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: data, local_path: data.raw}\n",
    );
    let batch = dir.write(
        "batch.yaml",
        "batch_version: \"1.0\"\nvms:\n  - {manifest: a.yaml, id: a}\n  - {manifest: b.yaml, id: b}\nshared_config:\n  output_directory: out\n  pipeline: {convert: {enabled: true}}\n  storage_mapping:\n    disk_mappings: {boot: out/boot-disks, data: out/data-disks}\n",
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let a = read_json(&dir.join("out/a/report.json"));
    let b = read_json(&dir.join("out/b/report.json"));
    let a_warnings = a["warnings"].to_string();
    assert!(
        a_warnings.contains("storage_mapping.disk_mappings.data from the shared configuration"),
        "{a_warnings}"
    );
    let b_warnings = b["warnings"].to_string();
    assert!(
        b_warnings.contains("storage_mapping.disk_mappings.boot from the shared configuration"),
        "{b_warnings}"
    );
    assert!(!b_warnings.contains("disk_mappings.data"), "{b_warnings}");
    let outputs = tree(&dir.join("out"));
    for wanted in ["boot-disks/boot.qcow2", "data-disks/data.qcow2"] {
        assert!(
            outputs.iter().any(|p| p.ends_with(wanted)),
            "{wanted} missing: {outputs:?}"
        );
    }
}
