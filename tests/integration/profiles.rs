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

/// The guide's "Built-in Profiles" tables, as it prints them (Batch Migration Features Guide,
/// Feature 3). Every built-in must resolve to these values for every field shown.
const GUIDE: [(&str, &str); 7] = [
    (
        "production",
        r#"pipeline:
  fix:
    enabled: true
    backup: true
    update_grub: true
    regen_initramfs: true
  convert:
    enabled: true
    compress: true
    compress_level: 6
  validate:
    enabled: true
output:
  format: qcow2
"#,
    ),
    (
        "testing",
        r#"extends: "production"
pipeline:
  convert:
    compress: false
  validate:
    enabled: false
output:
  format: raw
"#,
    ),
    (
        "minimal",
        r#"pipeline:
  fix:
    enabled: true
    regen_initramfs: false
  convert:
    enabled: false
  validate:
    enabled: false
"#,
    ),
    (
        "fast",
        r#"pipeline:
  fix:
    enabled: true
    backup: false
    update_grub: false
    regen_initramfs: false
  convert:
    enabled: true
    compress: false
  validate:
    enabled: false
"#,
    ),
    (
        "windows",
        r#"pipeline:
  fix:
    enabled: false
  convert:
    enabled: true
    compress: true
    compress_level: 6
  validate:
    enabled: true
output:
  format: qcow2
"#,
    ),
    (
        "archive",
        r#"pipeline:
  fix:
    enabled: false
  convert:
    enabled: true
    compress: true
    compress_level: 9
  validate:
    enabled: true
output:
  format: qcow2
"#,
    ),
    (
        "debug",
        r#"pipeline:
  inspect:
    enabled: true
    collect_guest_info: true
  fix:
    enabled: true
    backup: true
    print_fstab: true
  convert:
    enabled: false
  validate:
    enabled: true
"#,
    ),
];

/// The guide's value of every leaf it shows for `name`, with a parent it `extends` merged under.
fn guide_leaves(name: &str) -> Vec<(String, serde_json::Value)> {
    fn block(name: &str) -> serde_json::Value {
        let (_, yaml) = GUIDE
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("the guide shows no profile {name}"));
        hyper2kvm::config::parse_yaml(yaml).expect("the guide's YAML parses")
    }
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
        }
    }
    let own = block(name);
    let mut out = Vec::new();
    if let Some(parent) = own.get("extends").and_then(|p| p.as_str()) {
        leaves("", &block(parent), &mut out);
    }
    let mut mine = Vec::new();
    leaves("", &own, &mut mine);
    for (path, value) in mine {
        out.retain(|(p, _)| *p != path);
        out.push((path, value));
    }
    out.retain(|(p, _)| p != "extends");
    out
}

/// Each built-in, through `--dump-config`, has exactly the value the guide's table shows for
/// every field it shows (a parent's fields included).
#[test]
fn builtin_profiles_match_the_guide() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    assert_eq!(
        GUIDE.map(|(n, _)| n),
        BUILTINS,
        "the guide and the binary list the same profiles"
    );
    let mut wrong = Vec::new();
    for name in BUILTINS {
        let v = dump(
            &dir,
            &format!(
                "manifest_version: \"1.0\"\nprofile: {name}\ndisks:\n  - {{id: d0, source_format: raw, bytes: 1, local_path: disk.raw}}\n"
            ),
        );
        let expected = guide_leaves(name);
        assert!(expected.len() >= 4, "{name}: {expected:?}");
        for (path, want) in expected {
            let got = path
                .split('.')
                .try_fold(&v, |v, k| v.get(k))
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            if got != want {
                wrong.push(format!("{name}: {path} is {got}, the guide says {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every built-in resolves, with every default applied, to the values README and profiles/README.md
/// describe.
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
        v["pipeline"]["fix"]["update_grub"], false,
        "from the built-in grandparent"
    );
    assert_eq!(
        v["pipeline"]["validate"]["enabled"], true,
        "the child beats the built-in grandparent"
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

/// profiles/README.md: every profile its table names is built in, and its examples work as
/// written: each `profiles/NAME.yaml` block is a valid profile, and the manifest using them
/// resolves through the whole chain.
#[test]
fn profiles_readme_names_real_profiles_and_its_examples_parse() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/README.md"))
            .expect("profiles/README.md");
    let named: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert_eq!(named, BUILTINS, "the table lists every built-in, in order");

    let dir = TestDir::new();
    dir.write("disks/boot.vmdk", "x");
    let mut lines = readme.lines();
    let mut profiles = Vec::new();
    let mut manifest = None;
    let mut last_file: Option<String> = None;
    while let Some(line) = lines.next() {
        if line.starts_with("```yaml") {
            let body: String = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .map(|l| format!("{l}\n"))
                .collect();
            match last_file.take() {
                Some(file) => {
                    dir.write(&file, &body);
                    profiles.push(file);
                }
                None => manifest = Some(body),
            }
        } else if let Some(rest) = line.strip_prefix("`profiles/") {
            let name = rest.split('`').next().expect("a file name");
            last_file = Some(format!("profiles/{name}"));
        }
    }
    assert_eq!(profiles, ["profiles/site.yaml", "profiles/lab.yaml"]);
    for file in &profiles {
        let name = file
            .trim_start_matches("profiles/")
            .trim_end_matches(".yaml");
        dump(
            &dir,
            &format!(
                "manifest_version: \"1.0\"\nprofile: {name}\ncustom_profile_path: profiles\ndisks:\n  - {{id: d0, source_format: vmdk, bytes: 1, local_path: disks/boot.vmdk}}\n"
            ),
        );
    }
    let v = dump(&dir, &manifest.expect("the README shows a manifest"));
    let p = &v["pipeline"];
    assert_eq!(p["fix"]["remove_vmware_tools"], true, "from site");
    assert_eq!(p["convert"]["compress_level"], 8, "from site");
    assert_eq!(p["inspect"]["enabled"], true, "from production");
    assert_eq!(p["validate"]["enabled"], false, "from lab");
    assert_eq!(v["output"]["format"], "raw", "from lab");
    assert_eq!(p["convert"]["compress"], false, "from profile_overrides");
}
