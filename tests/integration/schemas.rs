//! The published JSON Schemas (schemas/*.schema.json) against the binary: `--print-schema`
//! prints each file as it is; every example in examples/ is valid against its schema; the
//! schemas refuse what the binary refuses (unknown keys, wrong types, values out of range) and
//! accept what it accepts, `--dump-config`'s output included. Every report.json and
//! batch_report.json the other tests read is validated too (support::read_json).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::*;

const NAMES: &[&str] = &["manifest", "batch", "report", "batch-report", "events"];

fn checkout() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn print_schema_prints_each_file_as_it_is() {
    for name in NAMES {
        let r = run(hyper2kvm().args(["--print-schema", name]));
        assert_eq!(r.code, Some(0), "{name}: {}", r.stderr);
        let file = std::fs::read_to_string(schema_path(name)).expect("schema file");
        assert!(
            r.stdout == file,
            "--print-schema {name} differs from schemas/{name}.schema.json"
        );
        assert_eq!(r.stderr, "", "{name}");
    }
}

#[test]
fn print_schema_lists_the_names_it_takes() {
    let r = run(hyper2kvm().args(["--print-schema", "manifests"]));
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains("invalid value 'manifests' for '--print-schema <NAME>'")
            && r.stderr
                .contains("[possible values: manifest, batch, report, batch-report, events]"),
        "{}",
        r.stderr
    );
    // It prints and exits, like --version: nothing else may come with it.
    let r = run(hyper2kvm().args(["--print-schema", "manifest", "--manifest", "vm.json"]));
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

/// The schemas themselves: draft 2020-12 as the validator's meta-schema checks it, and the
/// embedded copies resolve (a `$ref` into `manifest.schema.json` from the batch schema).
#[test]
#[cfg_attr(
    missing_jsonschema,
    ignore = "needs python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn every_schema_is_valid_draft_2020_12() {
    if !require_jsonschema() {
        return;
    }
    let script = "import json, sys, jsonschema\n\
        for path in sys.argv[1:]:\n\
        \x20   jsonschema.Draft202012Validator.check_schema(json.load(open(path)))\n\
        \x20   print('ok', path)\n";
    let paths: Vec<PathBuf> = NAMES.iter().map(|n| schema_path(n)).collect();
    let out = run_ok(
        std::process::Command::new("python3")
            .args(["-c", script])
            .args(&paths),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        NAMES.len()
    );
    // A batch whose overrides hold a typo: the error comes from the embedded manifest schema.
    let errors = schema_errors(
        &schema_path("batch"),
        &json!({"batch_version": "1.0", "vms": [{"manifest": "a.json", "overrides": {"pipelin": {}}}]})
            .to_string(),
    );
    assert_eq!(
        errors,
        ["$.vms[0].overrides: Additional properties are not allowed ('pipelin' was unexpected)"]
    );
}

/// Every JSON or YAML file under examples/, and which schema it follows: manifests hold
/// `manifest_version`, batch manifests `batch_version`; the rest are profiles and --config files,
/// which have no schema and are named here so that a new example is not left out unnoticed.
fn examples() -> Vec<(PathBuf, Option<&'static str>)> {
    const NOT_MANIFESTS: &[&str] = &[
        "examples/site-config.yaml",
        "examples/libvirt-xml/config.yaml",
        "examples/profiles/organization.yaml",
        "examples/profiles/site.yaml",
    ];
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read examples") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&checkout().join("examples"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(checkout())
                .expect("under the checkout")
                .to_string_lossy()
                .into_owned();
            let doc = hyper2kvm::config::load_document(&path).expect("an example parses");
            let schema = if doc.contains_key("manifest_version") {
                Some("manifest")
            } else if doc.contains_key("batch_version") {
                Some("batch")
            } else {
                assert!(
                    NOT_MANIFESTS.contains(&rel.as_str()),
                    "{rel} is neither a manifest nor a batch manifest; if it is a profile or a \
                     --config file, add it to NOT_MANIFESTS"
                );
                None
            };
            (path, schema)
        })
        .collect()
}

#[test]
#[cfg_attr(
    missing_jsonschema,
    ignore = "needs python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn every_example_is_valid_against_its_schema() {
    if !require_jsonschema() {
        return;
    }
    let mut checked = Vec::new();
    for (path, schema) in examples() {
        let Some(schema) = schema else { continue };
        // Read by hyper2kvm's own loader, so YAML is what the tool sees (YAML 1.2 core schema),
        // not what another YAML library would make of it.
        let doc = Value::Object(hyper2kvm::config::load_document(&path).expect("parses"));
        let errors = schema_errors(&schema_path(schema), &doc.to_string());
        assert!(
            errors.is_empty(),
            "{} is not valid against schemas/{schema}.schema.json:\n{}",
            path.display(),
            errors.join("\n")
        );
        checked.push(schema);
    }
    // JSON and YAML examples of both kinds exist; if they stop existing this test must say so.
    assert!(
        checked.iter().filter(|s| **s == "manifest").count() >= 5,
        "{checked:?}"
    );
    assert!(
        checked.iter().filter(|s| **s == "batch").count() >= 3,
        "{checked:?}"
    );
}

/// A manifest whose one disk exists (a few bytes of raw image; nothing reads it under
/// --dump-config), with `extra` merged over it at the top level.
fn manifest_with(dir: &TestDir, extra: Value) -> Value {
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    std::fs::write(dir.join("disks/d0.raw"), [0u8; 512]).expect("disk");
    let mut doc = json!({
        "manifest_version": "1.0",
        "disks": [{"id": "d0", "source_format": "raw", "bytes": 512, "local_path": "disks/d0.raw"}]
    });
    let (Value::Object(base), Value::Object(extra)) = (&mut doc, extra) else {
        panic!("mappings")
    };
    base.extend(extra);
    doc
}

/// What the binary says about a manifest: its exit code and stderr under --dump-config.
fn dump_config(dir: &TestDir, name: &str, doc: &Value) -> Run {
    let path = dir.join(name);
    write_json(&path, doc);
    run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .arg("--dump-config"))
}

#[test]
#[cfg_attr(
    missing_jsonschema,
    ignore = "needs python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn what_the_binary_refuses_the_schema_refuses() {
    if !require_jsonschema() {
        return;
    }
    let dir = TestDir::new();
    // (what is wrong, the document, the field both must name)
    let cases: Vec<(&str, Value, &str)> = vec![
        ("unknown top-level key", json!({"pipelin": {}}), "pipelin"),
        (
            "$schema is an unknown key",
            json!({"$schema": "https://hyper2kvm.dev/schemas/manifest.schema.json"}),
            "$schema",
        ),
        (
            "unknown nested key",
            json!({"pipeline": {"convert": {"compres": true}}}),
            "compres",
        ),
        (
            "unknown disk key",
            json!({"disks": [{"id": "d0", "local_path": "disks/d0.raw", "lable": "x"}]}),
            "lable",
        ),
        ("unknown vm key", json!({"vm": {"cpus": 2}}), "cpus"),
        (
            "unknown hook key",
            json!({"hooks": {"pre_fix": [{"type": "http", "url": "https://h.example/x", "headrs": {}}]}}),
            "headrs",
        ),
        (
            "unknown hook stage",
            json!({"hooks": {"pre_validate": []}}),
            "pre_validate",
        ),
        (
            "unknown network_mapping key",
            json!({"network_mapping": {"default_brige": "br0"}}),
            "default_brige",
        ),
        (
            "wrong type: string for a boolean",
            json!({"pipeline": {"validate": {"enabled": "yes"}}}),
            "validate.enabled",
        ),
        (
            "wrong type: string for an integer",
            json!({"vm": {"cpu": "two"}}),
            "vm.cpu",
        ),
        (
            "wrong type: a number for the version",
            json!({"manifest_version": 1.0}),
            "manifest_version",
        ),
        (
            "wrong type: a list for a mapping",
            json!({"output": []}),
            "output",
        ),
        (
            "wrong type: a mapping for the disks",
            json!({"disks": {}}),
            "disks",
        ),
        (
            "out of range",
            json!({"pipeline": {"convert": {"compress_level": 12}}}),
            "convert.compress_level",
        ),
        (
            "unknown enum value",
            json!({"output": {"format": "qcow"}}),
            "output.format",
        ),
        (
            "bad disk id",
            json!({"disks": [{"id": "d 0", "local_path": "disks/d0.raw"}]}),
            "disks[0].id",
        ),
        (
            "bad checksum",
            json!({"disks": [{"id": "d0", "local_path": "disks/d0.raw", "checksum": "md5:x"}]}),
            "disks[0].checksum",
        ),
        ("no disks", json!({"disks": []}), "disks"),
        (
            "multicast MAC",
            json!({"nics": [{"id": "n0", "mac": "01:00:5e:00:00:01"}]}),
            "nics[0].mac",
        ),
        (
            "unknown hook type",
            json!({"hooks": {"pre_fix": [{"type": "shell", "path": "x.sh"}]}}),
            "pre_fix[0].type",
        ),
        (
            "unsupported section",
            json!({"configuration": {"users": [{"name": "admin"}]}}),
            "configuration",
        ),
    ];
    for (i, (what, extra, field)) in cases.into_iter().enumerate() {
        let doc = manifest_with(&dir, extra);
        let errors = schema_errors(&schema_path("manifest"), &doc.to_string());
        assert!(!errors.is_empty(), "{what}: the schema accepts {doc}");
        assert!(
            errors.iter().any(|e| e.contains(field)),
            "{what}: no schema error names {field}: {errors:#?}"
        );
        let r = dump_config(&dir, &format!("bad-{i}.json"), &doc);
        assert_eq!(
            r.code,
            Some(2),
            "{what}: the binary accepts {doc}: {}",
            r.stdout
        );
        assert!(
            r.stderr.contains(field),
            "{what}: the binary's error does not name {field}: {}",
            r.stderr
        );
    }
}

#[test]
#[cfg_attr(
    missing_jsonschema,
    ignore = "needs python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn what_the_binary_refuses_in_a_batch_the_schema_refuses() {
    if !require_jsonschema() {
        return;
    }
    let dir = TestDir::new();
    let vm = manifest_with(&dir, json!({}));
    write_json(&dir.join("vm.json"), &vm);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown top-level key",
            json!({"share_config": {}}),
            "share_config",
        ),
        (
            "unknown metadata key",
            json!({"batch_metadata": {"batchid": "x"}}),
            "batchid",
        ),
        (
            "wrong type",
            json!({"batch_metadata": {"parallel_limit": "4"}}),
            "parallel_limit",
        ),
        (
            "out of range",
            json!({"batch_metadata": {"parallel_limit": 0}}),
            "parallel_limit",
        ),
        (
            "a VM's own key shared",
            json!({"shared_config": {"disks": []}}),
            "disks",
        ),
        (
            "unknown shared key",
            json!({"shared_config": {"pipelin": {}}}),
            "pipelin",
        ),
        (
            "wrong type in shared_config",
            json!({"shared_config": {"pipeline": {"fix": {"enabled": 1}}}}),
            "enabled",
        ),
        (
            "unknown VM entry key",
            json!({"vms": [{"manifest": "vm.json", "prio": 1}]}),
            "prio",
        ),
        (
            "wrong type in a VM entry",
            json!({"vms": [{"manifest": "vm.json", "priority": "high"}]}),
            "priority",
        ),
        (
            "unknown key in overrides",
            json!({"vms": [{"manifest": "vm.json", "overrides": {"pipelin": {}}}]}),
            "pipelin",
        ),
        (
            "nothing enabled",
            json!({"vms": [{"manifest": "vm.json", "enabled": false}]}),
            "vms",
        ),
        (
            "a number for the version",
            json!({"batch_version": 1.0}),
            "batch_version",
        ),
    ];
    for (i, (what, extra, field)) in cases.into_iter().enumerate() {
        // Without continue_on_error a VM whose layered manifest is invalid stops the batch
        // before it starts, as an invalid batch manifest does (a dry run only lists it).
        let mut doc = json!({"batch_version": "1.0", "batch_metadata": {"continue_on_error": false},
                             "vms": [{"manifest": "vm.json", "id": "vm1"}]});
        let (Value::Object(base), Value::Object(extra)) = (&mut doc, extra) else {
            panic!("mappings")
        };
        base.extend(extra);
        let errors = schema_errors(&schema_path("batch"), &doc.to_string());
        assert!(!errors.is_empty(), "{what}: the schema accepts {doc}");
        assert!(
            errors.iter().any(|e| e.contains(field)),
            "{what}: no schema error names {field}: {errors:#?}"
        );
        let path = dir.join(&format!("batch-{i}.json"));
        write_json(&path, &doc);
        let r = run(hyper2kvm().arg("--batch-manifest").arg(&path));
        assert_eq!(
            r.code,
            Some(2),
            "{what}: the binary accepts {doc}: {}",
            r.stdout
        );
        assert!(
            r.stderr.contains(field),
            "{what}: the binary's error does not name {field}: {}",
            r.stderr
        );
    }
}

/// A manifest that sets nearly every section, as a user would.
fn rich_manifest(dir: &TestDir) -> Value {
    let script = dir.write("hooks/notify.sh", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    manifest_with(
        dir,
        json!({
            "source": {"provider": "vsphere", "vm_id": "vm-42", "vm_name": "web01", "datacenter": null,
                       "uuid": "6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab", "folder": {"any": ["thing"]}},
            "vm": {"cpu": 4, "mem_gb": 1, "mem_mib": 1000, "firmware": "uefi", "secureboot": true,
                   "os_hint": "debian12", "os_version": null,
                   "tpm": {"model": "tpm-crb", "version": "2.0"},
                   "cpu_topology": {"sockets": 1, "dies": 1, "cores": 2, "threads": 2},
                   "hyperv": {"mode": "custom", "relaxed": true, "spinlocks": true,
                              "spinlocks_retries": 8191, "vendor_id": "KVMKVMKVM"}},
            "nics": [
                {"id": "net0", "mac": "00:50:56:AA:bb:cc", "network": "VM Network", "type": "bridge",
                 "model": "vmxnet3", "domain_model": "virtio",
                 "vlan": {"trunk": true, "tags": [{"id": 10, "native_mode": "untagged"}, {"id": 20}]}},
                {"id": "net1", "mac": "00-50-56-aa-bb-cd", "network": "ovs", "type": "bridge",
                 "virtualport": {"type": "openvswitch", "interfaceid": "6b3c2a4e-1f0d-4c3a-9b2e-0123456789ac"},
                 "portgroup": null},
                {"id": "net2", "type": "direct", "network": "eth0", "macvtap_mode": "bridge"}
            ],
            "notes": ["exported by hand"],
            "warnings": [{"stage": "export", "message": "tools not running", "timestamp": null}],
            "metadata": {"owner": "ops", "vcpus": 4, "memory_bytes": null},
            "profile": "production",
            "profile_overrides": {"pipeline": {"fix": {"enabled": false}}, "description": "no repair"},
            "description": "the web server",
            "pipeline": {
                "inspect": {"enabled": true, "collect_guest_info": false},
                "convert": {"enabled": true, "compress": true, "compress_level": 9, "check_image_integrity": false},
                "validate": {"enabled": true, "boot_test": {"enabled": false, "timeout": 60,
                             "success_pattern": "login:", "failure_pattern": null, "memory_mb": 512, "cpus": 2}}
            },
            "output": {"directory": "out", "format": "qcow2", "filename": "web01.qcow2"},
            "options": {"dry_run": false, "verbose": 2, "report": {"enabled": true, "path": "web01-report.json"}},
            "hooks": {
                "pre_extraction": [{"type": "Script", "path": "hooks/notify.sh", "args": ["{{ vm_name }}", 3, true],
                                    "env": {"VM": "{{ vm_name }}", "N": 1}, "timeout": 30.5,
                                    "retry": {"max_retries": 2, "strategy": "Linear", "initial_delay": 1}}],
                "post_convert": [
                    {"type": "python", "module": "site_hooks.cmdb", "function": "record",
                     "args": {"disk": "{{ output_path }}"}, "continue_on_error": true},
                    {"type": "http", "url": "https://cmdb.example/api", "method": "put",
                     "headers": {"X-Token": "${CMDB_TOKEN}"}, "body": {"vm": "{{ vm_name }}"}}
                ],
                "post_validate": null
            },
            "network_mapping": {
                "source_networks": {"VM Network": "br0", "ovs": {"bridge": "ovsbr0"}, "lab": {"network": "default"}},
                "default_bridge": "br0",
                "mac_address_policy": "custom",
                "mac_address_overrides": {"00:50:56:aa:bb:cc": "52:54:00:12:34:56"},
                "strict": false
            },
            "storage_mapping": {"default_pool": "vms", "disk_mappings": {"d0": "pool-dir"},
                                "format_override": null, "preallocate": "metadata"},
            "domain": {"preserve_uuid": true},
            "libvirt_integration": {"enabled": false, "uri": "qemu:///system", "create_snapshot": false,
                                    "vm_name": "web01", "pool_path": "/var/lib/libvirt/images"},
            "configuration": {"enabled": false, "users": []}
        }),
    )
}

#[test]
#[cfg_attr(
    missing_jsonschema,
    ignore = "needs python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn what_the_binary_accepts_the_schema_accepts_and_dump_config_prints_a_valid_manifest() {
    if !require_jsonschema() {
        return;
    }
    let dir = TestDir::new();
    let doc = rich_manifest(&dir);
    assert_matches_schema("manifest", &doc);
    let r = dump_config(&dir, "vm.json", &doc);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let dumped: Value = serde_json::from_str(&r.stdout).expect("--dump-config prints JSON");
    // Every default made explicit, the profile's hooks and settings merged in: still a manifest.
    assert_matches_schema("manifest", &dumped);

    // The same manifest through a batch: shared settings and per-VM overrides.
    write_json(&dir.join("vm.json"), &doc);
    let batch = json!({
        "batch_version": "1.0",
        "batch_metadata": {"batch_id": "wave1", "parallel_limit": 2, "continue_on_error": false},
        "vms": [
            {"manifest": "vm.json", "id": "web01", "priority": -1,
             "overrides": {"vm": {"cpu": 4}, "firmware": {"type": "uefi"}, "pipeline": {"validate": {"enabled": false}}}},
            {"manifest": "vm.json", "id": "web02", "enabled": false}
        ],
        "shared_config": {"output_directory": "converted", "profile": "production",
                          "pipeline": {"convert": {"compress": false}},
                          "hooks": {"post_validate": []}, "options": {"verbose": 1}}
    });
    assert_matches_schema("batch", &batch);
    write_json(&dir.join("batch.json"), &batch);
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(dir.join("batch.json"))
        .arg("--dry-run"));
    // The batch is valid: it gets as far as planning, which looks for the python hook's module.
    assert!(
        !r.stderr.contains("invalid batch manifest") && !r.stderr.contains("invalid manifest"),
        "{}",
        r.stderr
    );
}

/// The two report schemas take the fields being added to reports (a stage's start offset, a
/// batch VM's start offset and slot) as optional: a report without them is valid, and one with
/// them too.
#[test]
#[cfg_attr(
    missing_jsonschema,
    ignore = "needs python3's jsonschema (install: scripts/install-deps.sh full)"
)]
fn report_schemas_take_the_timeline_fields_as_optional() {
    if !require_jsonschema() {
        return;
    }
    let stage = |offset: Option<f64>| {
        let mut s = json!({"success": true, "duration": 0.2, "commands": [], "result": {
            "manifest_version": "1.0", "manifest_path": "/m.json", "source_provider": null,
            "source_vm_id": null, "source_vm_name": "vm1", "disks_count": 1, "firmware": "bios",
            "os_hint": null, "profile": null, "checksums_verified": false, "verified_checksums": []}});
        if let Some(o) = offset {
            s["start_offset"] = json!(o);
        }
        s
    };
    let report = |offset: Option<f64>| {
        json!({
            "version": "1.0", "timestamp": "2026-01-22T10:00:00+01:00", "vm_id": "vm1",
            "status": "succeeded",
            "pipeline": {"success": true, "duration_seconds": 0.2, "bytes_read": 0, "bytes_written": 0,
                         "stages": {"load_manifest": stage(offset)}},
            "artifacts": [], "warnings": [], "errors": [], "hooks": [],
            "input_manifest": {"path": "/m.json", "manifest_version": "1.0", "source_provider": null,
                               "source_vm_id": null, "source_vm_name": "vm1", "profile": null, "sources": []},
            "hyper2kvm_version": "0.1.0",
            "summary": {"total_stages": 1, "successful_stages": 1, "failed_stages": 0, "total_warnings": 0,
                        "total_errors": 0, "total_artifacts": 0, "input_disks": 1, "output_disks": 0,
                        "total_hooks": 0, "failed_hooks": 0}
        })
    };
    assert_matches_schema("report", &report(None));
    assert_matches_schema("report", &report(Some(0.0)));
    let errors = schema_errors(&schema_path("report"), &report(Some(-1.0)).to_string());
    assert!(
        errors.iter().any(|e| e.contains("start_offset")),
        "{errors:#?}"
    );

    let batch = |timeline: Value, pipeline_report: Value| {
        let mut vm = json!({
            "vm_id": "vm1", "index": 0, "priority": 0, "manifest": "/m.json", "status": "succeeded",
            "success": true, "duration_seconds": 0.2, "timestamp": "2026-01-22T10:00:00+01:00",
            "output_directory": "/out/vm1", "report_path": "/out/vm1/report.json", "stage_durations": [],
            "bytes_read": 0, "bytes_written": 0, "artifacts": [], "validated": false,
            "fingerprint": null, "from_checkpoint": false, "pipeline_report": pipeline_report
        });
        let (Value::Object(vm_map), Value::Object(extra)) = (&mut vm, timeline) else {
            panic!("mappings")
        };
        vm_map.extend(extra);
        json!({
            "version": "1.0", "report_type": "batch_conversion", "timestamp": "2026-01-22T10:00:00+01:00",
            "batch": {"batch_id": "b", "manifest_path": "/b.json", "success": true, "status": "succeeded",
                      "duration_seconds": 0.3, "parallel_limit": 1, "continue_on_error": true, "resumed": false,
                      "total_vms": 1, "processed_vms": 1, "successful_vms": 1, "failed_vms": 0,
                      "skipped_vms": 0, "not_started_vms": 0, "interrupted_vms": 0, "success_rate": 1.0,
                      "bytes_read": 0, "bytes_written": 0},
            "vm_results": [vm],
            "aggregate_stats": {"total_duration": 0.3, "average_duration": 0.2,
                                "fastest_conversion": {"vm_id": "vm1", "duration": 0.2},
                                "slowest_conversion": {"vm_id": "vm1", "duration": 0.2}},
            "warnings": [], "errors": [], "hyper2kvm_version": "0.1.0"
        })
    };
    assert_matches_schema("batch-report", &batch(json!({}), report(None)));
    assert_matches_schema(
        "batch-report",
        &batch(
            json!({"start_offset_seconds": 0.1, "slot": 0}),
            report(Some(0.0)),
        ),
    );
    assert_matches_schema(
        "batch-report",
        &batch(
            json!({"start_offset_seconds": 0.0, "slot": null}),
            report(None),
        ),
    );
    // The embedded VM report is checked as report.schema.json checks it.
    let mut bad = report(None);
    bad["status"] = json!("done");
    let errors = schema_errors(
        &schema_path("batch-report"),
        &batch(json!({"slot": -1}), bad).to_string(),
    );
    assert!(
        errors.iter().any(|e| e.contains("slot"))
            && errors.iter().any(|e| e.contains("pipeline_report.status")),
        "{errors:#?}"
    );
}
