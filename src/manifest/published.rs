//! The published schemas (`schemas/manifest.schema.json`, `schemas/batch.schema.json`) against
//! what validation checks: every field table, every hand-checked key list, every enum's names.
//! A key added to a table, a renamed enum value or a changed range fails here until the schema
//! says the same. (That the schemas accept and refuse what the binary does, document by
//! document, is tested through the binary in tests/integration/schemas.rs.)

use std::collections::BTreeSet;

use serde_json::Value;

use super::schema::{Field, Kind};
use super::{
    DiskType, Firmware, HAND_CHECKED, MacPolicy, OutputFormat, Preallocation, SourceFormat,
    TOP_LEVEL, batch, disks, hooks, mapping, source, vm,
};
use crate::profile::PROFILE_KEYS;
use crate::schemas;
use crate::stage::HookStage;

fn manifest_schema() -> Value {
    serde_json::from_str(schemas::MANIFEST).expect("JSON")
}

/// A schema node with its local `$ref`s followed (`#/...` within `root`).
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').expect("a local $ref");
        node = root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{r} resolves"));
    }
    node
}

/// The JSON types a node allows: its `type`, its `enum` or `const` values' types, and those of
/// its `anyOf` branches.
fn types(root: &Value, node: &Value) -> BTreeSet<String> {
    let node = resolve(root, node);
    let mut out = BTreeSet::new();
    let name = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match node.get("type") {
        Some(Value::String(t)) => {
            out.insert(t.clone());
        }
        Some(Value::Array(ts)) => {
            out.extend(ts.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        _ => {}
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        out.extend(values.iter().map(|v| name(v).to_owned()));
    }
    if let Some(v) = node.get("const") {
        out.insert(name(v).to_owned());
    }
    for branch in node
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(types(root, branch));
    }
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The object schema among a node and its `anyOf` branches (`{anyOf: [null, {$ref: tpm}]}`).
fn object<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let node = resolve(root, node);
    if node.get("properties").is_some() {
        return node;
    }
    node.get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|b| resolve(root, b))
        .find(|b| b.get("properties").is_some())
        .unwrap_or_else(|| panic!("an object schema: {node}"))
}

fn keys(node: &Value) -> BTreeSet<String> {
    node["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

fn prop<'a>(root: &'a Value, node: &'a Value, key: &str) -> &'a Value {
    let node = object(root, node);
    node["properties"]
        .get(key)
        .unwrap_or_else(|| panic!("a property {key}"))
}

fn enum_names(root: &Value, node: &Value) -> Vec<String> {
    resolve(root, node)["enum"]
        .as_array()
        .expect("an enum")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A closed object: `additionalProperties: false` and exactly `names` as its properties.
fn closed<'a>(root: &'a Value, node: &'a Value, names: &[&str], path: &str) -> &'a Value {
    let node = object(root, node);
    assert_eq!(node["additionalProperties"], false, "{path} is closed");
    assert_eq!(
        keys(node),
        set(names),
        "{path}: the schema's keys are the code's"
    );
    node
}

fn check_table(root: &Value, node: &Value, fields: &[Field], handled: &[&str], path: &str) {
    let names: Vec<&str> = fields
        .iter()
        .map(|f| f.name)
        .chain(handled.iter().copied())
        .collect();
    let node = closed(root, node, &names, path);
    for field in fields {
        check_kind(
            root,
            &node["properties"][field.name],
            &field.kind,
            &format!("{path}.{}", field.name),
        );
    }
}

fn check_kind(root: &Value, node: &Value, kind: &Kind, path: &str) {
    let t = types(root, node);
    let expect = |want: &[&str]| assert_eq!(t, set(want), "{path}: the types the code takes");
    match kind {
        Kind::Bool => expect(&["boolean"]),
        Kind::Int { min, max } => {
            expect(&["integer"]);
            let node = resolve(root, node);
            assert_eq!(node["minimum"].as_i64(), Some(*min), "{path}: minimum");
            assert_eq!(node["maximum"].as_i64(), Some(*max), "{path}: maximum");
        }
        Kind::Str => expect(&["string", "null"]),
        Kind::RequiredStr => expect(&["string"]),
        Kind::Enum(names) => {
            expect(&["string"]);
            assert_eq!(
                enum_names(root, node),
                set_vec(names),
                "{path}: the enum's names"
            );
        }
        Kind::Object(fields) => check_table(root, node, fields, &[], path),
        Kind::FreeObject => expect(&["object"]),
        Kind::StrMap => {
            expect(&["object"]);
            assert_eq!(
                types(root, &resolve(root, node)["additionalProperties"]),
                set(&["string"]),
                "{path}: values"
            );
        }
        Kind::StrList => {
            expect(&["array"]);
            assert_eq!(
                types(root, &resolve(root, node)["items"]),
                set(&["string"]),
                "{path}[]"
            );
        }
        Kind::ObjectList(fields) => {
            expect(&["array"]);
            check_table(
                root,
                &resolve(root, node)["items"],
                fields,
                &[],
                &format!("{path}[]"),
            );
        }
        Kind::Regex { nullable, .. } => {
            if *nullable {
                expect(&["string", "null"]);
            } else {
                expect(&["string"]);
            }
        }
        Kind::Unsupported(_) => expect(&["null", "object"]),
        // A section with its own checker: its keys are checked below, from its key list.
        Kind::Check(_) => {}
    }
}

fn set_vec(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_manifest_schema_has_every_table() {
    let root = manifest_schema();
    let keys_node = &root["$defs"]["manifest_keys"];
    // The guide's generated-manifest keys are mapped onto `vm` before the tables are checked.
    let mut handled = HAND_CHECKED.to_vec();
    handled.extend(["firmware", "os_hint"]);
    check_table(&root, keys_node, TOP_LEVEL, &handled, "manifest");
    assert_eq!(
        root["required"],
        serde_json::json!(["manifest_version", "disks"])
    );
    assert_eq!(
        resolve(&root, prop(&root, keys_node, "manifest_version"))["const"],
        "1.0"
    );
    assert_eq!(super::SUPPORTED_VERSIONS, ["1.0"]);

    let vm = closed(&root, prop(&root, keys_node, "vm"), vm::KEYS, "vm");
    assert_eq!(
        enum_names(&root, &vm["properties"]["firmware"]),
        set_vec(Firmware::NAMES)
    );
    for (key, table) in [
        ("tpm", vm::TPM),
        ("cpu_topology", vm::CPU_TOPOLOGY),
        ("hyperv", vm::HYPERV),
    ] {
        check_table(
            &root,
            &vm["properties"][key],
            table,
            &[],
            &format!("vm.{key}"),
        );
    }

    let disks_node = resolve(&root, prop(&root, keys_node, "disks"));
    let disk = closed(&root, &disks_node["items"], disks::KEYS, "disks[]");
    assert_eq!(
        enum_names(&root, &disk["properties"]["source_format"]),
        set_vec(SourceFormat::NAMES)
    );
    assert_eq!(
        enum_names(&root, &disk["properties"]["disk_type"]),
        set_vec(DiskType::NAMES)
    );

    let source = object(&root, prop(&root, keys_node, "source"));
    assert_eq!(
        source["additionalProperties"], true,
        "source keeps the user's keys"
    );
    for key in source::STRING_KEYS {
        assert_eq!(
            types(&root, &source["properties"][key]),
            set(&["string", "null"]),
            "source.{key}"
        );
    }

    let net = closed(
        &root,
        prop(&root, keys_node, "network_mapping"),
        mapping::NETWORK_KEYS,
        "network_mapping",
    );
    assert_eq!(
        enum_names(&root, &net["properties"]["mac_address_policy"]),
        set_vec(MacPolicy::NAMES)
    );
    let storage = closed(
        &root,
        prop(&root, keys_node, "storage_mapping"),
        mapping::STORAGE_KEYS,
        "storage_mapping",
    );
    assert_eq!(
        enum_names(&root, &storage["properties"]["format_override"]),
        set_vec(OutputFormat::NAMES)
    );
    assert_eq!(
        enum_names(&root, &storage["properties"]["preallocate"]),
        set_vec(Preallocation::NAMES)
    );

    let profile_keys: Vec<&str> = PROFILE_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "extends")
        .collect();
    closed(
        &root,
        prop(&root, keys_node, "profile_overrides"),
        &profile_keys,
        "profile_overrides",
    );
}

#[test]
fn the_manifest_schema_has_every_hook_key_and_name() {
    let root = manifest_schema();
    closed(&root, &root["$defs"]["hooks"], HookStage::NAMES, "hooks");
    for (def, own) in [
        ("script_hook", hooks::SCRIPT_KEYS),
        ("python_hook", hooks::PYTHON_KEYS),
        ("http_hook", hooks::HTTP_KEYS),
    ] {
        let all: Vec<&str> = hooks::COMMON_KEYS.iter().chain(own).copied().collect();
        closed(&root, &root["$defs"][def], &all, def);
    }
    closed(
        &root,
        &root["$defs"]["hook_retry"],
        hooks::RETRY_KEYS,
        "retry",
    );
    // Hook types, methods and strategies are matched without regard to case: the patterns take
    // every name in any case, and nothing else.
    for (pattern, names) in [
        (
            &root["$defs"]["hook"]["properties"]["type"]["pattern"],
            hooks::HookType::NAMES,
        ),
        (
            &root["$defs"]["http_hook"]["properties"]["method"]["pattern"],
            hooks::Method::NAMES,
        ),
        (
            &root["$defs"]["hook_retry"]["properties"]["strategy"]["pattern"],
            hooks::Backoff::NAMES,
        ),
    ] {
        let re = regex::Regex::new(pattern.as_str().expect("a pattern")).expect("a regex");
        for name in names {
            for spelling in [name.to_lowercase(), name.to_uppercase()] {
                assert!(re.is_match(&spelling), "{pattern} takes {spelling}");
            }
            assert!(
                !re.is_match(&format!("{name}x")),
                "{pattern} refuses {name}x"
            );
        }
    }
}

#[test]
fn the_batch_schema_has_every_key_and_shares_the_manifest_sections() {
    let root: Value = serde_json::from_str(schemas::BATCH).expect("JSON");
    let manifest = manifest_schema();
    closed(&root, &root, batch::TOP_KEYS, "batch");
    closed(
        &root,
        &root["properties"]["batch_metadata"],
        batch::METADATA_KEYS,
        "batch_metadata",
    );
    let entry = closed(&root, &root["$defs"]["vm_entry"], batch::VM_KEYS, "vms[]");
    assert_eq!(
        entry["properties"]["overrides"]["$ref"], "manifest.schema.json#/$defs/manifest_keys",
        "overrides may set any manifest key"
    );
    // shared_config: the manifest's keys but a VM's own (checked by the loader), plus the
    // batch's output_directory; each is the manifest's own schema.
    let own = ["manifest_version", "disks", "source", "vm", "nics"];
    let mut shared: Vec<&str> = TOP_LEVEL
        .iter()
        .map(|f| f.name)
        .chain(HAND_CHECKED.iter().copied())
        .filter(|k| !own.contains(k))
        .collect();
    shared.push("output_directory");
    let shared_node = closed(
        &root,
        &root["$defs"]["shared_config"],
        &shared,
        "shared_config",
    );
    let manifest_keys = &manifest["$defs"]["manifest_keys"];
    for (key, node) in shared_node["properties"].as_object().expect("properties") {
        if key == "output_directory" {
            continue;
        }
        let r = node["$ref"]
            .as_str()
            .expect("a $ref into the manifest schema");
        let pointer = r
            .strip_prefix("manifest.schema.json#")
            .expect("into the manifest schema");
        let target = manifest.pointer(pointer).expect("resolves");
        assert_eq!(
            resolve(&manifest, target),
            resolve(&manifest, &manifest_keys["properties"][key]),
            "shared_config.{key} is the manifest's {key}"
        );
    }
}
