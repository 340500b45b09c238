//! The per-VM pipeline: load_manifest (checksums) → inspect → fix → convert → validate →
//! domain_xml, with hooks fired around them (pre/post_extraction around load_manifest,
//! pre/post_fix around fix, pre/post_convert around convert, post_validate after validate; a
//! hook stage fires only when its pipeline stage runs).
//!
//! [`run_vm`] executes a [`VmPlan`] and returns a [`VmOutcome`]: what each stage did (a typed
//! [`StageResult`]), the commands it ran, the artifacts it produced, each hook's outcome,
//! warnings and errors. It never prints; progress goes out as [`Event`]s and the outcome is a
//! return value.
//!
//! This file is the orchestration: which stages run, in which order, with which hooks, and how
//! a failure ends the VM. Each stage lives in its own file and is a function from the run's
//! state to its result; what several stages share has its own file too: what qemu-img says
//! about a source ([`source`]), checksums verified beside convert ([`checksums`]), and the
//! libguestfs appliance ([`guest`]).
//!
//! Outputs are written to `<name>.part` and renamed only after qemu-img succeeded; a failed or
//! interrupted conversion removes its `.part` file. Sources are opened read-only, except by the
//! fix stage with convert off, which repairs them in place (after a backup when asked).

mod checksums;
mod convert;
mod domain;
mod fix;
mod guest;
mod inspect;
mod libvirt;
mod load;
mod source;
mod space;
mod stall;
mod validate;

use std::path::PathBuf;
use std::time::Instant;

use crate::diag::error_chain;
use crate::events::{Event, EventSink, Failure, VmStatus};
use crate::exec::{self, CancelToken, CommandRecord, Status, Watch};
use crate::hooks::{self, HookOutcome};
use crate::outcome::{Artifact, Message, StageOutcome, StageResult, VmOutcome};
use crate::plan::{FixMode, FixPlan, VmPlan};
use crate::stage::{HookStage, Origin, Stage, Step};
use crate::units::seconds_since;

/// The log target of what a run records for the log file (stage starts and ends, warnings,
/// each VM's outcome); stderr shows it only with `-v`, as the display already says it.
pub const RECORD: &str = "hyper2kvm::record";

pub use fix::preview_fix;
pub use space::SpaceLedger;

/// What a stage function hands back when it fails.
struct StageFailure {
    message: String,
    interrupted: bool,
    /// What the stage found before it failed (a failed boot test's console), for the report;
    /// boxed, as it is rare and large.
    result: Option<Box<StageResult>>,
    /// The stage the failure belongs to, when it is not the one running: a checksum verified
    /// alongside convert fails `load_manifest`.
    stage: Option<Stage>,
}

impl StageFailure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            interrupted: false,
            result: None,
            stage: None,
        }
    }

    fn interrupted() -> Self {
        Self {
            message: "interrupted".to_owned(),
            interrupted: true,
            result: None,
            stage: None,
        }
    }
}

/// Mutable state of one VM's run.
struct Run<'a> {
    plan: &'a VmPlan,
    cancel: &'a CancelToken,
    events: &'a EventSink,
    /// What the VMs running beside this one were promised (see [`space`]).
    space: &'a SpaceLedger,
    warnings: Vec<Message>,
    /// The commands of the stage running now.
    commands: Vec<CommandRecord>,
    facts: Vec<Option<source::SourceFacts>>,
    /// Whether qemu-img can read through io_uring here; learnt by the first format probe that
    /// tries it (see [`crate::tools::qemu_img::Aio`]).
    io_uring: Option<bool>,
    /// Per disk, the qcow2 overlay holding guest repairs, when fix wrote one.
    overlays: Vec<Option<PathBuf>>,
    artifacts: Vec<Artifact>,
    bytes_read: u64,
    bytes_written: u64,
    hooks: Vec<HookOutcome>,
    checksums: checksums::Checksums,
    /// The step running now, which sub-steps belong to.
    step: Step,
}

impl<'a> Run<'a> {
    fn new(
        plan: &'a VmPlan,
        cancel: &'a CancelToken,
        events: &'a EventSink,
        space: &'a SpaceLedger,
    ) -> Self {
        Run {
            plan,
            cancel,
            events,
            space,
            warnings: Vec::new(),
            commands: Vec::new(),
            facts: vec![None; plan.disks.len()],
            io_uring: None,
            overlays: vec![None; plan.disks.len()],
            step: Step::Stage(Stage::Load),
            artifacts: Vec::new(),
            bytes_read: 0,
            bytes_written: 0,
            hooks: Vec::new(),
            checksums: checksums::Checksums::default(),
        }
    }
}

/// Whether `stage` is planned for this VM (load_manifest always is).
fn planned(plan: &VmPlan, stage: Stage) -> bool {
    match stage {
        Stage::Load => true,
        Stage::Inspect => plan.inspect.is_some(),
        Stage::Fix => plan.fix.is_some(),
        Stage::Convert => plan.convert.is_some(),
        Stage::Validate => plan.validate.is_some(),
        Stage::Domain => plan.domain.is_some(),
        Stage::Libvirt => plan.libvirt.is_some() && plan.domain.is_some(),
    }
}

/// Runs one stage's function.
fn run_stage(stage: Stage, run: &mut Run<'_>) -> Result<StageResult, StageFailure> {
    match stage {
        Stage::Load => load::run(run).map(StageResult::Load),
        Stage::Inspect => inspect::run(run).map(StageResult::Inspect),
        Stage::Fix => fix::run(run).map(StageResult::Fix),
        Stage::Convert => convert::run(run).map(StageResult::Convert),
        Stage::Validate => validate::run(run).map(StageResult::Validate),
        Stage::Domain => domain::run(run).map(StageResult::Domain),
        Stage::Libvirt => libvirt::run(run).map(StageResult::Libvirt),
    }
}

/// Runs every planned stage of one VM. `space` is shared by the VMs that run at the same time
/// (a batch's), so their outputs add up in the free-space check.
pub fn run_vm(
    plan: &VmPlan,
    cancel: &CancelToken,
    events: &EventSink,
    space: &SpaceLedger,
) -> VmOutcome {
    let started_at = crate::clock::now_local();
    let started = Instant::now();
    events.send(Event::VmStarted {
        vm: plan.vm_id.clone(),
        disks: plan
            .disks
            .iter()
            .map(|d| (d.id.clone(), d.expected_bytes))
            .collect(),
    });
    let _vm_span = tracing::info_span!("vm", id = %plan.vm_id).entered();
    tracing::info!(target: RECORD, "started");
    if plan.runs_no_stage() {
        // Shown whatever the progress display, not only in the report.
        tracing::warn!("{}: {}", plan.vm_id, crate::plan::NO_STAGE);
    }
    let mut run = Run::new(plan, cancel, events, space);
    run.warnings = plan
        .notes
        .iter()
        .map(|n| Message::now(Origin::Plan, n.clone()))
        .collect();
    let mut stages: Vec<StageOutcome> = Vec::new();
    let mut errors = Vec::new();
    let mut status = VmStatus::Succeeded;

    for &stage in Stage::ALL {
        if !planned(plan, stage) {
            continue;
        }
        if cancel.is_cancelled() {
            status = VmStatus::Interrupted;
            errors.push(Message::now(stage, "interrupted before this stage started"));
            break;
        }
        let (hooks_before, hooks_after) = stage.hooks();
        if let Some(h) = hooks_before
            && let Err(failure) = run.fire_hooks(h)
        {
            errors.push(Message::now(h, failure.message.clone()));
            status = failed_status(&failure, cancel);
            break;
        }
        events.send(Event::StepStarted {
            vm: plan.vm_id.clone(),
            step: Step::Stage(stage),
        });
        let stage_span = tracing::info_span!("stage", name = %stage.name()).entered();
        tracing::info!(target: RECORD, "started");
        run.step = Step::Stage(stage);
        let t = Instant::now();
        let start_offset = crate::units::seconds(t.duration_since(started));
        let result = run_stage(stage, &mut run);
        let duration = seconds_since(t);
        let commands = std::mem::take(&mut run.commands);
        match &result {
            Ok(_) => tracing::info!(target: RECORD, "finished in {duration:.1} s"),
            Err(f) => tracing::info!(target: RECORD, "failed after {duration:.1} s: {}", f.message),
        }
        drop(stage_span);
        events.send(Event::StepFinished {
            vm: plan.vm_id.clone(),
            step: Step::Stage(stage),
            success: result.is_ok(),
        });
        match result {
            Ok(result) => stages.push(StageOutcome {
                stage,
                success: true,
                start_offset,
                duration,
                result: Some(result),
                error: None,
                commands,
            }),
            Err(failure) => {
                errors.push(Message::now(
                    failure.stage.unwrap_or(stage),
                    failure.message.clone(),
                ));
                status = failed_status(&failure, cancel);
                stages.push(StageOutcome {
                    stage,
                    success: false,
                    start_offset,
                    duration,
                    result: failure.result.map(|r| *r),
                    error: Some(failure.message),
                    commands,
                });
                break;
            }
        }
        if let Some(h) = hooks_after
            && let Err(failure) = run.fire_hooks(h)
        {
            errors.push(Message::now(h, failure.message.clone()));
            status = failed_status(&failure, cancel);
            break;
        }
    }

    checksums::record(&mut run, &mut stages, &mut errors, &mut status);
    remove_work_dir(&mut run);
    // What this VM wrote is on the filesystem now, or was removed.
    space.release(&plan.vm_id);
    let outcome = VmOutcome {
        vm_id: plan.vm_id.clone(),
        status,
        started_at,
        duration_seconds: seconds_since(started),
        stages,
        artifacts: run.artifacts,
        warnings: run.warnings,
        errors,
        bytes_read: run.bytes_read,
        bytes_written: run.bytes_written,
        hooks: run.hooks,
    };
    let failure = outcome.errors.first().map(|e| Failure {
        stage: e.stage.name().to_owned(),
        message: e.message.clone(),
    });
    match &failure {
        None => tracing::info!(
            target: RECORD,
            "{} in {:.1} s",
            outcome.status.name(),
            outcome.duration_seconds
        ),
        Some(f) => tracing::info!(
            target: RECORD,
            "{} in {}: {}",
            outcome.status.name(),
            f.stage,
            f.message
        ),
    }
    events.send(Event::VmFinished {
        vm: plan.vm_id.clone(),
        status: outcome.status,
        failure: (outcome.status != VmStatus::Succeeded)
            .then_some(failure)
            .flatten(),
        report: plan.report_path.clone(),
    });
    outcome
}

/// Overlays are scratch space: the output (or the source, for in-place repairs) holds the
/// result, so they go whatever happened.
fn remove_work_dir(run: &mut Run<'_>) {
    if let Some(FixPlan {
        mode: FixMode::Overlay { work_dir },
        ..
    }) = &run.plan.fix
        && work_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(work_dir)
    {
        let text = format!(
            "could not remove the work directory {}: {e}",
            work_dir.display()
        );
        run.warnings.push(Message::now(Stage::Fix, text));
    }
}

fn failed_status(failure: &StageFailure, cancel: &CancelToken) -> VmStatus {
    if failure.interrupted || cancel.is_cancelled() {
        VmStatus::Interrupted
    } else {
        VmStatus::Failed
    }
}

impl Run<'_> {
    /// Runs the hooks of one hook stage; a failure (without `continue_on_error`) stops the VM.
    fn fire_hooks(&mut self, stage: HookStage) -> Result<(), StageFailure> {
        if !self.plan.hooks.has(stage) {
            return Ok(());
        }
        self.events.send(Event::StepStarted {
            vm: self.plan.vm_id.clone(),
            step: Step::Hooks(stage),
        });
        let _span = tracing::info_span!("stage", name = %stage.name()).entered();
        tracing::info!(target: RECORD, "hooks started");
        let step = std::mem::replace(&mut self.step, Step::Hooks(stage));
        let ran = hooks::run_stage(&self.plan.hooks, stage, self.cancel);
        self.step = step;
        self.events.send(Event::StepFinished {
            vm: self.plan.vm_id.clone(),
            step: Step::Hooks(stage),
            success: ran.failure.is_none() && ran.warnings.is_empty(),
        });
        self.hooks.extend(ran.outcomes);
        for w in ran.warnings {
            self.warn(stage, w);
        }
        match ran.failure {
            None => Ok(()),
            Some(f) => Err(StageFailure {
                message: f.message,
                interrupted: f.interrupted,
                result: None,
                stage: None,
            }),
        }
    }

    /// Tells the display what the running step is doing now.
    fn substep(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::debug!("{text}");
        self.events.send(Event::Substep {
            vm: self.plan.vm_id.clone(),
            step: self.step,
            text,
        });
    }

    /// A warning: shown now, and in the report.
    fn warn(&mut self, origin: impl Into<Origin>, text: String) {
        let origin = origin.into();
        tracing::info!(target: RECORD, "warning: {text}");
        self.events.send(Event::Warning {
            vm: self.plan.vm_id.clone(),
            origin: origin.name(),
            message: text.clone(),
        });
        self.warnings.push(Message::now(origin, text));
    }

    /// Runs a command, records it, and turns "could not start" or cancellation into failures.
    fn exec(
        &mut self,
        cmd: &exec::Command,
        on_line: Option<&mut dyn FnMut(&str)>,
    ) -> Result<exec::Output, StageFailure> {
        self.substep(cmd.brief());
        let out = exec::run(
            cmd,
            Watch {
                cancel: Some(self.cancel),
                on_stdout_line: on_line,
            },
        )
        .map_err(|e| StageFailure::new(error_chain(&e)))?;
        let mut out = out;
        if out.record.status == Status::TimedOut && cmd.program() == self.plan.qemu_img.path() {
            let note = self.plan.qemu_img.limits().timed_out_note(&out.record.argv);
            let tail = &mut out.record.stderr_tail;
            if !tail.is_empty() && !tail.ends_with('\n') {
                tail.push('\n');
            }
            tail.push_str(&note);
        }
        self.commands.push(out.record.clone());
        if out.record.status == Status::Cancelled {
            return Err(StageFailure::interrupted());
        }
        Ok(out)
    }
}
