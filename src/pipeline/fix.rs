//! fix: offline guest repair in one appliance launch, into qcow2 overlays backed by the
//! read-only sources (convert on; convert then flattens them), or into the sources themselves
//! (convert off, with the admin's consent), after a whole copy of each source file unless the
//! admin opted out of it. [`preview_fix`] computes the same changes on a read-only view for
//! `--dry-run --preview-guest`.

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
use crate::outcome::stages::{BackupMethod, DiskBackup, FixModeName, FixResult, StageResult};
use crate::plan::{FixMode, VmPlan};
use crate::stage::Stage;
use crate::tools::guestfish::{Drive, GuestError, Session};

/// Offline guest repair, into overlays (convert on) or into the sources (convert off).
pub(super) fn run(run: &mut Run<'_>) -> Result<FixResult, StageFailure> {
    let plan = run.plan;
    let fix = plan.fix.as_ref().expect("stage runs only when planned");
    let env = guest::env(plan)?;
    let mut drives = Vec::new();
    let mut disk_backups = match &fix.mode {
        FixMode::InPlace { .. } => Some(Vec::new()),
        FixMode::Overlay { .. } => None,
    };
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
                let overlay = crate::plan::overlay_path(work_dir, &disk.id);
                let out = run.exec(
                    &plan
                        .qemu_img
                        .overlay_cmd(&overlay, disk.image(), &facts.driver),
                    None,
                )?;
                if !out.record.success() {
                    return Err(StageFailure::new(format!(
                        "disk {}: could not create the repair overlay: {}",
                        disk.id, out.record
                    )));
                }
                // qemu-img creates it under the umask; the 0700 work directory already keeps
                // others out, and the overlay, which receives guest data, is private like every
                // file we write.
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(
                        &overlay,
                        std::fs::Permissions::from_mode(crate::files::FILE_MODE),
                    )
                    .map_err(|e| {
                        StageFailure::new(format!(
                            "disk {}: cannot make the repair overlay {} private: {e}",
                            disk.id,
                            overlay.display()
                        ))
                    })?;
                }
                run.overlays[idx] = Some(overlay.clone());
                drives.push(Drive {
                    path: overlay,
                    format: "qcow2".to_owned(),
                    readonly: false,
                });
            }
            FixMode::InPlace { backup_dir } => {
                if disk.member.is_some() {
                    return Err(StageFailure::new(format!(
                        "disk {}: {} is inside an archive and cannot be repaired in place; \
                         enable pipeline.convert (repairs then go into an overlay and the output)",
                        disk.id,
                        disk.shown()
                    )));
                }
                if facts.info.vmdk_create_type() == Some("streamOptimized") {
                    return Err(StageFailure::new(format!(
                        "disk {}: a streamOptimized VMDK cannot be modified in place; enable \
                         pipeline.convert (repairs then go into an overlay and the output)",
                        disk.id
                    )));
                }
                if let Some(dir) = backup_dir {
                    let made = disk_backups.get_or_insert_default();
                    backup_disk(run, idx, dir, &facts, made).map_err(|f| with_backups(f, made))?;
                }
                drives.push(Drive {
                    path: disk.source.clone(),
                    format: facts.driver.clone(),
                    readonly: false,
                });
            }
        }
    }
    let backups = disk_backups.clone().unwrap_or_default();
    let mut session =
        guest::launch(run, env, &drives, Stage::Fix).map_err(|f| with_backups(f, &backups))?;
    let result = guest_repair::repair(&mut session, &fix.settings, false);
    let (records, finished) = session.finish();
    run.commands.extend(records);
    let outcome = result.map_err(|e| {
        let interrupted = matches!(
            e,
            RepairError::Guest(GuestError::Cancelled)
                | RepairError::Inspect(InspectError::Guest(GuestError::Cancelled))
        );
        let failure = match &e {
            // What the guest is (no operating system...), said as inspect says it.
            RepairError::Inspect(verdict) if !matches!(verdict, InspectError::Guest(_)) => {
                StageFailure::new(guest::refusal(verdict))
            }
            _ => guest::failure(&e, interrupted),
        };
        with_backups(failure, &backups)
    })?;
    if let Err(e) = finished {
        return Err(with_backups(
            guest::failure(&e, matches!(e, GuestError::Cancelled)),
            &backups,
        ));
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
        disk_backups: disk_backups.map(Box::new),
    })
}

/// An in-place fix that fails after backups were made still lists them in the report: they
/// may be the only copies of the originals.
fn with_backups(mut failure: StageFailure, backups: &[DiskBackup]) -> StageFailure {
    if !backups.is_empty() && failure.result.is_none() {
        failure.result = Some(Box::new(StageResult::Fix(FixResult {
            repair: guest_repair::RepairOutcome::default(),
            mode: FixModeName::InPlace,
            disk_backups: Some(Box::new(backups.to_vec())),
        })));
    }
    failure
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
    let space = super::SpaceLedger::new();
    let mut run = Run::new(plan, cancel, &events, &space);
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

/// Copies a disk (every file of a multi-file VMDK) whole before it is modified in place: a
/// reflink where the filesystem can clone (instant, no room taken until blocks differ), else a
/// sparse copy. Every name and the room are checked before anything is copied, and each copy
/// appears under its final name only once it is whole and flushed.
fn backup_disk(
    run: &mut Run<'_>,
    idx: usize,
    dir: &Path,
    facts: &SourceFacts,
    made: &mut Vec<DiskBackup>,
) -> Result<(), StageFailure> {
    let disk = &run.plan.disks[idx];
    std::fs::create_dir_all(dir).map_err(|e| {
        StageFailure::new(format!(
            "cannot create the backup directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files = crate::plan::backup_files(disk);
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
    let mut copies = Vec::new();
    let mut needed = 0u64;
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
        needed = needed.saturating_add(crate::files::allocated_bytes(&file).unwrap_or(0));
        copies.push((file, dest));
    }
    // Planning checked the room; the extents of a multi-file VMDK are known only now, and the
    // filesystem may have filled since.
    if let Ok(free) = crate::files::free_bytes(dir)
        && free < needed
    {
        return Err(StageFailure::new(format!(
            "disk {}: its backup needs up to {needed} bytes in {}, but only {free} bytes are free \
             there; the source was not touched (pipeline.fix.disk_backup: false or \
             --no-disk-backup repairs without a backup)",
            disk.id,
            dir.display()
        )));
    }
    for (file, dest) in copies {
        let part = atomic::part_path(&dest);
        let copied = copy_whole(run, &file, &part).inspect_err(|_| atomic::remove_part(&part))?;
        let published =
            copied.and_then(|method| atomic::publish(&part, &dest, false).map(|()| method));
        let method = match published {
            Ok(method) => method,
            Err(why) => {
                atomic::remove_part(&part);
                return Err(StageFailure::new(format!(
                    "disk {}: could not back up {}: {why}; the source was not touched",
                    run.plan.disks[idx].id,
                    file.display()
                )));
            }
        };
        let size_bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        let disk = &run.plan.disks[idx];
        run.warn(
            Stage::Fix,
            format!(
                "disk {}: {} is written in place; its original was copied whole to {} ({})",
                disk.id,
                file.display(),
                dest.display(),
                match method {
                    BackupMethod::Reflink => "reflink",
                    BackupMethod::Copy => "sparse copy",
                }
            ),
        );
        made.push(DiskBackup {
            disk_id: disk.id.clone(),
            source: file,
            backup: dest,
            method,
            size_bytes,
        });
    }
    Ok(())
}

/// Copies `file` to `part`: a reflink when the filesystem can clone it, else a sparse copy.
/// The outer error is the run's (interrupted, could not start cp); the inner one says why the
/// copy failed.
fn copy_whole(
    run: &mut Run<'_>,
    file: &Path,
    part: &Path,
) -> Result<Result<BackupMethod, String>, StageFailure> {
    let cp = |mode: &[&str]| {
        crate::exec::Command::new("cp")
            .args(mode.iter().copied())
            .arg("--preserve=mode,timestamps")
            .arg("--")
            .arg(file)
            .arg(part)
    };
    let clone = run.exec(&cp(&["--reflink=always"]), None)?;
    if clone.record.success() {
        return Ok(Ok(BackupMethod::Reflink));
    }
    // No clone here (another filesystem, or one that cannot): a byte copy that keeps holes.
    atomic::remove_part(part);
    let copy = run.exec(&cp(&["--reflink=never", "--sparse=always"]), None)?;
    Ok(if copy.record.success() {
        Ok(BackupMethod::Copy)
    } else {
        Err(copy.record.to_string())
    })
}
