//! Profiles as a run would see them: `--dump-config` prints the fully resolved manifest.

use crate::support::*;

const BUILTINS: [&str; 7] = [
    "production",
    "testing",
    "minimal",
    "fast",
    "windows",
    "archive",
    "debug",
];

fn dump(dir: &TestDir, manifest: &str) -> serde_json::Value {
    let path = dir.write("vm.yaml", manifest);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .arg("--dump-config"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    serde_json::from_str(&r.stdout).expect("dump-config prints JSON")
}

/// Every built-in resolves to the documented values (upstream-behaviour §4.1).
#[test]
fn builtin_profiles_resolve_to_documented_values() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let mut all = serde_json::Map::new();
    for name in BUILTINS {
        let v = dump(
            &dir,
            &format!(
                "manifest_version: \"1.0\"\nprofile: {name}\ndisks:\n  - {{id: d0, source_format: raw, bytes: 1, local_path: disk.raw}}\n"
            ),
        );
        let mut settings = serde_json::Map::new();
        for key in ["pipeline", "output", "options"] {
            if let Some(section) = v.get(key) {
                settings.insert(key.to_owned(), section.clone());
            }
        }
        all.insert(name.to_owned(), serde_json::Value::Object(settings));
    }
    insta::assert_json_snapshot!(all);
}

#[test]
fn precedence_profile_overrides_manifest() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let v = dump(
        &dir,
        "manifest_version: \"1.0\"\nprofile: archive\nprofile_overrides:\n  pipeline:\n    convert: {compress_level: 3, compress: false}\npipeline:\n  convert: {compress: true}\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
    );
    let convert = &v["pipeline"]["convert"];
    assert_eq!(
        convert["compress_level"], 3,
        "profile_overrides beat the profile"
    );
    assert_eq!(
        convert["compress"], true,
        "the manifest beats profile_overrides"
    );
    assert_eq!(
        v["pipeline"]["validate"]["enabled"], true,
        "the parent's values stay"
    );
}

#[test]
fn custom_directory_inheritance() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    dir.write(
        "profiles/site.yaml",
        "description: site defaults\nextends: fast\noutput: {format: raw}\n",
    );
    dir.write(
        "profiles/team.yml",
        "extends: site\npipeline:\n  validate: {enabled: true, check_image_integrity: false}\n",
    );
    let v = dump(
        &dir,
        "manifest_version: \"1.0\"\nprofile: team\ncustom_profile_path: profiles\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
    );
    assert_eq!(v["output"]["format"], "raw", "from the custom parent");
    assert_eq!(
        v["pipeline"]["fix"]["fstab_mode"], "noop",
        "from the built-in grandparent"
    );
    assert_eq!(
        v["pipeline"]["inspect"]["enabled"], false,
        "from the built-in root"
    );
    assert_eq!(v["pipeline"]["validate"]["check_image_integrity"], false);
    assert_eq!(v["description"], "site defaults");
    assert!(v.get("extends").is_none());
}

#[test]
fn unknown_parent_names_the_child() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    dir.write("profiles/site.yaml", "extends: prodution\n");
    let path = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: site\nprofiles_directory: profiles\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .arg("--dump-config"));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(redact(&r.stderr, &dir), @r"
    error: invalid manifest [TMP]/vm.yaml (1 problem):
      - Profile loading failed: profile 'site' extends 'prodution', which does not exist (did you mean 'production'?); available profiles: production, testing, minimal, fast, windows, archive, debug, site
    ");
}

/// What `--dump-config` prints is itself a valid manifest that resolves to the same thing.
#[test]
fn dump_config_output_is_a_manifest() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let first = dump(
        &dir,
        "manifest_version: \"1.0\"\nprofile: testing\nsource: {vm_name: web01, site: east}\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
    );
    let again = dir.write(
        "again.json",
        &serde_json::to_string_pretty(&first).expect("json"),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&again)
        .arg("--dump-config"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let second: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(first, second);
    assert_eq!(
        first["source"]["site"], "east",
        "extra source keys are kept"
    );
    assert!(
        first["disks"][0].get("checksum").is_none(),
        "unset means absent, not null"
    );
}
