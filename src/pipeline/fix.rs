//! fix: offline guest repair in one appliance launch, into qcow2 overlays backed by the
//! read-only sources (convert on; convert then flattens them), or into the sources themselves
//! (convert off), after a backup copy when `fix.backup` is on. [`preview_fix`] computes the
//! same changes on a read-only view for `--dry-run`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::source::SourceFacts;
use super::{Run, StageFailure, guest};
use crate::atomic;
use crate::diag::error_chain;
use crate::events::{Event, EventSink};
use crate::exec::CancelToken;
use crate::guest::inspect::InspectError;
use crate::guest::repair::{self as guest_repair, RepairError};
use crate::outcome::stages::{FixModeName, FixResult};
use crate::plan::{FixMode, VmPlan};
use crate::stage::Stage;
use crate::tools::guestfish::{Drive, GuestError, Session};

/// Offline guest repair, into overlays (convert on) or into the sources (convert off).
pub(super) fn run(run: &mut Run<'_>) -> Result<FixResult, StageFailure> {
    let plan = run.plan;
    let fix = plan.fix.as_ref().expect("stage runs only when planned");
    let env = guest::env(plan)?;
    let mut drives = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, true)?;
        let disk = &plan.disks[idx];
        match &fix.mode {
            FixMode::Overlay { work_dir } => {
                crate::files::create_private_dir_all(work_dir).map_err(|e| {
                    StageFailure::new(format!(
                        "cannot create the work directory {}: {e}",
                        work_dir.display()
                    ))
                })?;
                let overlay = work_dir.join(format!("{}.overlay.qcow2", disk.id));
                let out = run.exec(
                    &plan
                        .qemu_img
                        .overlay_cmd(&overlay, &disk.source, &facts.driver),
                    None,
                )?;
                if !out.record.success() {
                    return Err(StageFailure::new(format!(
                        "disk {}: could not create the repair overlay: {}",
                        disk.id, out.record
                    )));
                }
                run.overlays[idx] = Some(overlay.clone());
                drives.push(Drive {
                    path: overlay,
                    format: "qcow2".to_owned(),
                    readonly: false,
                });
            }
            FixMode::InPlace { backup_dir } => {
                if facts.info.vmdk_create_type() == Some("streamOptimized") {
                    return Err(StageFailure::new(format!(
                        "disk {}: a streamOptimized VMDK cannot be modified in place; enable \
                         pipeline.convert (repairs then go into an overlay and the output)",
                        disk.id
                    )));
                }
                if let Some(dir) = backup_dir {
                    backup_disk(run, idx, dir, &facts)?;
                }
                drives.push(Drive {
                    path: disk.source.clone(),
                    format: facts.driver.clone(),
                    readonly: false,
                });
            }
        }
    }
    let mut session = guest::launch(run, env, &drives, Stage::Fix)?;
    let result = guest_repair::repair(&mut session, &fix.settings, false);
    let (records, finished) = session.finish();
    run.commands.extend(records);
    let outcome = result.map_err(|e| {
        let interrupted = matches!(
            e,
            RepairError::Guest(GuestError::Cancelled)
                | RepairError::Inspect(InspectError::Guest(GuestError::Cancelled))
        );
        guest::failure(&e, interrupted)
    })?;
    if let Err(e) = finished {
        return Err(guest::failure(&e, matches!(e, GuestError::Cancelled)));
    }
    for note in &outcome.notes {
        run.warn(Stage::Fix, note.clone());
    }
    if let Some(skipped) = &outcome.skipped {
        run.warn(Stage::Fix, skipped.clone());
    }
    run.events.send(Event::GuestChanges {
        vm: plan.vm_id.clone(),
        changes: outcome.changes.len(),
    });
    Ok(FixResult {
        repair: outcome,
        mode: match fix.mode {
            FixMode::Overlay { .. } => FixModeName::Overlay,
            FixMode::InPlace { .. } => FixModeName::InPlace,
        },
    })
}

/// What the fix stage would change, computed on a read-only view of the sources (`--dry-run`).
pub fn preview_fix(
    plan: &VmPlan,
    cancel: &CancelToken,
) -> Result<guest_repair::RepairOutcome, String> {
    let Some(fix) = &plan.fix else {
        return Err("pipeline.fix is not enabled".to_owned());
    };
    let events = EventSink::discard();
    let mut run = Run::new(plan, cancel, &events);
    let env = guest::env(plan).map_err(|f| f.message)?;
    let mut drives = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, false).map_err(|f| f.message)?;
        drives.push(Drive {
            path: plan.disks[idx].source.clone(),
            format: facts.driver,
            readonly: true,
        });
    }
    // A dry run writes nothing, so a hung launch's console is quoted only in the error.
    let mut session = Session::launch(env, &drives, cancel, None).map_err(|e| error_chain(&e))?;
    let result = guest_repair::repair(&mut session, &fix.settings, true);
    let _ = session.finish();
    result.map_err(|e| error_chain(&e))
}

/// Copies a disk (every file of a multi-file VMDK) before it is modified in place; reflinks
/// where the filesystem allows, so the copy is instant and takes no space until blocks differ.
fn backup_disk(
    run: &mut Run<'_>,
    idx: usize,
    dir: &Path,
    facts: &SourceFacts,
) -> Result<(), StageFailure> {
    let disk = &run.plan.disks[idx];
    std::fs::create_dir_all(dir).map_err(|e| {
        StageFailure::new(format!(
            "cannot create the backup directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files = vec![disk.source.clone()];
    if let Some(extents) = facts
        .info
        .format_specific
        .as_ref()
        .and_then(|f| f.get("data"))
        .and_then(|d| d.get("extents"))
        .and_then(Value::as_array)
    {
        for e in extents {
            if let Some(name) = e.get("filename").and_then(Value::as_str) {
                let path = PathBuf::from(name);
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
    }
    // Every name is checked before anything is copied, so a refusal leaves no partial backup.
    let mut copies = Vec::new();
    for file in files {
        let Some(name) = file.file_name() else {
            continue;
        };
        let dest = dir.join(name);
        if dest.exists() {
            return Err(StageFailure::new(format!(
                "disk {}: backup {} already exists; move it away first (it may be the only copy \
                 of an earlier original)",
                disk.id,
                dest.display()
            )));
        }
        copies.push((file, dest));
    }
    // Each copy is written to `<name>.part`, flushed, and renamed: a backup under its final
    // name is always whole, even after a crash or an interrupted copy.
    for (file, dest) in copies {
        let part = atomic::part_path(&dest);
        let cmd = crate::exec::Command::new("cp")
            .args([
                "--reflink=auto",
                "--sparse=always",
                "--preserve=mode,timestamps",
            ])
            .arg(&file)
            .arg(&part);
        let out = run
            .exec(&cmd, None)
            .inspect_err(|_| atomic::remove_part(&part))?;
        let failure = if !out.record.success() {
            Some(out.record.to_string())
        } else {
            atomic::publish(&part, &dest, false).err()
        };
        if let Some(why) = failure {
            atomic::remove_part(&part);
            return Err(StageFailure::new(format!(
                "disk {}: could not back up {}: {why}",
                disk.id,
                file.display()
            )));
        }
    }
    Ok(())
}
