//! Reports: built from outcomes by pure functions, then written atomically.
//!
//! `report.json` keeps upstream's layout (version, timestamp, pipeline.stages, artifacts,
//! warnings, errors, input_manifest, summary) and adds what an admin needs the morning after:
//! the VM's final status, for every stage the commands it ran with their exit status, duration
//! and stderr tail, and every hook's outcome (`hooks`, with header values redacted).

pub mod batch;

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::atomic;
use crate::hooks::HookOutcome;
use crate::pipeline::{Artifact, Message, VmOutcome, VmStatus};
use crate::plan::VmPlan;

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
    pub stages: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InputManifest {
    pub path: String,
    pub manifest_version: String,
    pub source_provider: Option<String>,
    pub source_vm_id: Option<String>,
    pub source_vm_name: String,
    pub profile: Option<String>,
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
    let mut stages = Map::new();
    for s in &outcome.stages {
        let mut entry = Map::new();
        entry.insert("success".into(), Value::Bool(s.success));
        entry.insert("duration".into(), serde_json::json!(s.duration));
        if let Some(result) = &s.result {
            entry.insert("result".into(), result.clone());
        }
        if let Some(error) = &s.error {
            entry.insert("error".into(), Value::String(error.clone()));
        }
        entry.insert(
            "commands".into(),
            serde_json::to_value(&s.commands).unwrap_or(Value::Null),
        );
        stages.insert(s.name.to_owned(), Value::Object(entry));
    }
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
            stages,
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
                .filter(|a| a.kind == "converted_disk")
                .count(),
            total_hooks: outcome.hooks.len(),
            failed_hooks: outcome.hooks.iter().filter(|h| !h.success).count(),
        },
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Writes any report as indented JSON, atomically.
pub fn write<T: Serialize>(path: &Path, report: &T) -> Result<(), atomic::WriteError> {
    atomic::write_json(path, report)
}
