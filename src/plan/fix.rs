//! fix's plan: with convert on, repairs go into overlays in a per-VM work directory (removed
//! when the VM finishes); with convert off, into the sources, which needs the admin's consent
//! (`pipeline.fix.allow_in_place` or `--allow-in-place`) and, unless the admin opts out too
//! (`pipeline.fix.disk_backup: false` or `--no-disk-backup`), a whole copy of each disk first,
//! for which the backup directory must have room now.

use std::path::{Path, PathBuf};

use super::DiskPlan;
use crate::diag::Problems;
use crate::files;
use crate::manifest::Manifest;
use crate::units::human_bytes;

/// Offline guest repair.
#[derive(Clone, Debug)]
pub struct FixPlan {
    pub settings: crate::manifest::FixStage,
    pub mode: FixMode,
}

/// Where guest repairs are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixMode {
    /// Into qcow2 overlays backed by the read-only sources (convert flattens them); the
    /// overlays live in `work_dir` and are removed when the VM finishes.
    Overlay { work_dir: PathBuf },
    /// Into the source disks themselves (convert is off, and the admin consented), after a
    /// whole copy of each into `backup_dir` unless the admin opted out of it.
    InPlace { backup_dir: Option<PathBuf> },
}

/// What the command line says about writing the sources in place.
#[derive(Clone, Copy, Debug, Default)]
pub struct InPlaceConsent {
    /// `--allow-in-place`: as `pipeline.fix.allow_in_place: true`.
    pub allow_in_place: bool,
    /// `--no-disk-backup`: as `pipeline.fix.disk_backup: false`.
    pub no_disk_backup: bool,
}

/// The per-VM work directory that holds the repair overlays.
pub fn work_dir(output_dir: &Path, vm_id: &str) -> PathBuf {
    output_dir.join(format!("{}{vm_id}", crate::lock::WORK_DIR_PREFIX))
}

/// The overlay a disk's repairs go into, in the work directory.
pub fn overlay_path(work_dir: &Path, disk_id: &str) -> PathBuf {
    work_dir.join(format!("{disk_id}.overlay.qcow2"))
}

/// The file the repairs of `disk` are written to: its overlay when converting, the source
/// itself when repairing in place.
pub fn repaired_path(output_dir: &Path, vm_id: &str, converting: bool, disk: &DiskPlan) -> PathBuf {
    if converting {
        overlay_path(&work_dir(output_dir, vm_id), &disk.id)
    } else {
        disk.source.clone()
    }
}

/// The directory whole-disk backups go to.
pub fn backup_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("backups")
}

#[expect(
    clippy::too_many_arguments,
    reason = "the facts of the plan fix depends on"
)]
pub(super) fn plan(
    m: &Manifest,
    profile: Option<&str>,
    output_dir: &Path,
    vm_id: &str,
    disks: &[DiskPlan],
    consent: InPlaceConsent,
    notes: &mut Vec<String>,
    problems: &mut Problems,
) -> Option<FixPlan> {
    let settings = &m.pipeline.fix;
    if !settings.enabled {
        return None;
    }
    if m.pipeline.convert.enabled {
        return Some(FixPlan {
            settings: settings.clone(),
            mode: FixMode::Overlay {
                work_dir: work_dir(output_dir, vm_id),
            },
        });
    }
    // A chain's top is the VM's current delta: repairs written there would change the
    // snapshot itself, which consent to repair "the source" does not cover.
    let chains: Vec<&DiskPlan> = disks
        .iter()
        .filter(|d| !d.backing_chain.is_empty())
        .collect();
    if !chains.is_empty() {
        for d in chains {
            problems.push(
                "pipeline.fix.allow_in_place",
                format!(
                    "disk {}: {} rests on a backing_chain of {} file(s), and repairing it in \
                     place would write into that delta, the VM's current state; nothing has \
                     been touched. Enable pipeline.convert: the repairs then go into an overlay \
                     and the converted copy, and the chain is left as it is",
                    d.id,
                    d.source.display(),
                    d.backing_chain.len()
                ),
            );
        }
        return None;
    }
    let backup = settings.disk_backup && !consent.no_disk_backup;
    let dir = backup_dir(output_dir);
    if !(settings.allow_in_place || consent.allow_in_place) {
        problems.push(
            "pipeline.fix.allow_in_place",
            format!(
                "pipeline.fix is enabled and pipeline.convert is not{}, so the guest repairs \
                 would be written into the source disks themselves; nothing has been touched. \
                 To consent, add `pipeline: {{fix: {{allow_in_place: true}}}}` to the manifest{} \
                 or pass --allow-in-place ({}). To leave the sources alone instead, enable \
                 pipeline.convert: the repairs then go into the converted copy",
                profile
                    .map(|p| format!(" (the manifest uses profile '{p}')"))
                    .unwrap_or_default(),
                if profile.is_some() {
                    " (or to its profile_overrides)"
                } else {
                    ""
                },
                if backup {
                    format!(
                        "each disk is first copied whole to {}; pipeline.fix.disk_backup: false \
                         or --no-disk-backup skips that copy",
                        dir.display()
                    )
                } else {
                    "no backup copy is made: pipeline.fix.disk_backup is false or \
                     --no-disk-backup was given"
                        .to_owned()
                }
            ),
        );
        return None;
    }
    if backup {
        check_backup_room(disks, &dir, problems);
        notes.push(format!(
            "pipeline.convert is off, so guest repairs are written into the source disks \
             themselves (consented), after a whole copy of each to {}",
            dir.display()
        ));
    } else {
        notes.push(
            "pipeline.convert is off, so guest repairs are written into the source disks \
             themselves (consented), without a backup copy (disk_backup is off)"
                .to_owned(),
        );
    }
    Some(FixPlan {
        settings: settings.clone(),
        mode: FixMode::InPlace {
            backup_dir: backup.then_some(dir),
        },
    })
}

/// The files a disk's backup copies, as far as the plan knows them: the file the manifest
/// names and, for a flat VMDK extent, its descriptor (the stage adds the extents of a
/// multi-file VMDK, which only `qemu-img info` lists).
pub fn backup_files(disk: &DiskPlan) -> Vec<PathBuf> {
    let mut files = vec![disk.source.clone()];
    if disk.given_path != disk.source {
        files.push(disk.given_path.clone());
    }
    files
}

/// Refuses a backup that cannot be made: one whose copy already exists (it may be the only
/// copy of an earlier original), or one the backup directory's filesystem has no room for.
/// The room asked for is what a sparse copy takes (the sources' allocated bytes): whether a
/// reflink works, and takes no room, is known only by trying.
fn check_backup_room(disks: &[DiskPlan], dir: &Path, problems: &mut Problems) {
    let mut needed = 0u64;
    for disk in disks {
        for file in backup_files(disk) {
            if let Some(name) = file.file_name() {
                let dest = dir.join(name);
                if dest.exists() {
                    problems.push(
                        "pipeline.fix.disk_backup",
                        format!(
                            "disk {}: the backup {} already exists; move it away first (it may \
                             be the only copy of an earlier original)",
                            disk.id,
                            dest.display()
                        ),
                    );
                }
            }
            // A source that cannot be read is named by the stage that opens it.
            needed = needed.saturating_add(files::allocated_bytes(&file).unwrap_or(0));
        }
    }
    match files::free_bytes(dir) {
        Ok(free) if free < needed => problems.push(
            "pipeline.fix.disk_backup",
            format!(
                "the backup copies of the source disks need up to {} ({needed} bytes) in {}, but \
                 its filesystem has only {} ({free} bytes) free; nothing has been touched. Free \
                 some space there, choose another output.directory (or --output-dir), or set \
                 pipeline.fix.disk_backup: false (or pass --no-disk-backup) to repair the \
                 sources without a backup",
                human_bytes(needed),
                dir.display(),
                human_bytes(free),
            ),
        ),
        Ok(_) => {}
        Err(e) => problems.push(
            "pipeline.fix.disk_backup",
            format!(
                "cannot tell how much room the backup directory {} has: {e}",
                dir.display()
            ),
        ),
    }
}
