//! Tests of the manifest as a whole: the order problems from different sections are reported
//! in, layering (profile, overrides, batch layers) and the defaults of a minimal manifest. Each
//! section's own checks are tested in its module.

use super::*;
use serde_json::json;

fn doc(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("test documents are objects"),
    }
}

fn problems_of(v: Value, dir: &Path) -> Vec<String> {
    let mut problems = Problems::default();
    validate(&doc(v), dir, &mut problems);
    problems.0.iter().map(ToString::to_string).collect()
}

fn disk_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.raw"), b"x").expect("write");
    std::fs::create_dir(dir.path().join("adir")).expect("mkdir");
    dir
}

#[test]
fn minimal_manifest_is_valid() {
    let dir = disk_dir();
    let v = json!({"manifest_version": "1.0", "disks": [
        {"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}]});
    assert!(problems_of(v, dir.path()).is_empty());
}

#[test]
fn missing_version_and_disks_use_upstream_wording() {
    let dir = disk_dir();
    assert_eq!(
        problems_of(json!({}), dir.path()),
        [
            "Missing required field: manifest_version. This is an Artifact Manifest v1. Expected versions: ['1.0']",
            "Missing required field: disks[]. Artifact Manifest v1 requires at least one disk.",
        ]
    );
}

#[test]
fn every_disk_problem_is_reported_at_once() {
    let dir = disk_dir();
    let v = json!({"manifest_version": "2.0", "disks": [
        {"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"},
        {"id": "d0", "source_format": "vmdkk", "bytes": -1, "local_path": "missing.vmdk",
         "checksum": "md5:abc", "boot_order_hint": -2, "disk_type": "root", "lable": "x"},
        {"source_format": "raw", "local_path": "adir", "id": "bad id!", "bytes": 0},
        "not an object"
    ], "vm": {"firmware": "efi", "cpu": 0, "secureboot": "yes"}});
    let got = problems_of(v, dir.path());
    let missing = dir.path().join("missing.vmdk");
    let adir = dir.path().join("adir");
    assert_eq!(
        got,
        [
            "manifest_version: Unsupported manifest version: 2.0. This hyper2kvm version supports: ['1.0']".to_owned(),
            "disks[1].id: Duplicate disk ID: d0".to_owned(),
            "disks[1].source_format unsupported: vmdkk. Supported: ['vmdk', 'qcow2', 'raw', 'vhd', 'vhdx', 'vdi'] (did you mean 'vmdk'?)".to_owned(),
            "disks[1].bytes must be a non-negative integer (got: -1)".to_owned(),
            format!("disks[1].local_path not found: {}", missing.display()),
            "disks[1].checksum must match format: sha256:<hexdigest>, with 64 lower-case hex digits (got: 'md5:abc'); leave it out or write null for no checksum".to_owned(),
            "disks[1].boot_order_hint must be a non-negative integer".to_owned(),
            "disks[1].disk_type must be one of: boot, data, unknown".to_owned(),
            "disks[1].lable: unknown key 'lable' (did you mean 'label'?)".to_owned(),
            "disks[2].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: 'bad id!')".to_owned(),
            format!(
                "disks[2].local_path is a directory, expected a disk image file: {}",
                adir.display()
            ),
            "disks[3] must be an object".to_owned(),
            "vm.firmware must be one of: bios, uefi, unknown (got: 'efi')".to_owned(),
            "vm.secureboot must be a boolean".to_owned(),
            "vm.cpu must be an integer >= 1".to_owned(),
        ]
    );
}

#[test]
fn nested_sections_report_unknown_keys_and_types() {
    let dir = disk_dir();
    let v = json!({"manifest_version": "1.0",
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}],
        "pipelin": {},
        "pipeline": {"convert": {"compres": true, "compress_level": 12}, "validate": {"enabled": "yes"}},
        "output": {"format": "qcow"},
        "hooks": {"pre_fix": [{"type": "script"}]}});
    assert_eq!(
        problems_of(v, dir.path()),
        [
            "unknown key 'pipelin' (did you mean 'pipeline'?)",
            "pipeline.convert.compres: unknown key 'compres' (did you mean 'compress'?)",
            "pipeline.convert.compress_level must be an integer from 1 to 9 (got an integer: 12)",
            "pipeline.validate.enabled must be a boolean (true or false) (got a string: \"yes\")",
            "output.format must be one of: qcow2, raw, vdi (got: 'qcow') (did you mean 'qcow2'?)",
            "hooks.pre_fix[0]: Script hook requires 'path' field",
        ]
    );
}

#[test]
fn profile_then_overrides_then_manifest() {
    let dir = disk_dir();
    let path = dir.path().join("vm.json");
    let d = doc(json!({"manifest_version": "1.0", "profile": "production",
        "profile_overrides": {"pipeline": {"convert": {"compress": false, "compress_level": 3}}},
        "pipeline": {"convert": {"compress_level": 2}},
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}]}));
    let loaded = resolve(&path, d, &Layers::default()).expect("valid");
    let c = &loaded.manifest.pipeline.convert;
    assert!(!c.compress, "profile_overrides beat the profile");
    assert_eq!(c.compress_level, 2, "the manifest beats profile_overrides");
    assert!(c.check_image_integrity, "untouched profile values stay");
    assert_eq!(loaded.profile_chain, ["production"]);
}

#[test]
fn batch_layers_sit_around_the_manifest() {
    let dir = disk_dir();
    let path = dir.path().join("vm.json");
    let d = doc(json!({"manifest_version": "1.0",
        "output": {"format": "raw"},
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}]}));
    let layers = Layers {
        shared_config: Some(doc(
            json!({"profile": "archive", "output": {"format": "vdi"}}),
        )),
        overrides: Some(doc(json!({"pipeline": {"validate": {"enabled": false}}}))),
    };
    let loaded = resolve(&path, d, &layers).expect("valid");
    let m = &loaded.manifest;
    assert_eq!(
        m.output.format,
        OutputFormat::Raw,
        "manifest beats shared_config"
    );
    assert!(!m.pipeline.validate.enabled, "overrides beat everything");
    assert_eq!(
        m.pipeline.convert.compress_level, 9,
        "shared_config picked the profile"
    );
}

#[test]
fn profiles_directory_is_an_alias() {
    let dir = disk_dir();
    std::fs::create_dir(dir.path().join("prof")).expect("mkdir");
    std::fs::write(
        dir.path().join("prof/site.yaml"),
        "output:\n  format: vdi\n",
    )
    .expect("write");
    let d = doc(
        json!({"manifest_version": "1.0", "profile": "site", "profiles_directory": "prof",
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}]}),
    );
    let loaded = resolve(&dir.path().join("vm.json"), d, &Layers::default()).expect("valid");
    assert_eq!(loaded.manifest.output.format, OutputFormat::Vdi);
}

#[test]
fn defaults_match_upstream() {
    let dir = disk_dir();
    let d = doc(json!({"manifest_version": "1.0",
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 1, "local_path": "a.raw"}]}));
    let m = resolve(&dir.path().join("vm.json"), d, &Layers::default())
        .expect("valid")
        .manifest;
    assert_eq!(m.disks[0].boot_order_hint, 999);
    assert_eq!(m.disks[0].label(), "d0");
    assert_eq!(m.disks[0].disk_type, DiskType::Unknown);
    assert_eq!(m.vm.firmware, Firmware::Bios);
    assert_eq!(m.output.format, OutputFormat::Qcow2);
    assert!(!m.pipeline.inspect.enabled && !m.pipeline.convert.enabled);
    assert!(m.options.report.enabled);
    assert_eq!(m.options.report.path, "report.json");
}

#[test]
fn has_path_follows_mappings_and_stops_at_lists() {
    let doc = json!({"pipeline": {"convert": {"compres": true}}, "hooks": {"pre_fix": [{}]}});
    let doc = doc.as_object().expect("object");
    assert!(super::has_path(doc, "pipeline.convert.compres"));
    assert!(super::has_path(doc, "hooks.pre_fix[0].path"));
    assert!(!super::has_path(doc, "pipeline.fix.enabled"));
    assert!(!super::has_path(doc, "output"));
}
