//! network_mapping and storage_mapping through the binary: MAC policies and bridges as they
//! appear in the emitted domain, unmapped networks (warning, or error when strict), per-disk
//! placement, format override and preallocation.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::*;

const LAN_MAC: &str = "00:50:56:aa:00:01";
const DMZ_MAC: &str = "00:50:56:aa:00:02";

/// A small raw disk: these tests are about placement and XML, not content.
fn small_disk(path: &Path) {
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(path)
            .arg("1M"),
    );
}

/// A vSphere-style VM with two NICs and `extra` merged into the manifest.
fn manifest_with(dir: &TestDir, extra: Value) -> PathBuf {
    let disk_path = dir.join("web01.raw");
    if !disk_path.exists() {
        small_disk(&disk_path);
    }
    let mut m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_id": "vm-1042", "vm_name": "web01"},
        "vm": {"cpu": 2, "mem_gb": 4, "firmware": "bios"},
        "disks": [disk("boot", "raw", &disk_path)],
        "nics": [
            {"id": "nic-lan", "network": "VM Network", "mac": LAN_MAC},
            {"id": "nic-dmz", "network": "DMZ", "mac": DMZ_MAC}
        ],
        "pipeline": {"convert": {"enabled": true}},
        "options": {"report": {"enabled": true}}
    });
    if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
        for (k, v) in extra {
            m.insert(k, v);
        }
    }
    let path = dir.join("web01.json");
    write_json(&path, &m);
    path
}

fn convert(manifest: &Path, extra_args: &[&str]) -> Run {
    run(hyper2kvm()
        .arg("--manifest")
        .arg(manifest)
        .args(["--progress", "none"])
        .args(extra_args))
}

fn macs(domain: &str) -> Vec<String> {
    let re = regex_lite::Regex::new(r#"<mac address="([^"]+)"/>"#).expect("regex");
    re.captures_iter(domain).map(|c| c[1].to_owned()).collect()
}

fn domain_of(dir: &TestDir) -> String {
    std::fs::read_to_string(dir.join("output/web01.xml")).expect("domain written")
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn preserve_keeps_macs_and_maps_bridges_and_networks() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(
        &dir,
        json!({"network_mapping": {"source_networks": {"VM Network": "br0", "DMZ": {"network": "dmz"}}}}),
    );
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let xml = domain_of(&dir);
    assert_eq!(macs(&xml), [LAN_MAC, DMZ_MAC]);
    assert!(xml.contains("<interface type=\"bridge\">"), "{xml}");
    assert!(xml.contains("<source bridge=\"br0\"/>"), "{xml}");
    assert!(xml.contains("<source network=\"dmz\"/>"), "{xml}");
    assert!(!r.stdout.contains("does not map"), "{}", r.stdout);
    if require_libvirt_tools() {
        validate_and_define(&dir.join("output/web01.xml"), "web01");
    }
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn regenerate_makes_new_local_macs_that_stay_the_same_on_a_rerun() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(
        &dir,
        json!({"network_mapping": {"default_bridge": "br0", "mac_address_policy": "regenerate"}}),
    );
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let first = domain_of(&dir);
    let got = macs(&first);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.starts_with("52:54:00:")), "{got:?}");
    assert_ne!(got[0], got[1]);
    assert!(!got.contains(&LAN_MAC.to_owned()) && !got.contains(&DMZ_MAC.to_owned()));
    let r = convert(&m, &["--overwrite"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(domain_of(&dir), first, "a re-run writes the same domain");
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn custom_overrides_one_mac_and_keeps_the_other() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(
        &dir,
        json!({"network_mapping": {"default_bridge": "br0", "mac_address_policy": "custom",
            "mac_address_overrides": {"00-50-56-AA-00-01": "52:54:00:12:34:56"}}}),
    );
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(macs(&domain_of(&dir)), ["52:54:00:12:34:56", DMZ_MAC]);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn unmapped_networks_are_a_named_warning_or_an_error_when_strict() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(
        &dir,
        json!({"network_mapping": {"source_networks": {"VM Network": "br0"}}}),
    );
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("network_mapping does not map the network of NIC nic-dmz (network 'DMZ', emitted as the libvirt network 'DMZ')"),
        "{warnings}"
    );
    assert!(!warnings.contains("nic-lan"), "{warnings}");
    assert!(domain_of(&dir).contains("<source network=\"DMZ\"/>"));

    let strict_dir = TestDir::new();
    let m = manifest_with(
        &strict_dir,
        json!({"network_mapping": {"source_networks": {"VM Network": "br0"}, "strict": true}}),
    );
    let before = tree(strict_dir.path());
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert_eq!(tree(strict_dir.path()), before, "nothing written");
    insta::assert_snapshot!(redact(&r.stderr, &strict_dir), @r"
    error: cannot plan [TMP]/web01.json (1 problem):
      - network_mapping does not map the network of NIC nic-dmz (network 'DMZ', emitted as the libvirt network 'DMZ'); an unmapped NIC keeps the source's connection, which must exist on the KVM host (map it in network_mapping.source_networks, or set default_bridge); network_mapping.strict is true
    ");
}

/// A `source_networks` entry no NIC is on (a typo), and a mapping for a VM with no NICs, are
/// named in the report's warnings with the NICs' real networks and what to change.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn mappings_that_match_no_nic_are_warned_about() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(
        &dir,
        json!({"network_mapping": {"source_networks": {"VM Netwrok": "br0", "DMZ": "br1"}}}),
    );
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("output/report.json"));
    let warnings: Vec<String> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["message"].as_str().map(str::to_owned))
        .filter(|w| w.contains("source_networks maps"))
        .collect();
    insta::assert_snapshot!(warnings.join("\n"), @"network_mapping.source_networks maps the network 'VM Netwrok', which no NIC of this VM is on (the NICs: nic-lan on 'VM Network', nic-dmz on 'DMZ'); use the NICs' network names as the keys (they must match nics[].network exactly), or remove the entry");
    assert!(
        r.stdout.contains("'VM Netwrok'"),
        "the summary shows it: {}",
        r.stdout
    );

    let bare = TestDir::new();
    let m = manifest_with(
        &bare,
        json!({"nics": [], "network_mapping": {"default_bridge": "br0"}}),
    );
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&bare.join("output/report.json"));
    assert!(
        report["warnings"]
            .to_string()
            .contains("network_mapping is set, but the VM has no network interface"),
        "{:#}",
        report["warnings"]
    );
}

/// A manifest that enables no stage does not pass silently: the plan warns, on stderr and in
/// the report, and says which key to set.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn a_run_with_no_stage_enabled_is_warned_about() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(&dir, json!({"pipeline": {}}));
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("web01: no stage is enabled")
            && r.stderr.contains("set pipeline.convert.enabled: true"),
        "{}",
        r.stderr
    );
    let report = read_json(&dir.join("output/report.json"));
    assert!(
        report["warnings"]
            .to_string()
            .contains("no stage is enabled"),
        "{:#}",
        report["warnings"]
    );
    let r = convert(&manifest_with(&dir, json!({})), &["--overwrite"]);
    assert!(!r.stderr.contains("no stage"), "{}", r.stderr);
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn invalid_mappings_are_all_reported() {
    // The manifest names a real disk, made with qemu-img, so that only the mappings are wrong.
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let m = manifest_with(
        &dir,
        json!({
            "network_mapping": {"mac_address_policy": "Custom", "default_bridge": "",
                "mac_address_overrides": {"00:50:56:aa:00:01": "03:00:00:00:00:01", "bad": "52:54:00:00:00:01"}},
            "storage_mapping": {"disk_mappings": {"bot": "/srv/fast"}, "format_override": "qcow", "preallocate": "yes"},
            "nics": [{"id": "a", "mac": "01:00:5e:00:00:01", "type": "macvtap"}, {"id": "a"}],
            "domain": {"preserve_uuid": true}
        }),
    );
    let before = tree(dir.path());
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert_eq!(tree(dir.path()), before, "nothing written");
    insta::assert_snapshot!(redact(&r.stderr, &dir));
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn disks_are_placed_formatted_and_preallocated_as_mapped() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let boot = dir.join("boot.qcow2");
    let data = dir.join("data.qcow2");
    make_image(&boot, "qcow2", None);
    make_image(&data, "qcow2", None);
    let mut b = disk("boot", "qcow2", &boot);
    b["boot_order_hint"] = json!(0);
    let mut d = disk("data", "qcow2", &data);
    d["boot_order_hint"] = json!(1);
    let m = json!({
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_name": "web01"},
        "vm": {"cpu": 1, "mem_gb": 1, "firmware": "uefi"},
        "disks": [d, b],
        "pipeline": {"convert": {"enabled": true}, "validate": {"enabled": true}},
        "storage_mapping": {"default_pool": "vms", "disk_mappings": {"boot": "fast/boot-disk"},
                            "format_override": "raw", "preallocate": true}
    });
    let path = dir.join("web01.json");
    write_json(&path, &m);

    let r = run(hyper2kvm().arg("--manifest").arg(&path).arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Preallocation is a creation option: it goes to whichever command creates the output
    // (`qemu-img create` when the output is written through io_uring, else convert itself).
    assert!(
        r.stdout
            .contains("create -q -f raw -o preallocation=falloc")
            || r.stdout.contains("-O raw -m 8 -W -o preallocation=falloc"),
        "{}",
        r.stdout
    );
    assert!(!dir.join("fast").exists(), "a dry run creates nothing");

    let r = convert(&path, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let boot_out = dir.join("fast/boot-disk/boot.raw");
    let data_out = dir.join("output/data.raw");
    assert!(identical(&boot, "qcow2", &boot_out, "raw"));
    assert!(identical(&data, "qcow2", &data_out, "raw"));
    for out in [&boot_out, &data_out] {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(out).expect("stat");
        assert!(
            meta.blocks() * 512 >= meta.len(),
            "{} is preallocated ({} of {} bytes)",
            out.display(),
            meta.blocks() * 512,
            meta.len()
        );
    }
    let xml = domain_of(&dir);
    let boot_pos = xml
        .find(&boot_out.display().to_string())
        .expect("boot disk in the domain");
    let data_pos = xml
        .find(&data_out.display().to_string())
        .expect("data disk in the domain");
    assert!(boot_pos < data_pos, "boot order");
    assert_eq!(
        xml.matches("<driver name=\"qemu\" type=\"raw\"/>").count(),
        2,
        "{xml}"
    );
    assert!(
        xml.contains("<hyper2kvm:disk id=\"boot\" target=\"vda\" pool=\"vms\"/>"),
        "{xml}"
    );
    assert!(xml.contains("OVMF_CODE_4M.fd"), "{xml}");
    if require_libvirt_tools() {
        validate_and_define(&dir.join("output/web01.xml"), "web01");
    }
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn storage_mappings_that_cannot_work_are_refused_before_start() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    dir.write("a-file", "x");
    let m = manifest_with(
        &dir,
        json!({
            "storage_mapping": {"disk_mappings": {"boot": "a-file/below"}, "preallocate": "metadata",
                                "format_override": "raw"},
            "network_mapping": {"default_bridge": "br0"},
            "pipeline": {"convert": {"enabled": true, "compress": true}}
        }),
    );
    let before = tree(dir.path());
    let r = convert(&m, &[]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert_eq!(tree(dir.path()), before, "nothing written");
    insta::assert_snapshot!(redact(&r.stderr, &dir), @r"
    error: cannot plan [TMP]/web01.json (2 problems):
      - storage_mapping.disk_mappings: output directory [TMP]/a-file/below cannot be used: [TMP]/a-file is not a directory
      - storage_mapping.preallocate metadata: raw output has no metadata to preallocate; use falloc or full
    ");
}
