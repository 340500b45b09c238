//! Batch Manifest v1: which VM manifests to convert, in what order, with what shared settings.
//!
//! Validation follows upstream's messages (see upstream-behaviour §3.1) and adds the file and
//! field path, unknown keys with the nearest valid key, and every problem at once. VM manifest
//! paths resolve against the batch file's directory, not the working directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::disks::is_id;
use super::source::ExportKind;
use crate::config::{self, ConfigError, kind_of};
use crate::diag::{Problem, Problems, render_problems};

pub const SUPPORTED_VERSIONS: &[&str] = &["1.0"];
pub(super) const TOP_KEYS: &[&str] = &["batch_version", "batch_metadata", "vms", "shared_config"];
pub(super) const METADATA_KEYS: &[&str] = &["batch_id", "parallel_limit", "continue_on_error"];
pub(super) const VM_KEYS: &[&str] = &[
    "manifest",
    "ova",
    "ovf",
    "vmx",
    "hyperv",
    "id",
    "priority",
    "enabled",
    "overrides",
];

/// The keys that name what a VM entry converts, each with the export kind it reads (`None`:
/// a VM manifest).
pub const SOURCE_KEYS: &[(&str, Option<ExportKind>)] = &[
    ("manifest", None),
    ("ova", Some(ExportKind::Ova)),
    ("ovf", Some(ExportKind::Ovf)),
    ("vmx", Some(ExportKind::Vmx)),
    ("hyperv", Some(ExportKind::HyperV)),
];

#[derive(Debug, thiserror::Error)]
pub enum BatchManifestError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error(
        "invalid batch manifest {path} ({} problem{}):\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        render_problems(problems)
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// A validated batch manifest.
#[derive(Clone, Debug)]
pub struct BatchManifest {
    /// The batch file, absolute.
    pub path: PathBuf,
    pub dir: PathBuf,
    pub batch_id: String,
    pub parallel_limit: usize,
    pub continue_on_error: bool,
    /// In file order.
    pub vms: Vec<VmEntry>,
    /// `shared_config` without `output_directory`: a layer under every VM's manifest.
    pub shared_config: Map<String, Value>,
    /// `shared_config.output_directory`, resolved against the batch file.
    pub output_directory: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct VmEntry {
    /// Position in the file (0-based).
    pub index: usize,
    pub id: String,
    /// The VM's manifest, or the export it is imported from (see `export`), absolute.
    pub manifest: PathBuf,
    /// Set when the entry names an export (`ova:`, `ovf:`, `vmx:`, `hyperv:`) instead of a
    /// manifest: the VM's manifest is generated from it when the batch is planned.
    pub export: Option<ExportKind>,
    pub priority: i64,
    pub enabled: bool,
    pub overrides: Map<String, Value>,
}

impl BatchManifest {
    /// Enabled VMs in run order: by priority (lower first), then by position.
    pub fn run_order(&self) -> Vec<&VmEntry> {
        let mut order: Vec<&VmEntry> = self.vms.iter().filter(|v| v.enabled).collect();
        order.sort_by_key(|v| (v.priority, v.index));
        order
    }
}

/// Reads and validates a batch manifest.
pub fn load(path: &Path) -> Result<BatchManifest, BatchManifestError> {
    let doc = config::load_document_as(path, config::DocumentKind::BatchManifest)?;
    let path = config::absolute(path);
    let dir = config::dir_of(&path);
    let mut problems = Problems::default();
    let parsed = validate(&doc, &dir, &mut problems);
    match parsed {
        Some(mut batch) if problems.is_empty() => {
            batch.path = path;
            Ok(batch)
        }
        _ => Err(BatchManifestError::Invalid {
            path,
            problems: problems.0,
        }),
    }
}

fn validate(
    doc: &Map<String, Value>,
    dir: &Path,
    problems: &mut Problems,
) -> Option<BatchManifest> {
    match doc.get("batch_version") {
        None => problems.push(
            "batch_version",
            "Missing required field: batch_version. Expected versions: ['1.0']",
        ),
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {}
        Some(Value::Number(n)) => problems.push(
            "batch_version",
            format!(
                "batch_version must be the string \"1.0\" (got the number {n}; in YAML write \
                 batch_version: \"1.0\")"
            ),
        ),
        Some(v) => {
            let shown = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            problems.push(
                "batch_version",
                format!("Unsupported batch version: {shown}. Supported versions: ['1.0']"),
            );
        }
    }

    let mut batch_id = "unnamed_batch".to_owned();
    let mut parallel_limit = 4usize;
    let mut continue_on_error = true;
    match doc.get("batch_metadata") {
        None => {}
        Some(Value::Object(meta)) => {
            match meta.get("batch_id") {
                None => {}
                Some(Value::String(s)) if !s.trim().is_empty() => batch_id = s.clone(),
                Some(other) => problems.push(
                    "batch_metadata.batch_id",
                    format!(
                        "batch_metadata.batch_id must be a non-empty string (got {})",
                        kind_of(other)
                    ),
                ),
            }
            match meta.get("parallel_limit") {
                None => {}
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 => parallel_limit = usize::try_from(n).unwrap_or(usize::MAX),
                    _ => problems.push(
                        "batch_metadata.parallel_limit",
                        format!(
                            "batch_metadata.parallel_limit must be a positive integer (got: {})",
                            crate::diag::excerpt_value(v)
                        ),
                    ),
                },
            }
            match meta.get("continue_on_error") {
                None => {}
                Some(Value::Bool(b)) => continue_on_error = *b,
                Some(_) => problems.push(
                    "batch_metadata.continue_on_error",
                    "batch_metadata.continue_on_error must be a boolean",
                ),
            }
            problems.unknown_keys("batch_metadata", meta, METADATA_KEYS);
        }
        Some(_) => problems.push("batch_metadata", "batch_metadata must be an object"),
    }

    let mut vms = Vec::new();
    match doc.get("vms") {
        None => problems.push(
            "vms",
            "Missing required field: vms[]. Batch Manifest requires at least one VM.",
        ),
        Some(Value::Array(items)) if items.is_empty() => {
            problems.push("vms", "Field 'vms' must contain at least one VM entry")
        }
        Some(Value::Array(items)) => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(entry) = validate_vm(i, item, dir, &mut seen, problems) {
                    vms.push(entry);
                }
            }
        }
        Some(_) => problems.push("vms", "Field 'vms' must be an array"),
    }

    let mut shared_config = Map::new();
    let mut output_directory = None;
    match doc.get("shared_config") {
        None => {}
        Some(Value::Object(shared)) => {
            shared_config = shared.clone();
            match shared_config.remove("output_directory") {
                None | Some(Value::Null) => {}
                Some(Value::String(d)) => {
                    output_directory = Some(config::resolve_relative(dir, &d))
                }
                Some(other) => problems.push(
                    "shared_config.output_directory",
                    format!(
                        "shared_config.output_directory must be a path (got {})",
                        kind_of(&other)
                    ),
                ),
            }
            for key in ["manifest_version", "disks", "source", "vm", "nics"] {
                if shared_config.contains_key(key) {
                    problems.push(
                        &format!("shared_config.{key}"),
                        format!(
                            "shared_config.{key}: a VM's own {key} cannot be shared; set it in \
                             each VM manifest"
                        ),
                    );
                }
            }
            // Checked here, once, against the batch file: a typo in shared_config is the batch
            // file's, not an error of every VM's manifest.
            super::schema::check_object(
                "shared_config",
                &shared_config,
                super::TOP_LEVEL,
                &["manifest_version", "disks", "source", "vm", "nics", "hooks"],
                problems,
            );
        }
        Some(_) => problems.push("shared_config", "shared_config must be an object"),
    }

    problems.unknown_keys("", doc, TOP_KEYS);

    if vms.iter().all(|v: &VmEntry| !v.enabled) && !vms.is_empty() {
        problems.push(
            "vms",
            "every VM in the batch has enabled: false; there is nothing to convert",
        );
    }

    Some(BatchManifest {
        path: PathBuf::new(),
        dir: dir.to_owned(),
        batch_id,
        parallel_limit,
        continue_on_error,
        vms,
        shared_config,
        output_directory,
    })
}

fn validate_vm(
    i: usize,
    item: &Value,
    dir: &Path,
    seen: &mut HashSet<String>,
    problems: &mut Problems,
) -> Option<VmEntry> {
    let Some(vm) = item.as_object() else {
        problems.push(&format!("vms[{i}]"), format!("vms[{i}] must be an object"));
        return None;
    };
    let before = problems.0.len();
    let named: Vec<(&str, Option<ExportKind>)> = SOURCE_KEYS
        .iter()
        .copied()
        .filter(|(k, _)| vm.contains_key(*k))
        .collect();
    let (manifest, export) = match named.as_slice() {
        [] => {
            problems.push(
                &format!("vms[{i}].manifest"),
                format!(
                    "vms[{i}].manifest is required (path to VM manifest file), or one of ova, \
                     ovf, vmx, hyperv (an export to import)"
                ),
            );
            (None, None)
        }
        [(key, export)] => match vm.get(*key) {
            Some(Value::String(s)) if !s.is_empty() => {
                (Some(config::resolve_relative(dir, s)), *export)
            }
            _ => {
                problems.push(
                    &format!("vms[{i}].{key}"),
                    format!("vms[{i}].{key} must be a string path"),
                );
                (None, None)
            }
        },
        several => {
            let keys: Vec<&str> = several.iter().map(|(k, _)| *k).collect();
            problems.push(
                &format!("vms[{i}]"),
                format!(
                    "vms[{i}] names {}: an entry converts one VM, from its manifest or from one \
                     export",
                    keys.join(" and ")
                ),
            );
            (None, None)
        }
    };
    let priority = match vm.get("priority") {
        None => 0,
        Some(v) => v.as_i64().unwrap_or_else(|| {
            problems.push(
                &format!("vms[{i}].priority"),
                format!(
                    "vms[{i}].priority must be an integer (got: {})",
                    crate::diag::excerpt_value(v)
                ),
            );
            0
        }),
    };
    let id = match vm.get("id") {
        None => format!("vm_{i}"),
        Some(Value::String(s)) if is_id(s) => s.clone(),
        Some(v) => {
            let shown = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            problems.push(
                &format!("vms[{i}].id"),
                format!("vms[{i}].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: '{shown}')"),
            );
            format!("vm_{i}")
        }
    };
    if !seen.insert(id.clone()) {
        problems.push(&format!("vms[{i}].id"), format!("Duplicate VM ID: {id}"));
    }
    let overrides = match vm.get("overrides") {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            problems.push(
                &format!("vms[{i}].overrides"),
                format!("vms[{i}].overrides must be an object"),
            );
            Map::new()
        }
    };
    let enabled = match vm.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(
                &format!("vms[{i}].enabled"),
                format!("vms[{i}].enabled must be a boolean"),
            );
            true
        }
    };
    problems.unknown_keys(&format!("vms[{i}]"), vm, VM_KEYS);
    if problems.0.len() != before {
        return None;
    }
    Some(VmEntry {
        index: i,
        id,
        manifest: manifest?,
        export,
        priority,
        enabled,
        overrides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> (Option<BatchManifest>, Vec<String>) {
        let Value::Object(doc) = v else {
            panic!("object")
        };
        let mut problems = Problems::default();
        let b = validate(&doc, Path::new("/batches"), &mut problems);
        (b, problems.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_and_order() {
        let (b, problems) = check(json!({"batch_version": "1.0", "vms": [
            {"manifest": "a.json", "priority": 5},
            {"manifest": "b.yaml", "id": "bee"},
            {"manifest": "/abs/c.json", "priority": -1},
            {"manifest": "d.json", "enabled": false}]}));
        assert!(problems.is_empty(), "{problems:?}");
        let b = b.expect("parsed");
        assert_eq!(b.batch_id, "unnamed_batch");
        assert_eq!(b.parallel_limit, 4);
        assert!(b.continue_on_error);
        assert_eq!(b.vms[0].id, "vm_0");
        assert_eq!(b.vms[0].manifest, PathBuf::from("/batches/a.json"));
        let order: Vec<&str> = b.run_order().iter().map(|v| v.id.as_str()).collect();
        assert_eq!(order, ["vm_2", "bee", "vm_0"]);
    }

    #[test]
    fn upstream_messages_with_paths_all_at_once() {
        let (_, problems) = check(json!({"batch_version": "2",
            "batch_metadata": {"parallel_limit": 0, "continue_on_error": "no", "batchid": "x"},
            "vms": [
                {"manifest": "a.json", "id": "web"},
                {"manifest": 3, "id": "web"},
                {"id": "bad id"},
                {"manifest": "b.json", "priority": "high", "overrides": [], "enabled": 1, "prio": 2},
                "nope"],
            "shared_config": {"disks": []},
            "share_config": {}}));
        assert_eq!(
            problems,
            [
                "batch_version: Unsupported batch version: 2. Supported versions: ['1.0']",
                "batch_metadata.parallel_limit must be a positive integer (got: 0)",
                "batch_metadata.continue_on_error must be a boolean",
                "batch_metadata.batchid: unknown key 'batchid' (did you mean 'batch_id'?)",
                "vms[1].manifest must be a string path",
                "vms[1].id: Duplicate VM ID: web",
                "vms[2].manifest is required (path to VM manifest file), or one of ova, ovf, vmx, \
                 hyperv (an export to import)",
                "vms[2].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: 'bad id')",
                "vms[3].priority must be an integer (got: \"high\")",
                "vms[3].overrides must be an object",
                "vms[3].enabled must be a boolean",
                "vms[3].prio: unknown key 'prio' (did you mean 'priority'?)",
                "vms[4] must be an object",
                "shared_config.disks: a VM's own disks cannot be shared; set it in each VM manifest",
                "unknown key 'share_config' (did you mean 'shared_config'?)",
            ]
        );
    }

    #[test]
    fn missing_vms_and_no_enabled_vm() {
        let (_, p) = check(json!({"batch_version": "1.0"}));
        assert_eq!(
            p,
            ["Missing required field: vms[]. Batch Manifest requires at least one VM."]
        );
        let (_, p) =
            check(json!({"batch_version": "1.0", "vms": [{"manifest": "a", "enabled": false}]}));
        assert_eq!(
            p,
            ["vms: every VM in the batch has enabled: false; there is nothing to convert"]
        );
    }
}
