//! Artifact Manifest v1: one VM, its disks, and how to migrate it.
//!
//! A manifest is read as JSON or YAML, layered (profile < `profile_overrides` < batch
//! `shared_config` < the manifest itself < the batch entry's `overrides`), and then validated as
//! a whole: upstream's checks in upstream's order and wording for `manifest_version`, `disks` and
//! `vm`, then every other section through the [`schema`] tables. All problems are collected and
//! reported together, each with its field path, before anything is typed. Only a manifest that
//! passes becomes a [`Manifest`]; nothing downstream reads the raw document.
//!
//! Each section lives in its own module with its type, its field table, its checks and their
//! tests; this module holds the root, the layering and the order the sections are checked in.
//! The model sits below the services: nothing here imports a runner, a planner or libvirt.

pub mod batch;
pub mod boot_test;
pub mod disks;
pub mod domain;
pub mod hooks;
pub mod libvirt_integration;
pub mod mapping;
pub mod nics;
pub mod output;
pub mod pipeline;
pub mod schema;
pub mod source;
pub mod vm;
pub mod warnings;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use boot_test::BootTestSettings;
pub use disks::{Disk, DiskType, SourceFormat, TarMember, is_id, is_sha256_checksum};
pub use domain::DomainSection;
pub use hooks::HookSet;
pub use libvirt_integration::LibvirtIntegration;
pub use mapping::{
    ExplicitTarget, MacPolicy, NetworkMapping, NetworkTarget, PreallocateSetting, Preallocation,
    StorageMapping,
};
pub use nics::{
    MacAddr, MacvtapMode, NativeMode, Nic, NicModel, NicType, VirtualPort, VirtualPortType, Vlan,
    VlanTag, is_mac,
};
pub use output::{Options, Output, OutputFormat, ReportOptions};
pub use pipeline::{
    ConvertStage, FixStage, FstabMode, InitramfsRebuild, InspectStage, Pipeline, ValidateStage,
};
pub use source::Source;
pub use vm::{CpuTopology, Firmware, Hyperv, HypervMode, Tpm, TpmModel, TpmVersion, Vm};
pub use warnings::ManifestWarning;

use crate::config::{self, ConfigError, kind_of};
use crate::diag::{Problem, Problems, render_problems};
use crate::profile::{self, Catalog};
use schema::{Field, Kind, f};

pub const SUPPORTED_VERSIONS: &[&str] = &["1.0"];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error(
        "invalid manifest {path} ({} problem{}):\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        render_problems(problems)
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// A validated manifest, typed. Every default is its section's `Default` (or serde default), so
/// `--dump-config` prints what the planner will use.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub manifest_version: String,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub vm: Vm,
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<ManifestWarning>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub pipeline: Pipeline,
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub options: Options,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub profile_overrides: Map<String, Value>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        alias = "profiles_directory"
    )]
    pub custom_profile_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    #[serde(default)]
    pub hooks: HookSet,
    #[serde(default)]
    pub network_mapping: NetworkMapping,
    #[serde(default)]
    pub storage_mapping: StorageMapping,
    /// How the libvirt domain written after conversion is made.
    #[serde(default)]
    pub domain: DomainSection,
    /// Defining (and starting) the converted VM on a libvirt host.
    #[serde(default)]
    pub libvirt_integration: LibvirtIntegration,
    // Sections this build rejects when non-empty (see `TOP_LEVEL`).
    #[serde(default, skip_serializing)]
    pub configuration: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Loading and layering.

/// Extra layers a batch puts around a VM's own manifest.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    /// The batch's `shared_config`: above the profile, below the manifest.
    pub shared_config: Option<Map<String, Value>>,
    /// The batch entry's `overrides`: above everything.
    pub overrides: Option<Map<String, Value>>,
}

/// A manifest that passed validation, with everything needed to plan it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The manifest file, absolute.
    pub path: PathBuf,
    /// The directory relative paths in the manifest are resolved against.
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The profile chain that was applied, child first.
    pub profile_chain: Vec<String>,
    /// What loading decided that the admin should know (settings from shared layers that do
    /// not apply to this VM); `--dump-config` prints them and planning adds them to its notes.
    pub notes: Vec<String>,
}

impl Loaded {
    /// A disk's source path, resolved against the manifest's directory.
    pub fn disk_path(&self, disk: &Disk) -> PathBuf {
        config::resolve_relative(&self.dir, &disk.local_path)
    }

    /// The disk's `backing_chain`, resolved as `local_path` is (nearest parent first; empty
    /// for a standalone image).
    pub fn backing_chain(&self, disk: &Disk) -> Vec<PathBuf> {
        disk.backing_chain
            .iter()
            .flatten()
            .map(|p| config::resolve_relative(&self.dir, p))
            .collect()
    }
}

/// Reads a manifest file and resolves it with no batch layers.
pub fn load(path: &Path) -> Result<Loaded, ManifestError> {
    let doc = config::load_document_as(path, config::DocumentKind::Manifest)?;
    resolve(path, doc, &Layers::default())
}

/// Layers a parsed manifest document with its profile and the batch layers, then validates it.
pub fn resolve(
    path: &Path,
    doc: Map<String, Value>,
    layers: &Layers,
) -> Result<Loaded, ManifestError> {
    let path = config::absolute(path);
    let dir = config::dir_of(&path);

    let mut problems = Problems::default();
    // The guide's generated-manifest shape (top-level firmware and os_hint, metadata.vcpus and
    // memory_bytes), mapped onto `vm` in the manifest and the entry's overrides before the
    // layers are merged (shared_config shares no `vm`).
    let mut doc = doc;
    vm::adopt_guide_shape(&mut doc, &mut problems);
    // The disk_mappings keys this VM's own manifest (or its batch entry's overrides) writes:
    // those must name its disks; keys from shared layers need only fit the VMs they fit.
    let mut own_mapping_keys = mapping::disk_mapping_keys(&doc);
    if let Some(Value::Object(po)) = doc.get("profile_overrides") {
        own_mapping_keys.extend(mapping::disk_mapping_keys(po));
    }
    if let Some(overrides) = &layers.overrides {
        own_mapping_keys.extend(mapping::disk_mapping_keys(overrides));
    }

    // Everything but the profile, in precedence order, to learn which profile applies.
    let mut upper = layers.shared_config.clone().unwrap_or_default();
    config::merge_maps(&mut upper, doc);
    if let Some(overrides) = &layers.overrides {
        let mut overrides = overrides.clone();
        vm::adopt_guide_shape(&mut overrides, &mut problems);
        config::merge_maps(&mut upper, overrides);
    }

    let profile_name = match upper.get("profile") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(
                "profile",
                format!("profile must be a profile name (got {})", kind_of(other)),
            );
            None
        }
    };
    let custom_dir = ["custom_profile_path", "profiles_directory"]
        .iter()
        .find_map(|k| upper.get(*k).and_then(Value::as_str))
        .map(|d| config::resolve_relative(&dir, d));

    let mut effective = Map::new();
    let mut profile_chain = Vec::new();
    if let Some(name) = &profile_name {
        // A profile that cannot be resolved is one problem among the others, not a stop.
        match Catalog::new(custom_dir).and_then(|c| c.resolve(name)) {
            Ok(resolved) => {
                effective = resolved.settings;
                profile_chain = resolved.chain;
            }
            Err(e) => problems.push("profile", format!("Profile loading failed: {e}")),
        }
    }
    let mut overridden = Map::new();
    match upper.get("profile_overrides") {
        None | Some(Value::Null) => {}
        Some(Value::Object(po)) => {
            // Keys a profile may not set are reported once, here, and not merged.
            let allowed = check_profile_overrides(po, &mut problems);
            overridden = allowed.clone();
            config::merge_maps(&mut effective, allowed);
        }
        Some(other) => problems.push(
            "profile_overrides",
            format!(
                "profile_overrides must be a mapping (got {})",
                kind_of(other)
            ),
        ),
    }
    let manifest_layer = upper.clone();
    config::merge_maps(&mut effective, upper);
    let notes = mapping::drop_shared_disk_mappings(&mut effective, &own_mapping_keys, |key| {
        if layers
            .shared_config
            .as_ref()
            .is_some_and(|m| mapping::disk_mapping_keys(m).contains(key))
        {
            "the shared configuration (a batch's shared_config or a --config file)".to_owned()
        } else if mapping::disk_mapping_keys(&overridden).contains(key) {
            "profile_overrides".to_owned()
        } else {
            match profile_chain.first() {
                Some(p) => format!("the profile '{p}'"),
                None => "a shared layer".to_owned(),
            }
        }
    });

    let before = problems.0.len();
    validate(&effective, &dir, &mut problems);
    // A problem in a value that came from profile_overrides (and that the manifest itself does
    // not set) is named where it is written: `profile_overrides.pipeline.…`.
    for p in &mut problems.0[before..] {
        if !p.path.is_empty()
            && has_path(&overridden, &p.path)
            && !has_path(&manifest_layer, &p.path)
        {
            let moved = format!("profile_overrides.{}", p.path);
            p.message = p.message.replacen(&p.path, &moved, 1);
            p.path = moved;
        }
    }
    if !problems.is_empty() {
        return Err(ManifestError::Invalid {
            path,
            problems: problems.0,
        });
    }
    let manifest: Manifest =
        serde_json::from_value(Value::Object(effective.clone())).map_err(|e| {
            ManifestError::Invalid {
                path: path.clone(),
                problems: vec![Problem {
                    path: String::new(),
                    message: e.to_string(),
                }],
            }
        })?;
    Ok(Loaded {
        path,
        dir,
        manifest,
        profile_chain,
        notes,
    })
}

/// Whether `map` holds a value at a problem's field path (`pipeline.convert.compres`,
/// `hooks.pre_fix[0].path`; list indexes are not followed, the list is enough).
pub fn has_path(map: &Map<String, Value>, path: &str) -> bool {
    let mut here = map;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let key = part.split('[').next().unwrap_or(part);
        match here.get(key) {
            None => return false,
            Some(_) if part.contains('[') || parts.peek().is_none() => return true,
            Some(Value::Object(next)) => here = next,
            Some(_) => return true,
        }
    }
    false
}

fn check_profile_overrides(po: &Map<String, Value>, problems: &mut Problems) -> Map<String, Value> {
    let settable: Vec<&str> = profile::PROFILE_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "extends")
        .collect();
    let mut allowed = Map::new();
    for (key, value) in po {
        if settable.contains(&key.as_str()) {
            allowed.insert(key.clone(), value.clone());
            continue;
        }
        let hint = crate::diag::suggest(key, &settable)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        problems.push(
            &format!("profile_overrides.{key}"),
            format!(
                "profile_overrides may only set profile settings ({}), not '{key}'{hint}",
                settable.join(", ")
            ),
        );
    }
    allowed
}

/// Validates a merged manifest document; `dir` resolves relative disk paths.
/// Validates a merged manifest document; `dir` resolves relative disk paths.
pub fn validate(doc: &Map<String, Value>, dir: &Path, problems: &mut Problems) {
    // The order of these checks is the order problems are reported in.
    check_version(doc.get("manifest_version"), problems);
    if doc.contains_key("custom_profile_path") && doc.contains_key("profiles_directory") {
        problems.push(
            "profiles_directory",
            "custom_profile_path and profiles_directory name the same setting; keep one",
        );
    }
    disks::check(doc.get("disks"), dir, problems);
    if let Some(vm) = doc.get("vm") {
        vm::check(vm, problems);
    }
    schema::check_object("", doc, TOP_LEVEL, HAND_CHECKED, problems);
    // Hooks: structure, templates and script files, so a bad hook stops the run before any disk
    // is touched.
    hooks::parse(doc.get("hooks"), Some(dir), problems);
    source::check(doc.get("source"), problems);
    mapping::check_disk_mapping_ids(doc, problems);
    domain::check_preserve_uuid(doc, problems);
    libvirt_integration::check(doc, problems);
    if let Some(Value::Array(nics)) = doc.get("nics") {
        nics::check(nics, problems);
    }
    output::check_filename(doc, problems);
}

fn check_version(version: Option<&Value>, problems: &mut Problems) {
    match version {
        None => problems.push(
            "manifest_version",
            "Missing required field: manifest_version. This is an Artifact Manifest v1. \
             Expected versions: ['1.0']",
        ),
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {}
        Some(Value::Number(n)) => problems.push(
            "manifest_version",
            format!(
                "manifest_version must be the string \"1.0\" (got the number {n}; in YAML write \
                 manifest_version: \"1.0\")"
            ),
        ),
        Some(v) => {
            let shown = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            problems.push(
                "manifest_version",
                format!(
                    "Unsupported manifest version: {shown}. This hyper2kvm version supports: ['1.0']"
                ),
            );
        }
    }
}

/// Top-level keys checked by hand (their messages are upstream's) or by their own parser.
const HAND_CHECKED: &[&str] = &["manifest_version", "disks", "vm", "hooks"];

/// Every top-level manifest key other than those in [`HAND_CHECKED`].
pub const TOP_LEVEL: &[Field] = &[
    f("source", Kind::FreeObject),
    f("nics", Kind::ObjectList(nics::NIC)),
    f("notes", Kind::StrList),
    f("warnings", Kind::ObjectList(warnings::WARNING)),
    f("metadata", Kind::FreeObject),
    f("pipeline", Kind::Object(pipeline::PIPELINE)),
    f("output", Kind::Object(output::OUTPUT)),
    f("options", Kind::Object(output::OPTIONS)),
    f("profile", Kind::Str),
    f("profile_overrides", Kind::FreeObject),
    f("custom_profile_path", Kind::Str),
    f("profiles_directory", Kind::Str),
    f("description", Kind::Str),
    f(
        "network_mapping",
        Kind::Check(mapping::check_network_mapping),
    ),
    f(
        "storage_mapping",
        Kind::Check(mapping::check_storage_mapping),
    ),
    f("domain", Kind::Object(domain::DOMAIN)),
    f(
        "libvirt_integration",
        Kind::Object(libvirt_integration::LIBVIRT_INTEGRATION),
    ),
    f(
        "configuration",
        Kind::Unsupported(
            "configuration (guest injection) is not supported by this version of hyper2kvm yet",
        ),
    ),
];

#[cfg(test)]
mod published;
#[cfg(test)]
mod tests;
