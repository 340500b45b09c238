//! Artifact Manifest v1: one VM, its disks, and how to migrate it.
//!
//! A manifest is read as JSON or YAML, layered (profile < `profile_overrides` < batch
//! `shared_config` < the manifest itself < the batch entry's `overrides`), and then validated as
//! a whole: upstream's checks in upstream's order and wording for `manifest_version`, `disks` and
//! `vm`, then every other section through the [`schema`] tables. All problems are collected and
//! reported together, each with its field path, before anything is typed. Only a manifest that
//! passes becomes a [`Manifest`]; nothing downstream reads the raw document.

pub mod batch;
pub mod schema;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{self, ConfigError, kind_of};
use crate::diag::{Problem, Problems, render_problems};
use crate::mapping::{NetworkMapping, StorageMapping};
use crate::profile::{self, Catalog};
use crate::spelling::spelled_enum;

pub const SUPPORTED_VERSIONS: &[&str] = &["1.0"];
const DISK_KEYS: &[&str] = &[
    "id",
    "source_format",
    "bytes",
    "local_path",
    "checksum",
    "boot_order_hint",
    "label",
    "disk_type",
];
const VM_KEYS: &[&str] = &[
    "cpu",
    "mem_gb",
    "firmware",
    "secureboot",
    "os_hint",
    "os_version",
];

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

// ---------------------------------------------------------------------------------------------
// The typed model. Defaults live here and only here.

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
    pub hooks: crate::hooks::HookSet,
    #[serde(default)]
    pub network_mapping: NetworkMapping,
    #[serde(default)]
    pub storage_mapping: StorageMapping,
    /// How the libvirt domain written after conversion is made.
    #[serde(default)]
    pub domain: DomainSection,
    // Sections this build rejects when non-empty (see `schema::TOP_LEVEL`).
    #[serde(default, skip_serializing)]
    pub libvirt_integration: Option<Value>,
    #[serde(default, skip_serializing)]
    pub configuration: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_method: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

spelled_enum! {
    #[derive(Default)]
    pub enum Firmware {
        #[default]
        Bios = "bios",
        Uefi = "uefi",
        Unknown = "unknown",
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_gb: Option<u32>,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default)]
    pub secureboot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

spelled_enum! {
    pub enum SourceFormat {
        Vmdk = "vmdk",
        Qcow2 = "qcow2",
        Raw = "raw",
        Vhd = "vhd",
        Vhdx = "vhdx",
        Vdi = "vdi",
    }
}

impl SourceFormat {
    /// The qemu block driver name (`-f`), which differs from the manifest name only for VHD.
    pub fn driver(self) -> &'static str {
        match self {
            SourceFormat::Vmdk => "vmdk",
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Raw => "raw",
            SourceFormat::Vhd => "vpc",
            SourceFormat::Vhdx => "vhdx",
            SourceFormat::Vdi => "vdi",
        }
    }

    /// The manifest format for a qemu driver name.
    pub fn from_driver(driver: &str) -> Option<Self> {
        Some(match driver {
            "vmdk" => SourceFormat::Vmdk,
            "qcow2" => SourceFormat::Qcow2,
            "raw" => SourceFormat::Raw,
            "vpc" => SourceFormat::Vhd,
            "vhdx" => SourceFormat::Vhdx,
            "vdi" => SourceFormat::Vdi,
            _ => return None,
        })
    }

    /// Whether `qemu-img check` can examine this format (raw and vpc answer "not supported").
    pub fn checkable(self) -> bool {
        !matches!(self, SourceFormat::Raw | SourceFormat::Vhd)
    }
}

spelled_enum! {
    #[derive(Default)]
    pub enum DiskType {
        Boot = "boot",
        Data = "data",
        #[default]
        Unknown = "unknown",
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub id: String,
    pub source_format: SourceFormat,
    pub bytes: u64,
    pub local_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default = "default_boot_order_hint")]
    pub boot_order_hint: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub disk_type: DiskType,
}

fn default_boot_order_hint() -> u32 {
    999
}

impl Disk {
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.id)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The source network (port group, libvirt network, bridge or host device) that
    /// `network_mapping.source_networks` is looked up by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// How the source connected it, when known (libvirt's interface type).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NicType>,
    /// The source's NIC model (e1000, vmxnet3, virtio...), kept for the record: the emitted
    /// domain always uses virtio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

spelled_enum! {
    /// The libvirt interface types a migrated NIC can keep.
    pub enum NicType {
        Bridge = "bridge",
        Network = "network",
        Direct = "direct",
        User = "user",
    }
}

/// `domain`: choices about the libvirt domain XML written after a conversion.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainSection {
    /// Reuse `source.uuid` as the domain's UUID instead of deriving a new one. Only for a VM
    /// whose original will not run on the same libvirt host (libvirt refuses a second domain
    /// with the same UUID) and whose guest software is tied to the UUID.
    pub preserve_uuid: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestWarning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    pub inspect: InspectStage,
    pub fix: FixStage,
    pub convert: ConvertStage,
    pub validate: ValidateStage,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectStage {
    pub enabled: bool,
    pub collect_guest_info: bool,
}

spelled_enum! {
    #[derive(Default)]
    pub enum FstabMode {
        #[default]
        StabilizeAll = "stabilize-all",
        BypathOnly = "bypath-only",
        Noop = "noop",
    }
}

spelled_enum! {
    /// When `regen_initramfs` rebuilds an image: `auto` when it lacks the virtio drivers or the
    /// repairs changed a file it carries a copy of, `always` for every kernel.
    #[derive(Default)]
    pub enum InitramfsRebuild {
        #[default]
        Auto = "auto",
        Always = "always",
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixStage {
    pub enabled: bool,
    pub backup: bool,
    pub update_grub: bool,
    pub regen_initramfs: bool,
    pub initramfs_rebuild: InitramfsRebuild,
    pub fstab_mode: FstabMode,
    pub remove_vmware_tools: bool,
    pub print_fstab: bool,
    /// Remove MAC pinning from the guest's network configuration.
    pub network: bool,
}

impl Default for FixStage {
    fn default() -> Self {
        Self {
            enabled: false,
            backup: true,
            update_grub: true,
            regen_initramfs: true,
            initramfs_rebuild: InitramfsRebuild::Auto,
            fstab_mode: FstabMode::StabilizeAll,
            remove_vmware_tools: false,
            print_fstab: false,
            network: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvertStage {
    pub enabled: bool,
    pub compress: bool,
    pub compress_level: u8,
    /// Run `qemu-img check` on the source before converting, when inspect has not already.
    pub check_image_integrity: bool,
}

impl Default for ConvertStage {
    fn default() -> Self {
        Self {
            enabled: false,
            compress: false,
            compress_level: 6,
            check_image_integrity: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateStage {
    pub enabled: bool,
    /// Compare the output's content with the source (`qemu-img compare`).
    pub check_image_integrity: bool,
    /// Boot the outputs once and read the serial console.
    pub boot_test: crate::boot_test::BootTestSettings,
}

impl Default for ValidateStage {
    fn default() -> Self {
        Self {
            enabled: false,
            check_image_integrity: true,
            boot_test: crate::boot_test::BootTestSettings::default(),
        }
    }
}

spelled_enum! {
    #[derive(Default)]
    pub enum OutputFormat {
        #[default]
        Qcow2 = "qcow2",
        Raw = "raw",
        Vdi = "vdi",
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    pub format: OutputFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    pub dry_run: bool,
    pub verbose: u8,
    pub report: ReportOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            verbose: 1,
            report: ReportOptions::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportOptions {
    pub enabled: bool,
    pub path: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "report.json".to_owned(),
        }
    }
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
}

impl Loaded {
    /// A disk's source path, resolved against the manifest's directory.
    pub fn disk_path(&self, disk: &Disk) -> PathBuf {
        config::resolve_relative(&self.dir, &disk.local_path)
    }
}

/// Reads a manifest file and resolves it with no batch layers.
pub fn load(path: &Path) -> Result<Loaded, ManifestError> {
    let doc = config::load_document(path)?;
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

    // Everything but the profile, in precedence order, to learn which profile applies.
    let mut upper = layers.shared_config.clone().unwrap_or_default();
    config::merge_maps(&mut upper, doc);
    if let Some(overrides) = &layers.overrides {
        config::merge_maps(&mut upper, overrides.clone());
    }

    let mut problems = Problems::default();
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
    match upper.get("profile_overrides") {
        None | Some(Value::Null) => {}
        Some(Value::Object(po)) => {
            // Keys a profile may not set are reported once, here, and not merged.
            let allowed = check_profile_overrides(po, &mut problems);
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
    config::merge_maps(&mut effective, upper);

    validate(&effective, &dir, &mut problems);
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
    })
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
pub fn validate(doc: &Map<String, Value>, dir: &Path, problems: &mut Problems) {
    // 1. Version.
    match doc.get("manifest_version") {
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
    if doc.contains_key("custom_profile_path") && doc.contains_key("profiles_directory") {
        problems.push(
            "profiles_directory",
            "custom_profile_path and profiles_directory name the same setting; keep one",
        );
    }

    // 2. Disks.
    match doc.get("disks") {
        None => problems.push(
            "disks",
            "Missing required field: disks[]. Artifact Manifest v1 requires at least one disk.",
        ),
        Some(Value::Array(disks)) if disks.is_empty() => {
            problems.push("disks", "Field 'disks' must contain at least one disk")
        }
        Some(Value::Array(disks)) => validate_disks(disks, dir, problems),
        Some(_) => problems.push("disks", "Field 'disks' must be an array"),
    }

    // 3. VM.
    if let Some(vm) = doc.get("vm") {
        validate_vm(vm, problems);
    }

    // 4. Everything else.
    schema::check_object(
        "",
        doc,
        schema::TOP_LEVEL,
        &["manifest_version", "disks", "vm", "hooks"],
        problems,
    );
    // Hooks: structure, templates and script files, so a bad hook stops the run before any disk
    // is touched.
    crate::hooks::spec::parse(doc.get("hooks"), Some(dir), problems);
    if let Some(Value::Object(source)) = doc.get("source") {
        for key in schema::SOURCE_STRINGS {
            if let Some(v) = source.get(*key)
                && !v.is_string()
                && !v.is_null()
            {
                schema::check_value(&format!("source.{key}"), v, &schema::Kind::Str, problems);
            }
        }
    }
    crate::mapping::check_disk_mapping_ids(doc, problems);
    check_preserve_uuid(doc, problems);
    if let Some(Value::Array(nics)) = doc.get("nics") {
        crate::mapping::check_nics(nics, problems);
    }
    if let Some(Value::Array(nics)) = doc.get("nics") {
        for (i, nic) in nics.iter().enumerate() {
            if let Some(mac) = nic.get("mac").and_then(Value::as_str)
                && !is_mac(mac)
            {
                problems.push(
                    &format!("nics[{i}].mac"),
                    format!(
                        "nics[{i}].mac must be a MAC address like 00:50:56:aa:bb:cc (got: '{mac}')"
                    ),
                );
            }
        }
    }
    if let Some(disks) = doc.get("disks").and_then(Value::as_array)
        && disks.len() > 1
        && doc
            .get("output")
            .and_then(|o| o.get("filename"))
            .is_some_and(|f| !f.is_null())
    {
        problems.push(
            "output.filename",
            "output.filename names one output file, but the manifest has several disks; \
             remove it (outputs are named <disk id>.<format>)",
        );
    }
}

/// `domain.preserve_uuid` needs a UUID to preserve.
fn check_preserve_uuid(doc: &Map<String, Value>, problems: &mut Problems) {
    let wanted = doc
        .get("domain")
        .and_then(|d| d.get("preserve_uuid"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !wanted {
        return;
    }
    match doc.get("source").and_then(|s| s.get("uuid")) {
        None | Some(Value::Null) => problems.push(
            "domain.preserve_uuid",
            "domain.preserve_uuid is true but source.uuid is not set; add the source VM's UUID \
             as source.uuid, or remove domain.preserve_uuid",
        ),
        Some(u) if u.as_str().and_then(crate::libvirt::parse_uuid).is_none() => problems.push(
            "source.uuid",
            format!(
                "source.uuid must be a UUID like 6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab (got {u})"
            ),
        ),
        Some(_) => {}
    }
}

fn validate_disks(disks: &[Value], dir: &Path, problems: &mut Problems) {
    let mut seen_ids = HashSet::new();
    for (i, disk) in disks.iter().enumerate() {
        let p = |field: &str| format!("disks[{i}].{field}");
        let Some(d) = disk.as_object() else {
            problems.push(
                &format!("disks[{i}]"),
                format!("disks[{i}] must be an object"),
            );
            continue;
        };
        for field in ["id", "source_format", "bytes", "local_path"] {
            if !d.contains_key(field) {
                problems.push(&p(field), format!("disks[{i}].{field} is required"));
            }
        }
        if let Some(id) = d.get("id") {
            match id.as_str() {
                Some(id) => {
                    if !seen_ids.insert(id.to_owned()) {
                        problems.push(&p("id"), format!("Duplicate disk ID: {id}"));
                    } else if !is_id(id) {
                        problems.push(
                            &p("id"),
                            format!(
                                "disks[{i}].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: '{id}')"
                            ),
                        );
                    }
                }
                None => problems.push(
                    &p("id"),
                    format!("disks[{i}].id must match pattern: ^[a-zA-Z0-9_-]+$ (got: {id})"),
                ),
            }
        }
        if let Some(fmt) = d.get("source_format") {
            match fmt.as_str() {
                Some(s) if SourceFormat::NAMES.contains(&s) => {}
                _ => {
                    let shown = fmt
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| fmt.to_string());
                    let hint = fmt
                        .as_str()
                        .and_then(|s| crate::diag::suggest(s, SourceFormat::NAMES))
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    problems.push(
                        &p("source_format"),
                        format!(
                            "disks[{i}].source_format unsupported: {shown}. Supported: {}{hint}",
                            py_list(SourceFormat::NAMES)
                        ),
                    );
                }
            }
        }
        if let Some(bytes) = d.get("bytes")
            && bytes.as_u64().is_none()
        {
            problems.push(
                &p("bytes"),
                format!("disks[{i}].bytes must be a non-negative integer (got: {bytes})"),
            );
        }
        if let Some(lp) = d.get("local_path") {
            match lp.as_str() {
                Some(s) => {
                    let resolved = config::resolve_relative(dir, s);
                    match std::fs::metadata(&resolved) {
                        Err(_) => problems.push(
                            &p("local_path"),
                            format!("disks[{i}].local_path not found: {}", resolved.display()),
                        ),
                        Ok(m) if m.is_dir() => problems.push(
                            &p("local_path"),
                            format!(
                                "disks[{i}].local_path is a directory, expected a disk image file: {}",
                                resolved.display()
                            ),
                        ),
                        Ok(_) => {}
                    }
                }
                None => problems.push(
                    &p("local_path"),
                    format!(
                        "disks[{i}].local_path must be a string path (got {})",
                        kind_of(lp)
                    ),
                ),
            }
        }
        if let Some(sum) = d.get("checksum") {
            let ok = sum.as_str().is_some_and(is_sha256_checksum);
            if !ok {
                let shown = sum
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| sum.to_string());
                problems.push(
                    &p("checksum"),
                    format!(
                        "disks[{i}].checksum must match format: sha256:<hexdigest> (got: '{shown}')"
                    ),
                );
            }
        }
        if let Some(h) = d.get("boot_order_hint")
            && h.as_u64().is_none_or(|n| n > u64::from(u32::MAX))
        {
            problems.push(
                &p("boot_order_hint"),
                format!("disks[{i}].boot_order_hint must be a non-negative integer"),
            );
        }
        if let Some(l) = d.get("label")
            && !l.is_string()
        {
            schema::check_value(&p("label"), l, &schema::Kind::Str, problems);
        }
        if let Some(t) = d.get("disk_type")
            && !t.as_str().is_some_and(|s| DiskType::NAMES.contains(&s))
        {
            problems.push(
                &p("disk_type"),
                format!(
                    "disks[{i}].disk_type must be one of: {}",
                    DiskType::NAMES.join(", ")
                ),
            );
        }
        problems.unknown_keys(&format!("disks[{i}]"), d, DISK_KEYS);
    }
}

fn validate_vm(vm: &Value, problems: &mut Problems) {
    let Some(vm) = vm.as_object() else {
        problems.push("vm", "Field 'vm' must be an object");
        return;
    };
    if let Some(fw) = vm.get("firmware")
        && !fw.as_str().is_some_and(|s| Firmware::NAMES.contains(&s))
    {
        let shown = fw
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| fw.to_string());
        problems.push(
            "vm.firmware",
            format!(
                "vm.firmware must be one of: {} (got: '{shown}')",
                Firmware::NAMES.join(", ")
            ),
        );
    }
    if let Some(sb) = vm.get("secureboot")
        && !sb.is_boolean()
    {
        problems.push("vm.secureboot", "vm.secureboot must be a boolean");
    }
    for key in ["cpu", "mem_gb"] {
        if let Some(v) = vm.get(key)
            && !v
                .as_u64()
                .is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX))
        {
            problems.push(
                &format!("vm.{key}"),
                format!("vm.{key} must be an integer >= 1"),
            );
        }
    }
    for key in ["os_hint", "os_version"] {
        if let Some(v) = vm.get(key)
            && !v.is_string()
            && !v.is_null()
        {
            schema::check_value(&format!("vm.{key}"), v, &schema::Kind::Str, problems);
        }
    }
    problems.unknown_keys("vm", vm, VM_KEYS);
}

/// Formats a list the way upstream's Python messages do: `['a', 'b']`.
fn py_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `^[a-zA-Z0-9_-]+$`
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^sha256:[a-f0-9]{64}$`
pub fn is_sha256_checksum(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$`
pub fn is_mac(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':' || *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests;
