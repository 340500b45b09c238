//! Each bad input: exit code 2, a message naming the file and every problem, nothing written.

use crate::support::*;

/// Runs the binary on `manifest` (written as `name`) and returns redacted stderr, after checking
/// that it exited 2 and wrote nothing beside the manifest and its disks.
fn rejected(dir: &TestDir, name: &str, manifest: &str) -> String {
    let path = dir.write(name, manifest);
    let before = tree(dir.path());
    let r = run(hyper2kvm().arg("--manifest").arg(&path));
    assert_eq!(
        r.code,
        Some(2),
        "expected exit 2:\n{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "", "nothing on stdout");
    assert_eq!(tree(dir.path()), before, "nothing was written");
    redact(&r.stderr, dir)
}

fn with_disk() -> TestDir {
    let dir = TestDir::new();
    dir.write("disk.raw", "0123456789");
    std::fs::create_dir(dir.join("a-directory")).expect("mkdir");
    dir
}

#[test]
fn malformed_json_names_line_and_column() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.json",
        "{\n  \"manifest_version\": \"1.0\",\n  \"disks\": [\n    {\"id\": \"d0\",}\n  ]\n}\n",
    );
    insta::assert_snapshot!(err, @"error: [TMP]/vm.json: invalid JSON: trailing comma at line 4 column 17");
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - id: d0\n    bytes: [1, 2\n  local_path: x\n",
    );
    insta::assert_snapshot!(err);
}

#[test]
fn top_level_must_be_a_mapping() {
    let dir = with_disk();
    let err = rejected(&dir, "vm.yaml", "- just\n- a list\n");
    insta::assert_snapshot!(err, @"error: [TMP]/vm.yaml: the top level must be a mapping (an object), found a list");
}

#[test]
fn every_problem_at_once() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.yaml",
        r#"manifest_version: "1.0"
vm: {firmware: efi, cpu: 0, mem_gb: "4"}
disks:
  - id: d0
    source_format: raw
    bytes: 10
    local_path: disk.raw
  - id: d0
    source_format: vmdk
    bytes: "10"
    local_path: missing.vmdk
    checksum: "sha256:ABC"
  - source_format: vhdx
    bytes: 1
    local_path: a-directory
    lable: data
pipline:
  convert: {enabled: true}
pipeline:
  convert: {enabled: yes, compress_level: 11, compres: true}
output: {format: qcow}
"#,
    );
    insta::assert_snapshot!(err);
}

#[test]
fn missing_required_fields_and_version() {
    let dir = with_disk();
    let err = rejected(&dir, "vm.json", r#"{"source": {"vm_name": "x"}}"#);
    insta::assert_snapshot!(err);
}

#[test]
fn unsupported_version_and_empty_disks() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.json",
        r#"{"manifest_version": "2.0", "disks": []}"#,
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_profile_lists_what_exists() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: prodution\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    insta::assert_snapshot!(err, @r"
    error: invalid manifest [TMP]/vm.yaml (1 problem):
      - Profile loading failed: unknown profile 'prodution' (did you mean 'production'?); available profiles: production, testing, minimal, fast, windows, archive, debug
    ");
}

#[test]
fn profile_cycle_shows_the_chain() {
    let dir = with_disk();
    dir.write("profiles/a.yaml", "extends: b\n");
    dir.write("profiles/b.yaml", "extends: a\n");
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: a\ncustom_profile_path: profiles\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    insta::assert_snapshot!(err, @r"
    error: invalid manifest [TMP]/vm.yaml (1 problem):
      - Profile loading failed: profile inheritance cycle: a -> b -> a
    ");
}

#[test]
fn unsupported_sections_are_rejected_not_ignored() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\nhooks:\n  pre_fix:\n    - {type: script, path: /bin/true}\nconfiguration:\n  users: [{name: admin}]\n",
    );
    insta::assert_snapshot!(err);
}

/// libvirt_integration's keys are checked like every section's: an unknown key with the nearest
/// name, a relative pool directory, a snapshot libvirt cannot take, steps without a domain.
#[test]
fn libvirt_integration_is_checked_before_anything_runs() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\nvm: {firmware: uefi}\nlibvirt_integration:\n  enabled: true\n  import_to_pol: migrated\n  pool_path: images\n  define_domain: false\n  auto_start: true\n  create_snapshot: true\n",
    );
    insta::assert_snapshot!(err);
}

#[test]
fn missing_manifest_file() {
    let dir = TestDir::new();
    let r = run(hyper2kvm().arg("--manifest").arg(dir.join("nope.yaml")));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @"error: [TMP]/nope.yaml: file not found");
}

/// Every cause is printed, the operating system's included (a transparent wrapper once dropped
/// the last one).
#[test]
fn a_directory_as_config_names_the_cause() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("site.yaml")).expect("mkdir");
    let r = run(hyper2kvm().arg("--config").arg(dir.join("site.yaml")));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @r"
    error: [TMP]/site.yaml: could not read the file
      caused by: Is a directory (os error 21)
    ");
}

/// A bad tool option in a config file is named by its file and key.
#[test]
fn bad_option_in_a_config_file_names_file_and_key() {
    let dir = TestDir::new();
    let config = dir.write("site.yaml", "batch_parallel: 0\n");
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&config)
        .args(["--batch-manifest", "b.yaml"]));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @"error: [TMP]/site.yaml: batch_parallel: must be a positive integer (got 0)");
    let config = dir.write("site.yaml", "progress: loud\n");
    let r = run(hyper2kvm().arg("--config").arg(&config));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @"error: [TMP]/site.yaml: progress: unknown variant `loud`, expected one of `auto`, `bars`, `lines`, `json`, `none`");
}

#[test]
fn no_manifest_at_all_is_a_usage_error() {
    let r = run(&mut hyper2kvm());
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(r.stderr, @"error: no manifest given: pass --manifest FILE, or --config FILE with a file that holds manifest_version (see --help)");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let r = run(hyper2kvm().arg("--batch-paralel"));
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("unexpected argument '--batch-paralel'"),
        "{}",
        r.stderr
    );
}

#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn output_directory_under_a_file() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = with_disk();
    dir.write("not-a-dir", "x");
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: \"1.0\"\noutput: {directory: not-a-dir/out}\npipeline: {convert: {enabled: true}}\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unquoted_yaml_version_and_misplaced_overrides() {
    let dir = with_disk();
    let err = rejected(
        &dir,
        "vm.yaml",
        "manifest_version: 1.0\nprofile: fast\nprofile_overrides:\n  disks: []\n  extends: minimal\n  pipline: {}\ncustom_profile_path: a\nprofiles_directory: b\ndisks:\n  - {id: d0, source_format: raw, bytes: 10, local_path: disk.raw}\n",
    );
    insta::assert_snapshot!(err);
}

const BATCH: &str = "{\"batch_version\": \"1.0\", \"vms\": [{\"manifest\": \"vm.json\"}], \"shared_config\": {\"output_directory\": \"out\"}}\n";
const VM: &str = "{\"manifest_version\": \"1.0\", \"disks\": [{\"id\": \"d0\", \"source_format\": \"raw\", \"local_path\": \"disk.raw\"}]}\n";
const DOMAIN: &str = "<?xml version=\"1.0\"?>\n<!-- virsh dumpxml web01 -->\n<domain type='kvm'>\n  <name>web01</name>\n</domain>\n";

/// Runs the binary in `dir` with `args` (file names relative to it, as a user types them) and
/// returns stderr, after checking that it exited 2 and wrote nothing.
fn refused_in(dir: &TestDir, args: &[&str]) -> String {
    let before = tree(dir.path());
    let r = run(hyper2kvm().current_dir(dir.path()).args(args));
    assert_eq!(
        r.code,
        Some(2),
        "expected exit 2:\n{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(tree(dir.path()), before, "nothing was written");
    redact(&r.stderr, dir)
}

/// A batch manifest given as a VM manifest is named as what it is, with the option it belongs
/// to, instead of one "unknown key" per batch key.
#[test]
fn batch_manifest_given_as_a_manifest_is_named() {
    let dir = with_disk();
    dir.write("batch.json", BATCH);
    let err = refused_in(&dir, &["--manifest", "batch.json"]);
    insta::assert_snapshot!(err, @r#"error: batch.json is a batch manifest (it has "batch_version", "vms" and "shared_config"), not a VM manifest: run hyper2kvm --batch-manifest batch.json"#);
    dir.write("vms.yaml", "vms:\n  - manifest: vm.json\n");
    let err = refused_in(&dir, &["--manifest", "vms.yaml"]);
    insta::assert_snapshot!(err, @r#"error: vms.yaml is a batch manifest (it has "vms"), not a VM manifest: run hyper2kvm --batch-manifest vms.yaml"#);
}

/// The same through `--config`, where the file would otherwise be a configuration layer; the
/// command shown quotes a name the shell would split.
#[test]
fn batch_manifest_given_as_a_config_file_is_named() {
    let dir = with_disk();
    dir.write("my batch.json", BATCH);
    let err = refused_in(&dir, &["--config", "my batch.json"]);
    insta::assert_snapshot!(err, @r#"error: my batch.json is a batch manifest (it has "batch_version", "vms" and "shared_config"), not a configuration file: run hyper2kvm --batch-manifest 'my batch.json'"#);
}

/// A VM manifest given as a batch manifest, or as the domain XML to import.
#[test]
fn vm_manifest_given_as_a_batch_or_domain_is_named() {
    let dir = with_disk();
    dir.write("vm.json", VM);
    let err = refused_in(&dir, &["--batch-manifest", "vm.json"]);
    insta::assert_snapshot!(err, @r#"error: vm.json is a VM manifest (it has "manifest_version" and "disks"), not a batch manifest: run hyper2kvm --manifest vm.json"#);
    let err = refused_in(&dir, &["--libvirt-xml", "vm.json", "--output-dir", "out"]);
    insta::assert_snapshot!(err, @r#"error: vm.json is a VM manifest (it has "manifest_version" and "disks"), not a libvirt domain XML: run hyper2kvm --manifest vm.json"#);
}

/// A libvirt domain XML given as a manifest, a config file or a batch manifest points to
/// `--libvirt-xml`, not at how it fails to parse as JSON or YAML.
#[test]
fn domain_xml_given_as_a_manifest_points_to_import() {
    let dir = with_disk();
    dir.write("web01.xml", DOMAIN);
    let as_manifest = refused_in(&dir, &["--manifest", "web01.xml"]);
    insta::assert_snapshot!(as_manifest, @"error: web01.xml is a libvirt domain XML (it starts with <domain>), not a VM manifest: import it with hyper2kvm --libvirt-xml web01.xml --output-dir DIR, which writes a VM manifest for it");
    let as_config = refused_in(&dir, &["--config", "web01.xml"]);
    insta::assert_snapshot!(as_config, @"error: web01.xml is a libvirt domain XML (it starts with <domain>), not a configuration file: import it with hyper2kvm --libvirt-xml web01.xml --output-dir DIR, which writes a VM manifest for it");
    let as_batch = refused_in(&dir, &["--batch-manifest", "web01.xml"]);
    insta::assert_snapshot!(as_batch, @"error: web01.xml is a libvirt domain XML (it starts with <domain>), not a batch manifest: import it with hyper2kvm --libvirt-xml web01.xml --output-dir DIR, which writes a VM manifest for it");
}

/// A file with keys of both kinds is not guessed at: the strict parse lists what is wrong.
#[test]
fn a_mixed_file_is_validated_not_guessed() {
    let dir = with_disk();
    dir.write(
        "mixed.json",
        "{\"manifest_version\": \"1.0\", \"vms\": []}\n",
    );
    let err = refused_in(&dir, &["--manifest", "mixed.json"]);
    assert!(err.starts_with("error: invalid manifest"), "{err}");
    assert!(err.contains("unknown key 'vms'"), "{err}");
}
