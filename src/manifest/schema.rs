//! A small table-driven checker for the manifest sections that upstream leaves unchecked.
//!
//! Each section is a table of [`Field`]s; [`check_object`] reports unknown keys (with the nearest
//! valid key), wrong types and out-of-range values, every problem at once, each with its field
//! path. The upstream-compatible checks for `manifest_version`, `disks` and `vm` are hand-written
//! in the parent module because their messages and order are part of the interface.

use serde_json::{Map, Value};

use super::{FstabMode, InitramfsRebuild, NicType, OutputFormat};
use crate::config::kind_of;
use crate::diag::Problems;
use crate::diag::suggest;

pub enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// An optional string: null means unset.
    Str,
    /// A string that must be there when the key is (list items, settings without a null form).
    RequiredStr,
    Enum(&'static [&'static str]),
    Object(&'static [Field]),
    /// Any mapping; its contents are the user's (metadata, source extras).
    FreeObject,
    /// A mapping whose values are all strings.
    StrMap,
    StrList,
    ObjectList(&'static [Field]),
    /// A regular expression (checked by compiling it); `nullable`: null means unset.
    Regex {
        nullable: bool,
    },
    /// A section this build does not implement: only an empty value (or `enabled: false`) passes.
    Unsupported(&'static str),
    /// A section with its own checker (path, value, problems).
    Check(fn(&str, &Value, &mut Problems)),
}

pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

const INSPECT: &[Field] = &[
    f("enabled", Kind::Bool),
    f("collect_guest_info", Kind::Bool),
];
const FIX: &[Field] = &[
    f("enabled", Kind::Bool),
    f("backup", Kind::Bool),
    f("update_grub", Kind::Bool),
    f("regen_initramfs", Kind::Bool),
    f("initramfs_rebuild", Kind::Enum(InitramfsRebuild::NAMES)),
    f("fstab_mode", Kind::Enum(FstabMode::NAMES)),
    f("remove_vmware_tools", Kind::Bool),
    f("print_fstab", Kind::Bool),
    f("network", Kind::Bool),
];
const CONVERT: &[Field] = &[
    f("enabled", Kind::Bool),
    f("compress", Kind::Bool),
    f("compress_level", Kind::Int { min: 1, max: 9 }),
    f("check_image_integrity", Kind::Bool),
];
const BOOT_TEST: &[Field] = &[
    f("enabled", Kind::Bool),
    f(
        "timeout",
        Kind::Int {
            min: 1,
            max: 86_400,
        },
    ),
    f("success_pattern", Kind::Regex { nullable: false }),
    f("failure_pattern", Kind::Regex { nullable: true }),
    f(
        "memory_mb",
        Kind::Int {
            min: 128,
            max: 1_048_576,
        },
    ),
    f("cpus", Kind::Int { min: 1, max: 64 }),
];
const VALIDATE: &[Field] = &[
    f("enabled", Kind::Bool),
    f("check_image_integrity", Kind::Bool),
    f("boot_test", Kind::Object(BOOT_TEST)),
];
pub const PIPELINE: &[Field] = &[
    f("inspect", Kind::Object(INSPECT)),
    f("fix", Kind::Object(FIX)),
    f("convert", Kind::Object(CONVERT)),
    f("validate", Kind::Object(VALIDATE)),
];
const OUTPUT: &[Field] = &[
    f("directory", Kind::Str),
    f("format", Kind::Enum(OutputFormat::NAMES)),
    f("filename", Kind::Str),
];
const REPORT: &[Field] = &[f("enabled", Kind::Bool), f("path", Kind::RequiredStr)];
const OPTIONS: &[Field] = &[
    f("dry_run", Kind::Bool),
    f("verbose", Kind::Int { min: 0, max: 3 }),
    f("report", Kind::Object(REPORT)),
];
const NIC: &[Field] = &[
    f("id", Kind::Str),
    f("mac", Kind::Str),
    f("network", Kind::Str),
    f("type", Kind::Enum(NicType::NAMES)),
    f("model", Kind::Str),
];
const DOMAIN: &[Field] = &[f("preserve_uuid", Kind::Bool)];
const WARNING: &[Field] = &[
    f("stage", Kind::Str),
    f("message", Kind::Str),
    f("timestamp", Kind::Str),
];

/// Every top-level manifest key other than `manifest_version`, `disks` and `vm` (checked by hand).
pub const TOP_LEVEL: &[Field] = &[
    f("source", Kind::FreeObject),
    f("nics", Kind::ObjectList(NIC)),
    f("notes", Kind::StrList),
    f("warnings", Kind::ObjectList(WARNING)),
    f("metadata", Kind::FreeObject),
    f("pipeline", Kind::Object(PIPELINE)),
    f("output", Kind::Object(OUTPUT)),
    f("options", Kind::Object(OPTIONS)),
    f("profile", Kind::Str),
    f("profile_overrides", Kind::FreeObject),
    f("custom_profile_path", Kind::Str),
    f("profiles_directory", Kind::Str),
    f("description", Kind::Str),
    f(
        "network_mapping",
        Kind::Check(crate::mapping::check_network_mapping),
    ),
    f(
        "storage_mapping",
        Kind::Check(crate::mapping::check_storage_mapping),
    ),
    f("domain", Kind::Object(DOMAIN)),
    f(
        "libvirt_integration",
        Kind::Unsupported("libvirt_integration is not supported by this version of hyper2kvm yet"),
    ),
    f(
        "configuration",
        Kind::Unsupported(
            "configuration (guest injection) is not supported by this version of hyper2kvm yet",
        ),
    ),
];

/// Source keys upstream knows; others are allowed (the schema says `additionalProperties: true`)
/// but must still be scalars or mappings the user owns.
pub const SOURCE_STRINGS: &[&str] = &[
    "provider",
    "vm_id",
    "vm_name",
    "datacenter",
    "export_timestamp",
    "export_method",
];

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `map` against `fields`, skipping the keys in `handled` (checked elsewhere).
pub fn check_object(
    path: &str,
    map: &Map<String, Value>,
    fields: &[Field],
    handled: &[&str],
    problems: &mut Problems,
) {
    for (key, value) in map {
        if handled.contains(&key.as_str()) {
            continue;
        }
        let here = join(path, key);
        match fields.iter().find(|fl| fl.name == key) {
            Some(field) => check_value(&here, value, &field.kind, problems),
            None => {
                let names: Vec<&str> = fields
                    .iter()
                    .map(|fl| fl.name)
                    .chain(handled.iter().copied())
                    .collect();
                problems.push(&here, crate::diag::unknown_key(key, &names, None));
            }
        }
    }
}

pub fn check_value(path: &str, value: &Value, kind: &Kind, problems: &mut Problems) {
    let wrong = |problems: &mut Problems, expected: &str| {
        problems.push(
            path,
            format!(
                "{path} must be {expected} (got {}: {value})",
                kind_of(value)
            ),
        );
    };
    match kind {
        Kind::Bool => {
            if !value.is_boolean() {
                wrong(problems, "a boolean (true or false)");
            }
        }
        Kind::Int { min, max } => match value.as_i64() {
            Some(n) if (*min..=*max).contains(&n) => {}
            _ => wrong(problems, &format!("an integer from {min} to {max}")),
        },
        Kind::Str => {
            if !value.is_string() && !value.is_null() {
                wrong(problems, "a string");
            }
        }
        Kind::RequiredStr => {
            if !value.is_string() {
                wrong(problems, "a string");
            }
        }
        Kind::Enum(allowed) => match value.as_str() {
            Some(s) if allowed.contains(&s) => {}
            Some(s) => {
                let hint = suggest(s, allowed)
                    .map(|x| format!(" (did you mean '{x}'?)"))
                    .unwrap_or_default();
                problems.push(
                    path,
                    format!(
                        "{path} must be one of: {} (got: '{s}'){hint}",
                        allowed.join(", ")
                    ),
                );
            }
            None => wrong(problems, &format!("one of: {}", allowed.join(", "))),
        },
        Kind::Object(fields) => match value.as_object() {
            Some(map) => check_object(path, map, fields, &[], problems),
            None => wrong(problems, "a mapping"),
        },
        Kind::FreeObject => {
            if !value.is_object() {
                wrong(problems, "a mapping");
            }
        }
        Kind::StrMap => match value.as_object() {
            Some(map) => {
                for (k, v) in map {
                    if !v.is_string() {
                        check_value(&join(path, k), v, &Kind::Str, problems);
                    }
                }
            }
            None => wrong(problems, "a mapping of strings"),
        },
        Kind::StrList => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(&format!("{path}[{i}]"), item, &Kind::RequiredStr, problems);
                }
            }
            None => wrong(problems, "a list of strings"),
        },
        Kind::ObjectList(fields) => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(
                        &format!("{path}[{i}]"),
                        item,
                        &Kind::Object(fields),
                        problems,
                    );
                }
            }
            None => wrong(problems, "a list"),
        },
        Kind::Check(check) => check(path, value, problems),
        Kind::Regex { nullable } => match value.as_str() {
            Some(pattern) => {
                if let Err(why) = crate::boot_test::check_pattern(pattern) {
                    problems.push(path, format!("{path} {why}"));
                }
            }
            None if value.is_null() && *nullable => {}
            None => wrong(problems, "a regular expression (a string)"),
        },
        Kind::Unsupported(reason) => {
            let empty = match value {
                Value::Null => true,
                Value::Object(m) => {
                    m.is_empty()
                        || m.iter().all(|(k, v)| match (k.as_str(), v) {
                            ("enabled", Value::Bool(false)) => true,
                            (_, Value::Array(a)) => a.is_empty(),
                            (_, Value::Object(o)) => o.is_empty(),
                            _ => false,
                        })
                }
                _ => false,
            };
            if !empty {
                problems.push(path, format!("{reason}; remove '{path}' from the manifest"));
            }
        }
    }
}
