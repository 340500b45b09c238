//! What happened: the typed outcomes the pipeline and the batch runner return, which the report
//! writers serialize as they are. These types are the report schema: `report.json` and
//! `batch_report.json` are these structs, field by field, and nothing reads them back by key.
//!
//! [`VmOutcome`] is one VM's run: every stage that ran ([`StageOutcome`], with its typed
//! [`StageResult`]), the artifacts, warnings, errors and hook outcomes. A batch's outcome is
//! `report::batch::BatchOutcome`, whose per-VM lines embed these VMs' reports.

pub mod stages;

use std::path::PathBuf;

use serde::Serialize;

pub use crate::events::VmStatus;
use crate::exec::CommandRecord;
use crate::hooks::HookOutcome;
use crate::stage::{Origin, Stage};
pub use stages::StageResult;

/// One stage as it happened.
#[derive(Clone, Debug)]
pub struct StageOutcome {
    pub stage: Stage,
    pub success: bool,
    /// Seconds from the VM's start to this stage's, to the millisecond, on a monotonic clock:
    /// where the stage sits on the VM's timeline (hooks run in the gaps between stages).
    pub start_offset: f64,
    /// Seconds, to the millisecond.
    pub duration: f64,
    /// What the stage found or did; a failed stage may carry what it found before it failed
    /// (a failed boot test's console).
    pub result: Option<StageResult>,
    pub error: Option<String>,
    pub commands: Vec<CommandRecord>,
}

/// What a run produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    ConvertedDisk,
    LibvirtDomain,
}

impl ArtifactKind {
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::ConvertedDisk => "converted_disk",
            ArtifactKind::LibvirtDomain => "libvirt_domain",
        }
    }
}

/// A file the run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    #[serde(rename = "type")]
    pub kind: ArtifactKind,
    pub path: PathBuf,
    /// Empty for files that belong to no disk.
    pub disk_id: String,
    pub format: String,
    pub size_bytes: u64,
    pub size_human: String,
    pub boot_order_hint: u32,
    pub compressed: bool,
}

/// A warning or error, attributed to the part of the run that raised it.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub stage: Origin,
    pub message: String,
    pub timestamp: String,
}

impl Message {
    pub fn now(origin: impl Into<Origin>, text: impl Into<String>) -> Self {
        Self {
            stage: origin.into(),
            message: text.into(),
            timestamp: crate::clock::now_local(),
        }
    }
}

/// One VM's run.
#[derive(Clone, Debug)]
pub struct VmOutcome {
    pub vm_id: String,
    pub status: VmStatus,
    pub started_at: String,
    pub duration_seconds: f64,
    pub stages: Vec<StageOutcome>,
    pub artifacts: Vec<Artifact>,
    pub warnings: Vec<Message>,
    pub errors: Vec<Message>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Every hook that ran, in the order it ran.
    pub hooks: Vec<HookOutcome>,
}

impl VmOutcome {
    pub fn succeeded(&self) -> bool {
        self.status == VmStatus::Succeeded
    }

    /// The outcome of `stage`, when it ran.
    pub fn stage(&self, stage: Stage) -> Option<&StageOutcome> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// The result of the fix stage, when it ran and produced one.
    pub fn fix_result(&self) -> Option<&stages::FixResult> {
        match self.stage(Stage::Fix)?.result.as_ref()? {
            StageResult::Fix(r) => Some(r),
            _ => None,
        }
    }

    /// The result of the libvirt_integration stage (also a failed one's).
    pub fn libvirt_result(&self) -> Option<&stages::LibvirtResult> {
        match self.stage(Stage::Libvirt)?.result.as_ref()? {
            StageResult::Libvirt(r) => Some(r),
            _ => None,
        }
    }

    /// The result of the validate stage (also a failed one's, which may hold a boot test).
    pub fn validate_result(&self) -> Option<&stages::ValidateResult> {
        match self.stage(Stage::Validate)?.result.as_ref()? {
            StageResult::Validate(r) => Some(r),
            _ => None,
        }
    }
}
