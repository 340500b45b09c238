//! Reports: built from outcomes by pure functions, then written atomically.
//!
//! `report.json` keeps upstream's layout (version, timestamp, pipeline.stages, artifacts,
//! warnings, errors, input_manifest, summary) and adds what an admin needs the morning after:
//! the VM's final status, for every stage the commands it ran with their exit status, duration
//! and stderr tail, every hook's outcome (`hooks`, with header values, URL credentials and
//! query values redacted, and output kept to bounded tails), and each source disk's identity as
//! it was pinned (`input_manifest.sources`). Each stage says when it started
//! (`start_offset`, seconds from the VM's start), for the timeline of the HTML page
//! ([`html`]) written beside it.

pub mod batch;
pub mod html;
pub mod merge;

use std::path::Path;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::atomic;
use crate::events::VmStatus;
use crate::exec::CommandRecord;
use crate::hooks::HookOutcome;
use crate::outcome::{Artifact, ArtifactKind, Message, StageOutcome, StageResult, VmOutcome};
use crate::plan::VmPlan;
use crate::units::round2;

pub const REPORT_VERSION: &str = "1.0";

#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    pub version: &'static str,
    pub timestamp: String,
    pub vm_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    pub status: VmStatus,
    pub pipeline: PipelineSection,
    pub artifacts: Vec<Artifact>,
    pub warnings: Vec<Message>,
    pub errors: Vec<Message>,
    /// Every hook that ran, in order.
    pub hooks: Vec<HookOutcome>,
    pub input_manifest: InputManifest,
    pub hyper2kvm_version: &'static str,
    pub summary: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineSection {
    pub success: bool,
    pub duration_seconds: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Stage name → what it did, in the order the stages ran.
    pub stages: Stages,
}

/// `pipeline.stages`: a map keyed by stage name, in run order.
#[derive(Clone, Debug)]
pub struct Stages(pub Vec<StageOutcome>);

impl Serialize for Stages {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for stage in &self.0 {
            map.serialize_entry(stage.stage.name(), &StageEntry::from(stage))?;
        }
        map.end()
    }
}

/// One stage as `report.json` shows it.
#[derive(Serialize)]
struct StageEntry<'a> {
    success: bool,
    /// Seconds from the VM's pipeline start to this stage's start.
    start_offset: f64,
    duration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a StageResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    commands: &'a [CommandRecord],
}

impl<'a> From<&'a StageOutcome> for StageEntry<'a> {
    fn from(s: &'a StageOutcome) -> Self {
        StageEntry {
            success: s.success,
            start_offset: s.start_offset,
            duration: s.duration,
            result: s.result.as_ref(),
            error: s.error.as_deref(),
            commands: &s.commands,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InputManifest {
    pub path: String,
    pub manifest_version: String,
    pub source_provider: Option<String>,
    pub source_vm_id: Option<String>,
    pub source_vm_name: String,
    pub profile: Option<String>,
    /// Each source disk as it was pinned when the run was planned, in boot order.
    pub sources: Vec<PinnedSource>,
}

/// A source disk's identity when the run was planned; convert and validate checked that it
/// still held.
#[derive(Clone, Debug, Serialize)]
pub struct PinnedSource {
    pub disk_id: String,
    pub path: String,
    /// `file` or `block_device`.
    pub file_type: &'static str,
    pub device: u64,
    pub inode: u64,
    pub size_bytes: u64,
    /// RFC 3339 in UTC, to the nanosecond.
    pub mtime: String,
    /// The values planning read from the disk because the manifest left them out; a value
    /// the manifest wrote is not here (absent when both were written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probed: Option<ProbedValues>,
}

/// `source_format` (probed by qemu-img) and `bytes` (the file's size), each present only when
/// the manifest left it out.
#[derive(Clone, Debug, Serialize)]
pub struct ProbedValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub total_stages: usize,
    pub successful_stages: usize,
    pub failed_stages: usize,
    pub total_warnings: usize,
    pub total_errors: usize,
    pub total_artifacts: usize,
    pub input_disks: usize,
    pub output_disks: usize,
    pub total_hooks: usize,
    pub failed_hooks: usize,
}

/// Builds a VM's report from its plan and outcome.
pub fn vm_report(plan: &VmPlan, outcome: &VmOutcome) -> VmReport {
    let successful = outcome.stages.iter().filter(|s| s.success).count();
    VmReport {
        version: REPORT_VERSION,
        timestamp: outcome.started_at.clone(),
        vm_id: outcome.vm_id.clone(),
        batch_id: plan.batch_id.clone(),
        status: outcome.status,
        pipeline: PipelineSection {
            success: outcome.succeeded(),
            duration_seconds: round2(outcome.duration_seconds),
            bytes_read: outcome.bytes_read,
            bytes_written: outcome.bytes_written,
            stages: Stages(outcome.stages.clone()),
        },
        artifacts: outcome.artifacts.clone(),
        warnings: outcome.warnings.clone(),
        errors: outcome.errors.clone(),
        hooks: outcome.hooks.clone(),
        input_manifest: InputManifest {
            path: plan.manifest_path.display().to_string(),
            manifest_version: plan.manifest_version.clone(),
            source_provider: plan.source_provider.clone(),
            source_vm_id: plan.source_vm_id.clone(),
            source_vm_name: plan.vm_name.clone(),
            profile: plan.profile_chain.first().cloned(),
            sources: plan
                .disks
                .iter()
                .filter_map(|d| {
                    d.pinned.as_ref().map(|p| PinnedSource {
                        disk_id: d.id.clone(),
                        path: d.given_path.display().to_string(),
                        file_type: p.kind.name(),
                        device: p.device,
                        inode: p.inode,
                        size_bytes: p.size,
                        mtime: p.mtime(),
                        probed: (!d.probed.is_empty()).then(|| ProbedValues {
                            source_format: d
                                .probed
                                .contains(&"source_format")
                                .then(|| d.declared.name()),
                            bytes: d.probed.contains(&"bytes").then_some(d.expected_bytes),
                        }),
                    })
                })
                .collect(),
        },
        hyper2kvm_version: env!("CARGO_PKG_VERSION"),
        summary: Summary {
            total_stages: outcome.stages.len(),
            successful_stages: successful,
            failed_stages: outcome.stages.len() - successful,
            total_warnings: outcome.warnings.len(),
            total_errors: outcome.errors.len(),
            total_artifacts: outcome.artifacts.len(),
            input_disks: plan.disks.len(),
            output_disks: outcome
                .artifacts
                .iter()
                .filter(|a| a.kind == ArtifactKind::ConvertedDisk)
                .count(),
            total_hooks: outcome.hooks.len(),
            failed_hooks: outcome.hooks.iter().filter(|h| !h.success).count(),
        },
    }
}

/// Writes any report as indented JSON, atomically.
pub fn write<T: Serialize>(path: &Path, report: &T) -> Result<(), atomic::WriteError> {
    atomic::write_json(path, report)
}
