//! The batch migration features guide, run as written: one test per example or workflow, named
//! after its heading. Each test takes the guide's text (inline here, or the `examples/` file
//! that ships it) and changes only paths: the site paths the guide uses (`/srv/migrate`,
//! `/converted`, `/vmware`, `/backups`, `/var/lib/libvirt/images`, `/mnt/...`,
//! `/etc/libvirt/qemu`) move under the test directory, `/scripts/` is `examples/hooks/scripts/`,
//! `/etc/hyper2kvm/profiles` is `examples/profiles/`, and the example hosts of HTTP hooks
//! (`https://<name>.example.com`) are a listener on 127.0.0.1. The guide's `...` elisions are
//! left out; where a whole `"source": {...}` or `"disks": [...]` is elided, the test's own small
//! disks stand in. Shell snippets run under bash with `set -e`, `sudo hyper2kvm` replaced by
//! the binary under test (the tests run as whoever runs them), and the guide's Markdown-escaped
//! line continuations (`\\`) read as the `\` they stand for. Its `echo "cmd: ...\noutput_dir:
//! ..."` needs an echo that expands `\n` (zsh's does, and POSIX sh's); bash's does with
//! `shopt -s xpg_echo`, which the tests set.
//!
//! Disks are small real images made with qemu-img. The workflows that run the production
//! profile repair a real guest (the cached phony Debian of guests.rs), one appliance launch per
//! VM: five in all.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::guests::{Guest, phony_guest};
use crate::http_listener::Listener;
use crate::support::*;

/// The site paths the guide's examples use; each is moved under the test directory.
const SITE_PATHS: &[&str] = &[
    "/srv/migrate",
    "/converted",
    "/vmware",
    "/backups",
    "/var/lib/libvirt/images",
    "/mnt/ssd",
    "/mnt/storage",
    "/mnt/fast-ssd",
    "/etc/libvirt/qemu",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hooks_dir() -> PathBuf {
    repo().join("examples/hooks")
}

/// A file of `examples/`.
fn example(rel: &str) -> String {
    let path = repo().join("examples").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The guide's text with its paths moved into `dir` (see the module comment).
fn adapt(text: &str, dir: &TestDir) -> String {
    let re = regex_lite::Regex::new(&format!(r#"(^|["'\s>=(])({})\b"#, SITE_PATHS.join("|")))
        .expect("regex");
    let root = dir.path().display().to_string();
    let text = re.replace_all(text, |c: &regex_lite::Captures<'_>| {
        format!("{}{root}{}", &c[1], &c[2])
    });
    text.replace(
        "\"/scripts/",
        &format!("\"{}/", hooks_dir().join("scripts").display()),
    )
    .replace(
        "/etc/hyper2kvm/profiles",
        &repo().join("examples/profiles").display().to_string(),
    )
}

/// `https://<name>.example.com` replaced by the listener's `http://127.0.0.1:<port>`.
fn to_listener(text: &str, listener: &Listener) -> String {
    regex_lite::Regex::new(r"https://[a-z.-]+\.example\.com")
        .expect("regex")
        .replace_all(text, listener.base.as_str())
        .into_owned()
}

/// Runs a shell snippet of the guide in `dir` (see the module comment for what changes).
fn bash(script: &str, dir: &TestDir) -> Run {
    let bin = assert_cmd::cargo::cargo_bin("hyper2kvm");
    let script = format!(
        "set -e\nshopt -s xpg_echo\n{}",
        script
            .replace("\\\\\n", "\\\n")
            .replace("sudo hyper2kvm", &bin.display().to_string())
    );
    run(Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("PYTHONPATH", hooks_dir()))
}

fn ok(r: &Run) {
    assert_eq!(
        r.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
}

/// A 64 MiB VMDK holding [`PATTERN`], its directories made.
fn vmdk(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    make_image(path, "vmdk", None);
}

fn image(path: &Path, driver: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    make_image(path, driver, None);
}

/// The phony Debian guest as a streamOptimized VMDK (what vSphere exports) at `path`.
fn debian_vmdk(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let raw = path.with_extension("raw");
    phony_guest(Guest::Debian, &raw);
    raw_to_stream_optimized(&raw, path);
}

/// `/vmware/<vm>.vmdk` and the guide's smallest manifest for it at
/// `/srv/migrate/<vm>/manifest.json` (only an id and a path, as the guide writes disks).
fn vmware_vm(dir: &TestDir, vm: &str) {
    vmdk(&dir.join(&format!("vmware/{vm}.vmdk")));
    write_manifest(
        &dir.join(&format!("srv/migrate/{vm}/manifest.json")),
        &adapt(
            &format!(
                r#"{{
  "manifest_version": "1.0",
  "source": {{"provider": "vmware", "vm_name": "{vm}"}},
  "disks": [{{"id": "boot", "local_path": "/vmware/{vm}.vmdk"}}]
}}"#
            ),
            dir,
        ),
    );
}

fn write_manifest(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write manifest");
}

fn dump_config(args: &[&Path]) -> Value {
    let mut cmd = hyper2kvm();
    for a in args {
        cmd.arg(a);
    }
    let r = run(cmd.arg("--dump-config"));
    ok(&r);
    serde_json::from_str(&r.stdout).expect("--dump-config prints JSON")
}

fn core_tools() -> bool {
    require_tool("qemu-img") && require_tool("qemu-io")
}

fn guest_tools() -> bool {
    core_tools() && require_tool("guestfish")
}

/// The VMs of a batch report by id, with their status.
fn batch_statuses(report: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["vm_results"]
        .as_array()
        .expect("vm_results")
        .iter()
        .map(|r| {
            (
                r["vm_id"].as_str().expect("vm_id").to_owned(),
                r["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Every hook of a report: (stage, type, success).
fn hooks_of(report: &Value) -> Vec<(String, String, bool)> {
    report["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| {
            (
                h["stage"].as_str().expect("stage").to_owned(),
                h["type"].as_str().expect("type").to_owned(),
                h["success"].as_bool().expect("success"),
            )
        })
        .collect()
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Feature 1: Batch Orchestration
// ---------------------------------------------------------------------------------------------

/// "Batch Manifest Structure": examples/batch/batch-structure.json, its two VMs under the
/// shared production profile, planned in priority order into the shared output directory.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "guestfish"
    ),
    ignore = "needs qemu-img, qemu-io and guestfish (install: scripts/install-deps.sh full)"
)]
fn batch_manifest_structure() {
    if !guest_tools() {
        return;
    }
    let dir = TestDir::new();
    for vm in ["web-server", "db-server"] {
        vmware_vm(&dir, vm);
    }
    let batch = dir.write(
        "batch.json",
        &adapt(&example("batch/batch-structure.json"), &dir),
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .arg("--dry-run"));
    ok(&r);
    let web = r.stdout.find("web-server").expect("web-server planned");
    let db = r.stdout.find("db-server").expect("db-server planned");
    assert!(web < db, "priority 0 first:\n{}", r.stdout);
    assert!(
        r.stdout
            .contains(&dir.join("converted/web-server").display().to_string()),
        "shared output_directory:\n{}",
        r.stdout
    );
    assert!(
        tree(&dir.join("converted")).is_empty(),
        "a dry run writes nothing"
    );
}

/// "Usage" of batch orchestration: the guide's snippet writes batch.json (the same as
/// examples/batch/batch.json) and runs it with `--batch-parallel 4`. The guide does not show
/// the three VM manifests; here each converts its VMDK to qcow2.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io and bash (install: scripts/install-deps.sh core)"
)]
fn batch_orchestration_usage() {
    if !(core_tools() && require_tool("bash")) {
        return;
    }
    let dir = TestDir::new();
    for vm in ["vm1", "vm2", "vm3"] {
        vmdk(&dir.join(&format!("vmware/{vm}.vmdk")));
        write_manifest(
            &dir.join(&format!("srv/migrate/{vm}/manifest.json")),
            &adapt(
                &format!(
                    r#"{{
  "manifest_version": "1.0",
  "source": {{"provider": "vmware", "vm_name": "{vm}"}},
  "disks": [{{"id": "boot", "local_path": "/vmware/{vm}.vmdk"}}],
  "pipeline": {{"convert": {{"enabled": true}}}},
  "output": {{"directory": "/converted/{vm}"}}
}}"#
                ),
                &dir,
            ),
        );
    }
    let r = bash(
        &adapt(
            r#"
# Create batch manifest
cat > batch.json <<EOF
{
  "batch_version": "1.0",
  "batch_metadata": {
    "batch_id": "datacenter-migration",
    "parallel_limit": 8,
    "continue_on_error": true
  },
  "vms": [
    {"manifest": "/srv/migrate/vm1/manifest.json"},
    {"manifest": "/srv/migrate/vm2/manifest.json"},
    {"manifest": "/srv/migrate/vm3/manifest.json"}
  ]
}
EOF

# Run batch conversion
sudo hyper2kvm --batch-manifest batch.json --batch-parallel 4
"#,
            &dir,
        ),
        &dir,
    );
    ok(&r);
    assert_eq!(
        std::fs::read_to_string(dir.join("batch.json")).expect("batch.json"),
        adapt(&example("batch/batch.json"), &dir),
        "examples/batch/batch.json is the guide's batch manifest"
    );
    let report = read_json(&dir.join("batch_report.json"));
    assert_eq!(
        batch_statuses(&report),
        // VMs without an `id` are named vm_<index>, as in the Python tool.
        [
            ("vm_0".to_owned(), "succeeded".to_owned()),
            ("vm_1".to_owned(), "succeeded".to_owned()),
            ("vm_2".to_owned(), "succeeded".to_owned())
        ]
    );
    assert!(dir.join("batch_summary.txt").is_file());
    for vm in ["vm1", "vm2", "vm3"] {
        assert!(identical(
            &dir.join(&format!("vmware/{vm}.vmdk")),
            "vmdk",
            &dir.join(&format!("converted/{vm}/boot.qcow2")),
            "qcow2"
        ));
        assert!(dir.join(&format!("converted/{vm}/report.json")).is_file());
    }
}

/// "Example: Large Datacenter Migration": examples/batch/large-datacenter.sh generates the 100
/// manifests and the batch as the guide does. Its last line runs them with `--dry-run` added:
/// under the production profile each of the 100 VMs is a guest repair, an appliance launch of
/// its own; the workflow tests run the real thing on fewer VMs.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "guestfish",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io, guestfish and bash (install: scripts/install-deps.sh full)"
)]
fn large_datacenter_migration() {
    if !(guest_tools() && require_tool("bash")) {
        return;
    }
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.join("vmware")).expect("mkdir");
    for i in 1..=100 {
        run_ok(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "vmdk"])
                .arg(dir.join(&format!("vmware/vm{i}.vmdk")))
                .arg("16M"),
        );
    }
    let script = adapt(&example("batch/large-datacenter.sh"), &dir).replace(
        "sudo hyper2kvm --batch-manifest",
        "sudo hyper2kvm --dry-run --batch-manifest",
    );
    let r = bash(&script, &dir);
    ok(&r);
    let batch = read_json(&dir.join("datacenter-batch.json"));
    assert_eq!(batch["vms"].as_array().expect("vms").len(), 100);
    for i in 1..=100 {
        assert!(
            r.stdout.contains(&format!("vm{i}/boot.qcow2")),
            "vm{i} planned:\n{}",
            r.stdout
        );
    }
    assert!(
        tree(&dir.join("converted")).is_empty(),
        "a dry run writes nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Feature 2: Network & Storage Mapping
// ---------------------------------------------------------------------------------------------

const VM_WITH_NICS: &str = r#"{
  "manifest_version": "1.0",
  "source": {"provider": "vmware", "vm_name": "web-server"},
  "disks": [{"id": "boot", "local_path": "/vmware/web-server.vmdk"}],
  "nics": [
    {"id": "net0", "network": "VM Network", "mac": "00:50:56:ab:cd:ef"},
    {"id": "net1", "network": "DMZ Network", "mac": "00:50:56:ab:cd:01"}
  ],
  "pipeline": {"convert": {"enabled": true}}
}"#;

/// "Network Mapping Configuration": the guide's JSON as a `--config` layer over a VM with two
/// NICs; the converted VM's domain XML has them on br0 and br-dmz with their MACs kept.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn network_mapping_configuration() {
    if !core_tools() {
        return;
    }
    let dir = TestDir::new();
    vmdk(&dir.join("vmware/web-server.vmdk"));
    let config = dir.write(
        "network-mapping.json",
        r#"{
  "manifest_version": "1.0",
  "network_mapping": {
    "source_networks": {
      "VM Network": "br0",
      "DMZ Network": "br-dmz",
      "Internal": "br-internal"
    },
    "mac_address_policy": "preserve",
    "mac_address_overrides": {
      "00:50:56:ab:cd:ef": "52:54:00:12:34:56"
    }
  }
}"#,
    );
    let vm = dir.write("vm.json", &adapt(VM_WITH_NICS, &dir));
    let dumped = dump_config(&[Path::new("--config"), &config, Path::new("--manifest"), &vm]);
    assert_eq!(
        dumped["network_mapping"]["source_networks"]["DMZ Network"],
        "br-dmz"
    );
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&config)
        .arg("--manifest")
        .arg(&vm)
        .args(["--progress", "none"]));
    ok(&r);
    let xml = std::fs::read_to_string(dir.join("output/web-server.xml")).expect("domain XML");
    assert!(
        xml.contains("<source bridge='br0'/>") || xml.contains("<source bridge=\"br0\"/>"),
        "{xml}"
    );
    assert!(xml.contains("br-dmz"), "{xml}");
    // mac_address_policy: preserve keeps both source MACs; the overrides would apply only
    // with custom, and the report says so.
    assert!(xml.contains("00:50:56:ab:cd:ef"), "preserved: {xml}");
    assert!(xml.contains("00:50:56:ab:cd:01"), "preserved: {xml}");
    assert!(!xml.contains("52:54:00:12:34:56"), "{xml}");
    let warnings = read_json(&dir.join("output/report.json"))["warnings"].to_string();
    assert!(
        warnings.contains("mac_address_overrides is set but mac_address_policy is 'preserve'"),
        "{warnings}"
    );
}

/// "Storage Mapping Configuration": the guide's JSON as a `--config` layer over a VM with the
/// three disks it names; each converted disk lands in its mapped directory, as qcow2.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn storage_mapping_configuration() {
    if !core_tools() {
        return;
    }
    let dir = TestDir::new();
    for d in ["boot", "data", "logs"] {
        image(&dir.join(&format!("vmware/{d}.raw")), "raw");
    }
    let config = dir.write(
        "storage-mapping.json",
        &adapt(
            r#"{
  "manifest_version": "1.0",
  "storage_mapping": {
    "default_pool": "vms",
    "disk_mappings": {
      "boot": "/var/lib/libvirt/images/boot",
      "data": "/mnt/storage/data",
      "logs": "/mnt/fast-ssd/logs"
    },
    "format_override": "qcow2"
  }
}"#,
            &dir,
        ),
    );
    let vm = dir.write(
        "vm.json",
        &adapt(
            r#"{
  "manifest_version": "1.0",
  "source": {"provider": "vmware", "vm_name": "web-server"},
  "disks": [
    {"id": "boot", "local_path": "/vmware/boot.raw"},
    {"id": "data", "local_path": "/vmware/data.raw"},
    {"id": "logs", "local_path": "/vmware/logs.raw"}
  ],
  "pipeline": {"convert": {"enabled": true}},
  "output": {"format": "raw"}
}"#,
            &dir,
        ),
    );
    let dumped = dump_config(&[Path::new("--config"), &config, Path::new("--manifest"), &vm]);
    assert_eq!(dumped["storage_mapping"]["format_override"], "qcow2");
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&config)
        .arg("--manifest")
        .arg(&vm)
        .args(["--progress", "none"]));
    ok(&r);
    for (d, target) in [
        ("boot", "var/lib/libvirt/images/boot"),
        ("data", "mnt/storage/data"),
        ("logs", "mnt/fast-ssd/logs"),
    ] {
        let out = dir.join(&format!("{target}/{d}.qcow2"));
        assert!(
            identical(&dir.join(&format!("vmware/{d}.raw")), "raw", &out, "qcow2"),
            "{}: {:?}",
            out.display(),
            tree(dir.path())
        );
    }
}

/// "Usage Example" of network and storage mapping: examples/batch/storage-mapping.yaml, its
/// two VMDKs. As written it enables no stage, so it loads, checks and reports; with convert
/// enabled from a `--config` layer, each disk lands in its mapped directory as qcow2.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn network_and_storage_mapping_usage_example() {
    if !core_tools() {
        return;
    }
    let dir = TestDir::new();
    for d in ["boot", "data"] {
        vmdk(&dir.join(&format!("vmware/web-server-{d}.vmdk")));
    }
    let manifest = dir.write(
        "storage-mapping.yaml",
        &adapt(&example("batch/storage-mapping.yaml"), &dir),
    );
    let dumped = dump_config(&[Path::new("--manifest"), &manifest]);
    assert_eq!(
        dumped["network_mapping"]["source_networks"]["VM Network"],
        "br0"
    );
    assert_eq!(dumped["storage_mapping"]["default_pool"], "vms");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run"));
    ok(&r);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    ok(&r);
    let convert = dir.write("convert.yaml", "pipeline:\n  convert:\n    enabled: true\n");
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&convert)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none", "--overwrite"]));
    ok(&r);
    for (d, target) in [
        ("boot", "var/lib/libvirt/images/production"),
        ("data", "mnt/ssd/vm-data"),
    ] {
        assert!(
            identical(
                &dir.join(&format!("vmware/web-server-{d}.vmdk")),
                "vmdk",
                &dir.join(&format!("{target}/{d}.qcow2")),
                "qcow2"
            ),
            "{d}: {:?}",
            tree(dir.path())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Feature 3: Migration Profiles
// ---------------------------------------------------------------------------------------------

/// "Using Profiles in Manifests": production with compress_level 9 from profile_overrides.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn using_profiles_in_manifests() {
    if !core_tools() {
        return;
    }
    let dir = TestDir::new();
    vmdk(&dir.join("vmware/web-server.vmdk"));
    let manifest = dir.write(
        "manifest.json",
        &adapt(
            r#"{
  "manifest_version": "1.0",
  "profile": "production",
  "profile_overrides": {
    "pipeline": {
      "convert": {
        "compress_level": 9
      }
    }
  },
  "source": {"provider": "vmware", "vm_name": "web-server"},
  "disks": [{"id": "boot", "local_path": "/vmware/web-server.vmdk"}]
}"#,
            &dir,
        ),
    );
    let dumped = dump_config(&[Path::new("--manifest"), &manifest]);
    let pipeline = &dumped["pipeline"];
    assert_eq!(pipeline["convert"]["compress_level"], 9);
    assert_eq!(pipeline["convert"]["compress"], true);
    assert_eq!(pipeline["fix"]["enabled"], true);
    assert_eq!(pipeline["validate"]["enabled"], true);
    assert_eq!(dumped["output"]["format"], "qcow2");
}

/// "Creating Custom Profiles": examples/profiles/organization.yaml (the guide's
/// `/etc/hyper2kvm/profiles/organization.yaml`) used as the guide's manifest does.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn creating_custom_profiles() {
    if !core_tools() {
        return;
    }
    let dir = TestDir::new();
    vmdk(&dir.join("vmware/web-server.vmdk"));
    let manifest = dir.write(
        "manifest.json",
        &adapt(
            r#"{
  "manifest_version": "1.0",
  "profile": "organization",
  "custom_profile_path": "/etc/hyper2kvm/profiles",
  "source": {"provider": "vmware", "vm_name": "web-server"},
  "disks": [{"id": "boot", "local_path": "/vmware/web-server.vmdk"}]
}"#,
            &dir,
        ),
    );
    let dumped = dump_config(&[Path::new("--manifest"), &manifest]);
    let pipeline = &dumped["pipeline"];
    assert_eq!(pipeline["convert"]["compress_level"], 8, "{dumped:#}");
    assert_eq!(pipeline["fix"]["fstab_mode"], "stabilize-all");
    assert_eq!(pipeline["fix"]["remove_vmware_tools"], true);
    assert_eq!(
        pipeline["fix"]["update_grub"], true,
        "inherited from production"
    );
    assert_eq!(
        dumped["hooks"]["post_convert"][0]["url"],
        "https://monitoring.example.com/api/conversions"
    );
}

/// examples/batch/batch-with-profiles.yaml: four VMs, the shared production profile, a
/// profile_overrides and two other built-in profiles; planned with `--dry-run`.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "guestfish"
    ),
    ignore = "needs qemu-img, qemu-io and guestfish (install: scripts/install-deps.sh full)"
)]
fn batch_with_profiles() {
    if !guest_tools() {
        return;
    }
    let dir = TestDir::new();
    let vms = ["web-server", "db-server", "test-server", "old-server"];
    for vm in vms {
        vmware_vm(&dir, vm);
    }
    let batch = dir.write(
        "batch-with-profiles.yaml",
        &adapt(&example("batch/batch-with-profiles.yaml"), &dir),
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .arg("--dry-run"));
    ok(&r);
    let converted = dir.join("converted").display().to_string();
    assert!(
        r.stdout
            .contains(&format!("{converted}/web-server/boot.qcow2")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("{converted}/test-server/boot.raw")),
        "testing: raw\n{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("{converted}/old-server/boot.qcow2")),
        "{}",
        r.stdout
    );
    let positions: Vec<usize> = vms
        .iter()
        .map(|vm| r.stdout.find(vm).expect("planned"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "priority order:\n{}",
        r.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Feature 4: Pre/Post Conversion Hooks
// ---------------------------------------------------------------------------------------------

/// "Hook Types": the guide's script, python and HTTP hooks (examples/hooks/hook-types.json)
/// around a real conversion: the script backs the source up, the validator module of
/// examples/hooks checks the qcow2, the listener gets the webhook.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "python3"
    ),
    ignore = "needs qemu-img, qemu-io and python3 (install: scripts/install-deps.sh core)"
)]
fn hook_types() {
    if !(core_tools() && require_tool("python3")) {
        return;
    }
    let dir = TestDir::new();
    let listener = Listener::start(&[200]);
    let source = dir.join("vmware/web-server.vmdk");
    vmdk(&source);
    let manifest = dir.write(
        "hook-types.json",
        &to_listener(&adapt(&example("hooks/hook-types.json"), &dir), &listener),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run")
        .env("PYTHONPATH", hooks_dir()));
    ok(&r);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PYTHONPATH", hooks_dir()));
    ok(&r);
    let output = dir.join("converted/boot.qcow2");
    assert!(identical(&source, "vmdk", &output, "qcow2"));
    assert!(
        identical(
            &source,
            "vmdk",
            &dir.join("backups/web-server/web-server.vmdk"),
            "vmdk"
        ),
        "backup-vm.sh copied the source: {:?}",
        tree(dir.path())
    );
    let report = read_json(&dir.join("converted/report.json"));
    assert_eq!(
        hooks_of(&report),
        [
            ("pre_convert".to_owned(), "script".to_owned(), true),
            ("post_convert".to_owned(), "python".to_owned(), true),
            ("post_convert".to_owned(), "http".to_owned(), true),
        ]
    );
    let requests = listener.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let req = &requests[0];
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/migrations")
    );
    assert_eq!(req.header("authorization"), Some("Bearer TOKEN"));
    let body = req.json();
    assert_eq!(body["vm_name"], "web-server");
    assert_eq!(body["stage"], "post_convert");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"], output.display().to_string());
}

/// "Complete Example" of hooks: examples/hooks/complete-example.json. As written it enables no
/// stage: the pre_extraction script runs and the report says why the others do not. With
/// convert enabled from a `--config` layer, the python validator and the webhook run too.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "python3"
    ),
    ignore = "needs qemu-img, qemu-io and python3 (install: scripts/install-deps.sh core)"
)]
fn hooks_complete_example() {
    if !(core_tools() && require_tool("python3")) {
        return;
    }
    let dir = TestDir::new();
    let listener = Listener::start(&[200]);
    vmdk(&dir.join("vmware/web-server.vmdk"));
    let manifest = dir.write(
        "complete-example.json",
        &to_listener(
            &adapt(&example("hooks/complete-example.json"), &dir),
            &listener,
        ),
    );
    let notify_log = dir.join("notify.log");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run")
        .env("PYTHONPATH", hooks_dir()));
    ok(&r);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"])
        .env("PYTHONPATH", hooks_dir())
        .env("NOTIFY_LOG", &notify_log));
    ok(&r);
    let notice = std::fs::read_to_string(&notify_log).expect("notify-start.sh ran");
    assert!(
        notice.starts_with("migration of web-server starting"),
        "{notice}"
    );
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(
        hooks_of(&report),
        [("pre_extraction".to_owned(), "script".to_owned(), true)]
    );
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("hooks.pre_fix"), "{warnings}");
    assert!(warnings.contains("hooks.post_convert"), "{warnings}");
    assert!(listener.requests().is_empty());

    let convert = dir.write("convert.yaml", "pipeline:\n  convert:\n    enabled: true\n");
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&convert)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none", "--overwrite"])
        .env("PYTHONPATH", hooks_dir())
        .env("NOTIFY_LOG", &notify_log));
    ok(&r);
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(
        hooks_of(&report),
        [
            ("pre_extraction".to_owned(), "script".to_owned(), true),
            ("post_convert".to_owned(), "python".to_owned(), true),
            ("post_convert".to_owned(), "http".to_owned(), true),
        ]
    );
    let requests = listener.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].target, "/api/status");
    let body = requests[0].json();
    assert_eq!(body["vm"], "web-server");
    let completed = body["completed"].as_str().expect("completed");
    assert!(
        regex_lite::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
            .expect("regex")
            .is_match(completed),
        "{completed}"
    );
}

/// Best Practices, Hooks: "Test Hooks Independently: Run scripts/functions manually before
/// adding to manifest". Each sample script of examples/hooks/scripts and each validator
/// function, run by hand as a hook would run them.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "python3"
    ),
    ignore = "needs qemu-img, qemu-io and python3 (install: scripts/install-deps.sh core)"
)]
fn test_hooks_independently() {
    if !(core_tools() && require_tool("python3")) {
        return;
    }
    let dir = TestDir::new();
    let disk = dir.join("vmware/web-server.vmdk");
    vmdk(&disk);
    let scripts = hooks_dir().join("scripts");
    for (script, dest) in [
        ("backup-vm.sh", "backups/web-server"),
        ("backup-disk.sh", "backups-disk"),
        ("backup.sh", "backups-wf2"),
    ] {
        let out = run_ok(
            Command::new(scripts.join(script))
                .arg(&disk)
                .arg(dir.join(dest))
                .env("VM_NAME", "web-server")
                .env("OUTPUT_PATH", dir.join("converted/boot.qcow2")),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("backed up"),
            "{script}"
        );
        assert_eq!(
            sha256(&dir.join(dest).join("web-server.vmdk")),
            sha256(&disk),
            "{script}"
        );
    }
    // A backup that cannot be written fails the hook.
    let blocked = dir.write("blocked", "a file, not a directory");
    let r = Command::new(scripts.join("backup-disk.sh"))
        .arg(&disk)
        .arg(&blocked)
        .output()
        .expect("spawn");
    assert!(!r.status.success());

    let log = dir.join("notify.log");
    let out = run_ok(
        Command::new(scripts.join("notify-start.sh"))
            .env("VM", "web-server")
            .env("NOTIFY_LOG", &log),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("migration of web-server starting"));
    assert!(
        std::fs::read_to_string(&log)
            .expect("log")
            .starts_with("migration of web-server")
    );
    let r = Command::new(scripts.join("notify-start.sh"))
        .env_remove("VM")
        .output()
        .expect("spawn");
    assert!(!r.status.success(), "VM is required");

    let qcow2 = dir.join("boot.qcow2");
    make_image(&qcow2, "qcow2", None);
    let call = |module: &str, expr: String| -> Value {
        let out = run_ok(
            Command::new("python3")
                .arg("-c")
                .arg(format!(
                    "import json, {module}; print(json.dumps({module}.{expr}))"
                ))
                .env("PYTHONPATH", hooks_dir()),
        );
        serde_json::from_slice(&out.stdout).expect("the function's result as JSON")
    };
    let q = qcow2.display().to_string();
    let v = disk.display().to_string();
    let mv = "migration_validators";
    assert_eq!(
        call(mv, format!("verify_disk_integrity({q:?}, 'qcow2')"))["success"],
        true
    );
    assert_eq!(
        call(mv, format!("verify_disk_integrity({v:?}, 'qcow2')"))["success"],
        false,
        "a VMDK is not a qcow2"
    );
    assert_eq!(
        call(mv, format!("verify_disk_integrity({v:?}, 'vmdk')"))["success"],
        true
    );
    assert_eq!(
        call("validators", format!("verify_qcow2({q:?})"))["success"],
        true
    );
    assert_eq!(
        call("validators", format!("verify_qcow2({v:?})"))["success"],
        false
    );
}

// ---------------------------------------------------------------------------------------------
// Feature 5: Libvirt XML Input
// ---------------------------------------------------------------------------------------------

/// Places examples/libvirt-xml/<name>.xml (paths adapted) at `dest` and makes its disks.
fn domain_with_disks(dir: &TestDir, name: &str, dest: &Path) {
    let xml = adapt(&example(&format!("libvirt-xml/{name}.xml")), dir);
    let re =
        regex_lite::Regex::new(r"<driver name='qemu' type='(\w+)'/>\s*<source file='([^']+)'/>")
            .expect("regex");
    for c in re.captures_iter(&xml) {
        image(Path::new(&c[2]), &c[1]);
    }
    std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
    std::fs::write(dest, xml).expect("write domain");
}

/// "Usage" of libvirt XML input: the guide's config.yaml (examples/libvirt-xml/config.yaml)
/// and `--libvirt-xml` on examples/libvirt-xml/web-server.xml (at the guide's
/// `/etc/libvirt/qemu/my-vm.xml`, under the test directory).
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io and bash (install: scripts/install-deps.sh core)"
)]
fn libvirt_xml_input_usage() {
    if !(core_tools() && require_tool("bash")) {
        return;
    }
    let dir = TestDir::new();
    domain_with_disks(&dir, "web-server", &dir.join("etc/libvirt/qemu/my-vm.xml"));
    let r = bash(
        &adapt(
            r#"
# Create config for libvirt-xml mode
cat > config.yaml <<EOF
cmd: libvirt-xml
output_dir: /srv/migrate/converted
EOF

# Parse domain XML
sudo hyper2kvm \\
  --config config.yaml \\
  --libvirt-xml /etc/libvirt/qemu/my-vm.xml

# Generated: /srv/migrate/converted/manifest.json
"#,
            &dir,
        ),
        &dir,
    );
    ok(&r);
    assert_eq!(
        std::fs::read_to_string(dir.join("config.yaml")).expect("config.yaml"),
        adapt(&example("libvirt-xml/config.yaml"), &dir)
    );
    let m = read_json(&dir.join("srv/migrate/converted/manifest.json"));
    assert_eq!(m["source"]["provider"], "libvirt");
    assert_eq!(m["source"]["vm_name"], "web-server");
    assert_eq!(m["vm"]["firmware"], "uefi", "<loader type='pflash'>");
    assert_eq!(m["vm"]["os_hint"], "rhel9");
    assert_eq!(m["metadata"]["memory_bytes"], 8_589_934_592_u64);
    assert_eq!(m["metadata"]["vcpus"], 4);
    let disks: Vec<&str> = m["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(disks, ["vda", "vdb"], "the CD-ROM is not a disk");
    assert_eq!(m["nics"][0]["network"], "br0");
    assert_eq!(m["nics"][0]["mac"], "52:54:00:6b:3c:58");
    if require_libvirt_tools() {
        for name in ["web-server", "db-server"] {
            let xml = repo().join(format!("examples/libvirt-xml/{name}.xml"));
            let v = Command::new("virt-xml-validate")
                .arg(&xml)
                .arg("domain")
                .output()
                .expect("spawn virt-xml-validate");
            assert!(
                v.status.success(),
                "{name}.xml: {}{}",
                String::from_utf8_lossy(&v.stdout),
                String::from_utf8_lossy(&v.stderr)
            );
        }
    }
}

/// "Extract from Running VM": `virsh dumpxml` of a running VM is replaced by copying
/// examples/libvirt-xml/db-server.xml (no libvirt host here); the rest is the guide's, the
/// `--config <(echo ...)` with `cmd: libvirt-xml` included, then the conversion of the
/// generated manifest, whose domain XML libvirt's schema accepts.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io and bash (install: scripts/install-deps.sh core)"
)]
fn extract_from_running_vm() {
    if !(core_tools() && require_tool("bash")) {
        return;
    }
    let dir = TestDir::new();
    domain_with_disks(&dir, "db-server", &dir.join("libvirt/db-server.xml"));
    let script = adapt(
        r#"
# Dump XML from running VM
virsh dumpxml my-vm > /tmp/my-vm.xml

# Parse it
sudo hyper2kvm \\
  --config <(echo "cmd: libvirt-xml\noutput_dir: /srv/migrate") \\
  --libvirt-xml /tmp/my-vm.xml

# Convert using generated manifest
sudo hyper2kvm --config /srv/migrate/manifest.json
"#,
        &dir,
    )
    .replace(
        "virsh dumpxml my-vm",
        &format!("cat {}", dir.join("libvirt/db-server.xml").display()),
    )
    .replace(
        "/tmp/my-vm.xml",
        &dir.join("my-vm.xml").display().to_string(),
    );
    let r = bash(&script, &dir);
    ok(&r);
    let m = read_json(&dir.join("srv/migrate/manifest.json"));
    assert_eq!(m["vm"]["firmware"], "bios");
    assert_eq!(m["nics"][0]["type"], "network");
    let source = dir.join("var/lib/libvirt/images/db-server.qcow2");
    assert!(
        identical(
            &source,
            "qcow2",
            &dir.join("srv/migrate/sda.qcow2"),
            "qcow2"
        ),
        "{:?}",
        tree(dir.path())
    );
    let domain = dir.join("srv/migrate/db-server.xml");
    assert!(domain.is_file(), "{:?}", tree(dir.path()));
    if require_libvirt_tools() {
        let defined = validate_and_define(&domain, "db-server");
        assert!(defined.contains("<name>db-server</name>"), "{defined}");
    }
}

/// "Generated Manifest": the guide's manifest of a libvirt import, as a manifest of its own. Its
/// disk is a 100 GiB qcow2 (the guide's `bytes`), empty and sparse; the elided digest
/// (`sha256:abc123...`) is the disk's own, and the elided `pipeline` and `output` are empty.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn generated_manifest() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let disk = dir.join("var/lib/libvirt/images/boot.qcow2");
    std::fs::create_dir_all(disk.parent().expect("parent")).expect("mkdir");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("100G"),
    );
    let text = adapt(
        r#"{
  "manifest_version": "1.0",
  "source": {
    "provider": "libvirt",
    "vm_id": "domain-uuid",
    "vm_name": "web-server",
    "libvirt_xml_path": "/etc/libvirt/qemu/web-server.xml"
  },
  "disks": [
    {
      "id": "vda",
      "source_format": "qcow2",
      "local_path": "/var/lib/libvirt/images/boot.qcow2",
      "bytes": 107374182400,
      "checksum": "sha256:abc123...",
      "boot_order_hint": 0,
      "disk_type": "boot"
    }
  ],
  "firmware": {"type": "uefi"},
  "os_hint": "rhel9",
  "metadata": {
    "networks": [
      {"type": "bridge", "source": "br0", "mac": "52:54:00:6b:3c:58"}
    ],
    "memory_bytes": 8589934592,
    "vcpus": 4
  },
  "pipeline": {},
  "output": {}
}"#,
        &dir,
    )
    .replace("sha256:abc123...", &sha256(&disk));
    let manifest = dir.write("manifest.json", &text);
    let dumped = dump_config(&[Path::new("--manifest"), &manifest]);
    assert_eq!(dumped["disks"][0]["bytes"], 107_374_182_400_u64);
    assert_eq!(dumped["source"]["vm_name"], "web-server");
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dry-run"));
    ok(&r);
    assert!(r.stdout.contains("web-server"), "{}", r.stdout);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    ok(&r);
}

// ---------------------------------------------------------------------------------------------
// Complete Migration Workflows
// ---------------------------------------------------------------------------------------------

/// "Workflow 1: Simple Batch Migration": three VMware-style Debian guests under the production
/// profile (guest repair, compressed qcow2, validation), three at a time.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "guestfish",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io, guestfish and bash (install: scripts/install-deps.sh full)"
)]
fn workflow_1_simple_batch_migration() {
    if !(guest_tools() && require_tool("bash")) {
        return;
    }
    let dir = TestDir::new();
    for vm in ["vm1", "vm2", "vm3"] {
        debian_vmdk(&dir.join(&format!("vmware/{vm}.vmdk")));
        std::fs::create_dir_all(dir.join(&format!("srv/migrate/{vm}"))).expect("mkdir");
    }
    // The guide assumes /srv/migrate/<vm>/ exists; the loop above made it.
    let r = bash(
        &adapt(
            r#"
# 1. Create manifests for each VM
for vm in vm1 vm2 vm3; do
  cat > /srv/migrate/$vm/manifest.json <<EOF
{
  "manifest_version": "1.0",
  "profile": "production",
  "source": {"provider": "vmware", "vm_name": "$vm"},
  "disks": [{"id": "boot", "local_path": "/vmware/$vm.vmdk"}],
  "output": {"directory": "/converted/$vm"}
}
EOF
done

# 2. Create batch manifest
cat > batch.json <<EOF
{
  "batch_version": "1.0",
  "batch_metadata": {"parallel_limit": 3},
  "vms": [
    {"manifest": "/srv/migrate/vm1/manifest.json"},
    {"manifest": "/srv/migrate/vm2/manifest.json"},
    {"manifest": "/srv/migrate/vm3/manifest.json"}
  ]
}
EOF

# 3. Run batch
sudo hyper2kvm --batch-manifest batch.json
"#,
            &dir,
        ),
        &dir,
    );
    ok(&r);
    let report = read_json(&dir.join("batch_report.json"));
    assert_eq!(
        batch_statuses(&report),
        // VMs without an `id` are named vm_<index>, as in the Python tool.
        [
            ("vm_0".to_owned(), "succeeded".to_owned()),
            ("vm_1".to_owned(), "succeeded".to_owned()),
            ("vm_2".to_owned(), "succeeded".to_owned())
        ]
    );
    for vm in ["vm1", "vm2", "vm3"] {
        let out = dir.join(&format!("converted/{vm}"));
        let rep = read_json(&out.join("report.json"));
        assert_eq!(
            rep["pipeline"]["stages"]["fix"]["result"]["guest"]["distro"],
            "debian"
        );
        assert!(out.join("boot.qcow2").is_file(), "{:?}", tree(&out));
    }
}

/// "Workflow 2: Profile-Based with Hooks": production with a pre_fix backup script and a
/// post_convert webhook, on a VMware-style Debian guest.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "guestfish"
    ),
    ignore = "needs qemu-img, qemu-io and guestfish (install: scripts/install-deps.sh full)"
)]
fn workflow_2_profile_based_with_hooks() {
    if !guest_tools() {
        return;
    }
    let dir = TestDir::new();
    // Guest repair under TCG takes minutes; the listener outlives the whole run.
    let listener = Listener::start_for(&[200], std::time::Duration::from_secs(1200));
    let source = dir.join("vmware/web-server.vmdk");
    debian_vmdk(&source);
    let before = sha256(&source);
    let script = to_listener(
        &adapt(
            r#"
# 1. Create manifest with profile and hooks
cat > manifest.json <<EOF
{
  "manifest_version": "1.0",
  "profile": "production",
  "hooks": {
    "pre_fix": [{
      "type": "script",
      "path": "/scripts/backup.sh",
      "args": ["{{ source_path }}", "/backups"]
    }],
    "post_convert": [{
      "type": "http",
      "url": "https://api.example.com/notify",
      "method": "POST",
      "body": {"vm": "{{ vm_name }}", "status": "done"}
    }]
  },
  "source": {"provider": "vmware", "vm_name": "web-server"},
  "disks": [{"id": "boot", "local_path": "/vmware/web-server.vmdk"}]
}
EOF

# 2. Run conversion
sudo hyper2kvm --config manifest.json
"#,
            &dir,
        ),
        &listener,
    );
    let r = bash(&script, &dir);
    ok(&r);
    assert_eq!(sha256(&source), before, "the source is untouched");
    assert_eq!(
        sha256(&dir.join("backups/web-server.vmdk")),
        before,
        "backup.sh ran"
    );
    let report = read_json(&dir.join("output/report.json"));
    assert_eq!(
        hooks_of(&report),
        [
            ("pre_fix".to_owned(), "script".to_owned(), true),
            ("post_convert".to_owned(), "http".to_owned(), true),
        ]
    );
    assert_eq!(
        report["pipeline"]["stages"]["fix"]["result"]["guest"]["distro"],
        "debian"
    );
    let requests = listener.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].target, "/notify");
    assert_eq!(
        requests[0].json(),
        serde_json::json!({"vm": "web-server", "status": "done"})
    );
}

/// "Workflow 3: Libvirt Import + Batch": `virsh list`/`virsh dumpxml` of a host's VMs are
/// replaced by examples/libvirt-xml's two domains; each is imported with
/// `--config <(echo ...)`, the batch is made from the generated manifests and converts both.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn workflow_3_libvirt_import_and_batch() {
    if !core_tools() {
        return;
    }
    let dir = TestDir::new();
    for vm in ["web-server", "db-server"] {
        domain_with_disks(&dir, vm, &dir.join(&format!("libvirt/{vm}.xml")));
    }
    let script = adapt(
        r#"
# 1. Extract manifests from libvirt VMs
for vm in $(virsh list --name --all); do
  virsh dumpxml $vm > /tmp/${vm}.xml
  sudo hyper2kvm \\
    --config <(echo "cmd: libvirt-xml\noutput_dir: /srv/migrate/$vm") \\
    --libvirt-xml /tmp/${vm}.xml
done

# 2. Create batch from generated manifests
cat > batch.json <<EOF
{
  "batch_version": "1.0",
  "vms": [
    $(for vm in $(virsh list --name --all); do
        echo "{\"manifest\": \"/srv/migrate/$vm/manifest.json\"},"
      done | sed '$ s/,$//')
  ]
}
EOF

# 3. Run batch
sudo hyper2kvm --batch-manifest batch.json
"#,
        &dir,
    )
    .replace("$(virsh list --name --all)", "web-server db-server")
    .replace(
        "virsh dumpxml $vm",
        &format!("cat {}/libvirt/$vm.xml", dir.path().display()),
    )
    .replace(
        "/tmp/${vm}.xml",
        &format!("{}/${{vm}}.xml", dir.path().display()),
    );
    let r = bash(&script, &dir);
    ok(&r);
    let report = read_json(&dir.join("batch_report.json"));
    assert_eq!(
        batch_statuses(&report),
        [
            ("vm_0".to_owned(), "succeeded".to_owned()),
            ("vm_1".to_owned(), "succeeded".to_owned())
        ]
    );
    for (vm, disk, src) in [
        ("web-server", "vda", "web-server-boot.qcow2"),
        ("web-server", "vdb", "web-server-data.raw"),
        ("db-server", "sda", "db-server.qcow2"),
    ] {
        let driver = if src.ends_with(".raw") {
            "raw"
        } else {
            "qcow2"
        };
        assert!(identical(
            &dir.join(&format!("var/lib/libvirt/images/{src}")),
            driver,
            &dir.join(&format!("srv/migrate/{vm}/{disk}.qcow2")),
            "qcow2"
        ));
    }
    if require_libvirt_tools() {
        for vm in ["web-server", "db-server"] {
            let defined = validate_and_define(&dir.join(&format!("srv/migrate/{vm}/{vm}.xml")), vm);
            assert!(defined.contains(&format!("<name>{vm}</name>")), "{defined}");
        }
    }
}

/// "Workflow 4: Network Mapping Migration": the guide's manifest.yaml (also
/// examples/batch/network-mapping.yaml) under the production profile, on a Debian guest.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "guestfish",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io, guestfish and bash (install: scripts/install-deps.sh full)"
)]
fn workflow_4_network_mapping_migration() {
    if !(guest_tools() && require_tool("bash")) {
        return;
    }
    let dir = TestDir::new();
    debian_vmdk(&dir.join("vmware/web-server.vmdk"));
    let r = bash(
        &adapt(
            r#"
# 1. Create manifest with network mapping
cat > manifest.yaml <<EOF
manifest_version: "1.0"
profile: production

network_mapping:
  source_networks:
    "VM Network": "br0"
    "DMZ": "br-dmz"
  mac_address_policy: preserve

source:
  provider: vmware
  vm_name: web-server

disks:
  - id: boot
    local_path: /vmware/web-server.vmdk

output:
  directory: /converted
EOF

# 2. Convert
sudo hyper2kvm --config manifest.yaml
"#,
            &dir,
        ),
        &dir,
    );
    ok(&r);
    assert_eq!(
        strip_comments(&std::fs::read_to_string(dir.join("manifest.yaml")).expect("manifest")),
        strip_comments(&adapt(&example("batch/network-mapping.yaml"), &dir)),
        "examples/batch/network-mapping.yaml is the guide's manifest"
    );
    let example_manifest = dir.write(
        "network-mapping.yaml",
        &adapt(&example("batch/network-mapping.yaml"), &dir),
    );
    let dumped = dump_config(&[Path::new("--manifest"), &example_manifest]);
    assert_eq!(
        dumped["network_mapping"]["source_networks"]["DMZ"],
        "br-dmz"
    );
    let report = read_json(&dir.join("converted/report.json"));
    assert_eq!(
        report["pipeline"]["stages"]["fix"]["result"]["guest"]["distro"],
        "debian"
    );
    assert!(dir.join("converted/boot.qcow2").is_file());
    assert!(
        dir.join("converted/web-server.xml").is_file(),
        "{:?}",
        tree(&dir.join("converted"))
    );
}
