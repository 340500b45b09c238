//! What workers tell the display while a VM runs. Workers never print: they send [`Event`]s
//! into an [`EventSink`], and one display thread (`ui`) owns the terminal. Results are return
//! values, never events.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

use serde::Serialize;

use crate::stage::Step;

/// How a VM's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    Succeeded,
    Failed,
    Interrupted,
}

impl VmStatus {
    pub fn name(self) -> &'static str {
        match self {
            VmStatus::Succeeded => "succeeded",
            VmStatus::Failed => "failed",
            VmStatus::Interrupted => "interrupted",
        }
    }
}

/// What is moving bytes on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Checksum,
    Convert,
}

impl Activity {
    pub fn name(self) -> &'static str {
        match self {
            Activity::Checksum => "checksum",
            Activity::Convert => "convert",
        }
    }
}

/// Something a worker wants the user to see.
#[derive(Clone, Debug)]
pub enum Event {
    VmStarted {
        vm: String,
        /// Each disk's id and source bytes, in manifest order: bars say "disk 2/3 <id>", and the
        /// batch's estimate counts bytes.
        disks: Vec<(String, u64)>,
    },
    StepStarted {
        vm: String,
        step: Step,
    },
    /// What a step is doing now ("update-initramfs -u -k 6.1.0-50", "qemu-img check web01"),
    /// for the steps that are not a byte copy.
    Substep {
        vm: String,
        step: Step,
        text: String,
    },
    StepFinished {
        vm: String,
        step: Step,
        success: bool,
    },
    /// Bytes of one disk processed so far by an activity.
    Progress {
        vm: String,
        disk: String,
        activity: Activity,
        done: u64,
        total: u64,
    },
    Warning {
        vm: String,
        /// The stage or hook stage it belongs to (`stage` in reports).
        origin: &'static str,
        message: String,
    },
    /// The fix stage changed this many things in the guest.
    GuestChanges {
        vm: String,
        changes: usize,
    },
    VmFinished {
        vm: String,
        status: VmStatus,
        /// Why it did not succeed: the stage it stopped in and the first error.
        failure: Option<Failure>,
        /// Where its report is written (after this event), when it writes one.
        report: Option<PathBuf>,
    },
}

/// Where and why a VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// A stage or hook stage name (`plan` when nothing ran).
    pub stage: String,
    pub message: String,
}

impl Failure {
    /// The stable code events carry for it: `<stage>_failed`, or `interrupted`.
    pub fn code(&self, status: VmStatus) -> String {
        match status {
            VmStatus::Interrupted => "interrupted".to_owned(),
            _ => format!("{}_failed", self.stage),
        }
    }
}

/// Where workers send events; cheap to clone, safe to share across threads.
#[derive(Clone, Debug, Default)]
pub struct EventSink(Option<Sender<Event>>);

impl EventSink {
    /// A sink and the receiving end the display reads.
    pub fn channel() -> (Self, Receiver<Event>) {
        let (tx, rx) = channel();
        (Self(Some(tx)), rx)
    }

    /// A sink that drops everything (tests, `--progress none`).
    pub fn discard() -> Self {
        Self(None)
    }

    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}
