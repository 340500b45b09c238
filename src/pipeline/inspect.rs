//! inspect: each source disk's format, size and soundness (qemu-img), and, with
//! `collect_guest_info`, the guest itself (libguestfs, read-only).

use super::{Run, StageFailure, guest};
use crate::diag::error_chain;
use crate::guest::inspect::{self as guest_inspect, GuestInfo, InspectError};
use crate::manifest::SourceFormat;
use crate::outcome::Message;
use crate::outcome::stages::{Check, InspectResult, InspectedDisk};
use crate::stage::Stage;
use crate::tools::guestfish::{Drive, GuestError};
use crate::units::human_bytes;

pub(super) fn run(run: &mut Run<'_>) -> Result<InspectResult, StageFailure> {
    let check = run.plan.inspect.as_ref().is_some_and(|i| i.check_source);
    let mut disks = Vec::new();
    for idx in 0..run.plan.disks.len() {
        let disk = &run.plan.disks[idx];
        let actual = match &disk.member {
            Some(m) => Ok(m.size),
            None => crate::files::disk_size(&disk.given_path),
        };
        let actual = actual.map_err(|e| {
            StageFailure::new(format!(
                "Disk artifact not found: {} ({e})",
                disk.given_path.display()
            ))
        })?;
        let size_match = actual == disk.expected_bytes;
        if !size_match {
            let text = format!(
                "disk {}: the manifest says {} bytes, {} has {} bytes",
                disk.id,
                disk.expected_bytes,
                disk.given_path.display(),
                actual
            );
            run.warn(Stage::Inspect, text);
        }
        let facts = run.source_facts(idx, check)?;
        let disk = &run.plan.disks[idx];
        disks.push(InspectedDisk {
            id: disk.id.clone(),
            source_format: disk.declared,
            detected_format: SourceFormat::from_driver(&facts.driver).map(SourceFormat::name),
            expected_bytes: disk.expected_bytes,
            actual_bytes: actual,
            size_match,
            size_human: human_bytes(actual),
            virtual_size: facts.info.virtual_size,
            vmdk_create_type: facts.info.vmdk_create_type().map(str::to_owned),
            path: disk.source.clone(),
            integrity_check: if facts.checked {
                Check::Passed
            } else {
                Check::Skipped
            },
        });
    }
    let mut result = InspectResult {
        disks,
        guest: None,
        guest_inspection_error: None,
    };
    if run.plan.inspect.as_ref().is_some_and(|i| i.guest_info) {
        // Like upstream, what the guest turns out to be is information: a guest libguestfs
        // cannot read is a warning here. But the fix stage inspects the same disks again and
        // repairs only a single operating system it can mount: when it is planned, a guest it
        // would refuse stops the VM now, before a second appliance launch.
        match inspect_guest(run) {
            Ok(info) => result.guest = Some(info),
            Err(Failed::Verdict(e)) if run.plan.fix.is_some() => {
                return Err(StageFailure::new(guest::refusal(&e)));
            }
            Err(Failed::Stage(f)) if f.interrupted => return Err(f),
            Err(failed) => {
                let message = match failed {
                    Failed::Verdict(e) => error_chain(&e),
                    Failed::Stage(f) => f.message,
                };
                run.warn(
                    Stage::Inspect,
                    format!("guest inspection failed: {message}"),
                );
                result.guest_inspection_error = Some(message);
            }
        }
    }
    Ok(result)
}

/// How looking inside the guest failed.
enum Failed {
    /// The appliance could not be used (or the run was interrupted).
    Stage(StageFailure),
    /// Inspection ran and found a guest the fix stage cannot repair (no operating system,
    /// several, or one behind encryption or an unmountable filesystem).
    Verdict(InspectError),
}

impl From<StageFailure> for Failed {
    fn from(f: StageFailure) -> Self {
        Failed::Stage(f)
    }
}

impl From<InspectError> for Failed {
    fn from(e: InspectError) -> Self {
        match e {
            InspectError::Guest(g) => {
                let interrupted = matches!(g, GuestError::Cancelled);
                Failed::Stage(guest::failure(&g, interrupted))
            }
            verdict => Failed::Verdict(verdict),
        }
    }
}

/// Looks inside the guest read-only: OS, filesystems, mount points, kernels.
fn inspect_guest(run: &mut Run<'_>) -> Result<GuestInfo, Failed> {
    let plan = run.plan;
    let env = guest::env(plan)?;
    let mut drives = Vec::new();
    // libguestfs opens files only: an archive member is added as a qcow2 overlay whose backing
    // is the member's bytes, read through qemu's raw driver and never written.
    let mut scratch: Option<tempfile::TempDir> = None;
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, false)?;
        let disk = &plan.disks[idx];
        if disk.member.is_none() {
            drives.push(Drive {
                path: disk.source.clone(),
                format: facts.driver,
                readonly: true,
            });
            continue;
        }
        let dir = match &scratch {
            Some(d) => d.path().to_owned(),
            None => {
                let d = tempfile::Builder::new()
                    .prefix("hyper2kvm-inspect-")
                    .tempdir()
                    .map_err(|e| {
                        Failed::Stage(StageFailure::new(format!(
                            "cannot create a scratch directory for the member overlays: {e}"
                        )))
                    })?;
                let p = d.path().to_owned();
                scratch = Some(d);
                p
            }
        };
        let overlay = dir.join(format!("{}.qcow2", disk.id));
        let cmd = plan
            .qemu_img
            .overlay_cmd(&overlay, disk.image(), &facts.driver);
        let out = run.exec(&cmd, None).map_err(Failed::Stage)?;
        if !out.record.success() {
            return Err(Failed::Stage(StageFailure::new(format!(
                "disk {}: could not create an overlay of {} for guest inspection: {}",
                disk.id,
                disk.shown(),
                out.record
            ))));
        }
        drives.push(Drive {
            path: overlay,
            format: "qcow2".to_owned(),
            readonly: true,
        });
    }
    let mut session = guest::launch(run, env, &drives, Stage::Inspect)?;
    let result = guest_inspect::inspect(&mut session)
        .map_err(Failed::from)
        .and_then(|mut info| {
            // Mounting read-only lists the installed kernels; an unmountable guest still has
            // the rest of its inspection data.
            if let Err(e) = guest_inspect::mount(&mut session, &mut info, true) {
                if matches!(e, InspectError::Guest(GuestError::Cancelled)) {
                    return Err(Failed::Stage(StageFailure::interrupted()));
                }
                run.warnings
                    .push(Message::now(Stage::Inspect, error_chain(&e)));
            }
            Ok(info)
        });
    let (records, finished) = session.finish();
    run.commands.extend(records);
    if let Err(e) = finished
        && result.is_ok()
    {
        let interrupted = matches!(e, GuestError::Cancelled);
        return Err(Failed::Stage(guest::failure(&e, interrupted)));
    }
    result
}
