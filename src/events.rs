//! What workers tell the display while a VM runs. Workers never print: they send [`Event`]s
//! into an [`EventSink`], and one display thread (`ui`) owns the terminal. Results are return
//! values, never events.

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
    },
    StepStarted {
        vm: String,
        step: Step,
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
    },
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
