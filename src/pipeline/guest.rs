//! The libguestfs appliance as inspect and fix use it: located at plan time, launched once per
//! stage, its failures turned into stage failures, and the words for a guest fix refuses.

use super::{Run, StageFailure};
use crate::diag::error_chain;
use crate::events::Event;
use crate::guest::inspect::InspectError;
use crate::plan::VmPlan;
use crate::stage::Stage;
use crate::tools::guestfish::{Drive, GuestEnv, GuestError, Session};

/// The libguestfs environment, which the plan provides whenever a stage needs it.
pub(super) fn env(plan: &VmPlan) -> Result<&GuestEnv, StageFailure> {
    plan.guest_env
        .as_ref()
        .ok_or_else(|| StageFailure::new("internal: libguestfs was not located at plan time"))
}

/// Why the fix stage cannot repair a guest, as its inspection found it, with what to do about a
/// VM that has no operating system at all (a data disk).
pub(super) fn refusal(e: &InspectError) -> String {
    match e {
        InspectError::NoOs { encrypted } if encrypted.is_empty() => format!(
            "{e}. The fix stage repairs an installed operating system and there is none here; \
             for a data-only VM turn it off: set pipeline.fix.enabled: false in the manifest \
             (or its batch entry's overrides)"
        ),
        other => error_chain(other),
    }
}

pub(super) fn failure(e: &dyn std::error::Error, interrupted: bool) -> StageFailure {
    if interrupted {
        StageFailure::interrupted()
    } else {
        StageFailure::new(error_chain(e))
    }
}

/// Launches the appliance for `stage`; a launch that hung once and then started is a warning,
/// and a hung launch's console is kept in the output directory.
pub(super) fn launch<'a>(
    run: &mut Run<'a>,
    env: &'a GuestEnv,
    drives: &[Drive],
    stage: Stage,
) -> Result<Session<'a>, StageFailure> {
    let console_log = run
        .plan
        .output_dir
        .join(format!("appliance-console.{stage}.log"));
    run.substep("starting the libguestfs appliance");
    let mut session = Session::launch(env, drives, run.cancel, Some(&console_log))
        .map_err(|e| failure(&e, matches!(e, GuestError::Cancelled)))?;
    let (events, vm, step) = (run.events.clone(), run.plan.vm_id.clone(), run.step);
    session.observe(Box::new(move |text: String| {
        events.send(Event::Substep {
            vm: vm.clone(),
            step,
            text,
        })
    }));
    for note in session.take_notes() {
        run.warn(stage, note);
    }
    Ok(session)
}
