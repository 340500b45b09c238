//! One typed result per pipeline stage. Field order is the order `report.json` shows them in
//! (`pipeline.stages.<name>.result`); a field that is sometimes absent is an `Option` skipped
//! when unset, while one that is `null` when unknown is an `Option` always written.

use std::path::PathBuf;

use serde::Serialize;

use crate::boot_test::BootTestOutcome;
use crate::guest::inspect::GuestInfo;
use crate::guest::repair::RepairOutcome;
use crate::libvirt::domain::{DomainDisk, FirmwarePlan, UuidOrigin};
use crate::manifest::{Firmware, OutputFormat, SourceFormat};
use crate::mapping::InterfacePlan;
use crate::tools::qemu_img::Compression;

/// What a stage returns when it succeeds (or what it found before it failed).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum StageResult {
    Load(LoadResult),
    Inspect(InspectResult),
    Fix(FixResult),
    Convert(ConvertResult),
    Validate(ValidateResult),
    Domain(DomainResult),
    Libvirt(LibvirtResult),
}

/// `load_manifest`: the manifest's facts and the checksums verified.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    pub manifest_version: String,
    pub manifest_path: PathBuf,
    pub source_provider: Option<String>,
    pub source_vm_id: Option<String>,
    pub source_vm_name: String,
    pub disks_count: usize,
    pub firmware: Firmware,
    pub os_hint: Option<String>,
    /// The profile the manifest names (the first of its `extends` chain).
    pub profile: Option<String>,
    pub checksums_verified: bool,
    pub verified_checksums: Vec<VerifiedChecksum>,
    /// Set when the checksums were verified while inspect and convert ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksums_verified_during_convert: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_seconds: Option<f64>,
    /// The free-space check: one entry per filesystem that receives outputs (none when nothing
    /// is converted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_space: Vec<OutputSpace>,
}

/// What one filesystem must hold of a VM's outputs, and what it had free when the VM started.
#[derive(Clone, Debug, Serialize)]
pub struct OutputSpace {
    /// The top of the filesystem (its mount point, as far as the path shows it).
    pub filesystem: PathBuf,
    /// The output directories on it.
    pub directories: Vec<PathBuf>,
    pub disks: Vec<String>,
    /// The sum of `qemu-img measure`'s `required` for these disks' outputs.
    pub required_bytes: u64,
    /// `statvfs`: `f_bavail * f_frsize`.
    pub free_bytes: u64,
    /// Of the free bytes, what other VMs of the batch converting to this filesystem at the
    /// same time have still to write.
    pub promised_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifiedChecksum {
    pub disk_id: String,
    pub checksum: String,
}

/// A check that ran, failed or was not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Passed,
    Failed,
    Skipped,
}

/// `inspect`: each source disk as qemu-img sees it, and the guest as libguestfs sees it.
#[derive(Clone, Debug, Serialize)]
pub struct InspectResult {
    pub disks: Vec<InspectedDisk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestInfo>,
    /// Why the guest could not be inspected (a warning, not a failure, without fix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_inspection_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectedDisk {
    pub id: String,
    pub source_format: SourceFormat,
    pub detected_format: Option<&'static str>,
    pub expected_bytes: u64,
    pub actual_bytes: u64,
    pub size_match: bool,
    pub size_human: String,
    pub virtual_size: u64,
    pub vmdk_create_type: Option<String>,
    pub path: PathBuf,
    pub integrity_check: Check,
}

/// Where the fix stage wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixModeName {
    Overlay,
    InPlace,
}

/// `fix`: what the repair changed in the guest, and where it wrote.
#[derive(Clone, Debug, Serialize)]
pub struct FixResult {
    #[serde(flatten)]
    pub repair: RepairOutcome,
    pub mode: FixModeName,
    /// In place: the whole copies of the source files made before they were written (empty
    /// when the admin opted out of them); absent with overlays, which leave the sources alone.
    /// Boxed: it keeps [`StageResult`]'s variants close in size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_backups: Option<Box<Vec<DiskBackup>>>,
}

/// How a whole-disk backup was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupMethod {
    /// A copy-on-write clone (`cp --reflink=always`): instant, no room taken until blocks differ.
    Reflink,
    /// A sparse byte copy (`cp --sparse=always`), where the filesystem cannot clone.
    Copy,
}

/// One source file copied whole before an in-place repair.
#[derive(Clone, Debug, Serialize)]
pub struct DiskBackup {
    pub disk_id: String,
    pub source: PathBuf,
    pub backup: PathBuf,
    pub method: BackupMethod,
    pub size_bytes: u64,
}

/// `convert`: the outputs written.
#[derive(Clone, Debug, Serialize)]
pub struct ConvertResult {
    pub disks_converted: usize,
    pub output_format: OutputFormat,
    pub output_directory: PathBuf,
    pub compressed: bool,
    pub compression: Option<Compression>,
    pub converted_disks: Vec<ConvertedDisk>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConvertedDisk {
    pub disk_id: String,
    pub input_format: Option<&'static str>,
    pub output_format: OutputFormat,
    pub output_path: PathBuf,
    pub output_size_bytes: u64,
    pub output_size_human: String,
    pub boot_order_hint: u32,
}

/// How an output's content compared with what was converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentCheck {
    Identical,
    Different,
    /// The comparison itself failed.
    Error,
    Skipped,
}

/// `validate`: every output checked, and the boot test when it ran.
#[derive(Clone, Debug, Serialize)]
pub struct ValidateResult {
    pub disks_validated: usize,
    pub all_passed: bool,
    pub validation_results: Vec<ValidatedDisk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_test: Option<BootTestOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ValidatedDisk {
    pub disk_id: String,
    pub output_path: PathBuf,
    pub exists: bool,
    pub integrity_check: Check,
    pub content_check: ContentCheck,
}

/// `domain_xml`: the libvirt domain written for the converted VM.
#[derive(Clone, Debug, Serialize)]
pub struct DomainResult {
    pub path: PathBuf,
    pub name: String,
    pub uuid: String,
    pub uuid_origin: UuidOrigin,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub firmware: FirmwarePlan,
    pub disks: Vec<DomainDisk>,
    pub interfaces: Vec<InterfacePlan>,
    /// The command that defines it on a libvirt host.
    pub define_with: String,
}

/// `libvirt_integration`: what this run did on the libvirt host, and what it undid.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LibvirtResult {
    pub uri: String,
    pub domain: String,
    pub uuid: String,
    /// `defined` (new), `updated` (this VM's own earlier domain replaced), `replaced` (another
    /// VM's domain replaced on request), or `not_defined` (define_domain: false).
    pub action: String,
    /// Domains this run undefined to make room, with where their definitions were saved.
    pub replaced: Vec<ReplacedDomain>,
    /// `kvm`, or `qemu` (TCG) where KVM cannot run a guest on this host.
    pub virt_type: String,
    pub virt_type_reason: String,
    /// The domain XML defined (the domain_xml file, rewritten to point at the volumes).
    pub domain_xml: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolResult>,
    pub volumes: Vec<VolumeResult>,
    pub snapshot: Option<String>,
    pub autostart: bool,
    pub started: bool,
    /// The start, proven on the serial console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<LibvirtBoot>,
    /// What a failure undid, in the order it was undone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplacedDomain {
    pub name: String,
    pub uuid: String,
    /// Its definition as it was (`virsh define` it to restore it).
    pub saved_xml: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolResult {
    pub name: String,
    pub path: PathBuf,
    /// Defined, built and started by this run.
    pub created: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct VolumeResult {
    pub disk_id: String,
    pub name: String,
    pub path: PathBuf,
    /// `copied` or `moved`.
    pub how: String,
    /// An existing volume of that name was replaced.
    pub replaced: bool,
}

/// The boot under libvirt, read from the domain's serial console.
#[derive(Clone, Debug, Serialize)]
pub struct LibvirtBoot {
    pub result: crate::boot_test::BootResult,
    pub reason: crate::boot_test::Reason,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_line: Option<String>,
    pub seconds: f64,
    pub timeout_seconds: u64,
    pub console: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_log: Option<PathBuf>,
    pub console_tail: Vec<String>,
}
