//! fix's plan: with convert on, repairs go into overlays in a per-VM work directory (removed
//! when the VM finishes); with convert off, into the sources, after a backup when asked.

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;

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
    /// Into the source disks themselves (convert is off), after a copy into `backup_dir`.
    InPlace { backup_dir: Option<PathBuf> },
}

pub(super) fn plan(
    m: &Manifest,
    output_dir: &Path,
    vm_id: &str,
    notes: &mut Vec<String>,
) -> Option<FixPlan> {
    let converting = m.pipeline.convert.enabled;
    let fix = m.pipeline.fix.enabled.then(|| FixPlan {
        settings: m.pipeline.fix.clone(),
        mode: if converting {
            FixMode::Overlay {
                work_dir: output_dir.join(format!("{}{vm_id}", crate::lock::WORK_DIR_PREFIX)),
            }
        } else {
            FixMode::InPlace {
                backup_dir: m.pipeline.fix.backup.then(|| output_dir.join("backups")),
            }
        },
    });
    if fix
        .as_ref()
        .is_some_and(|f| matches!(f.mode, FixMode::InPlace { .. }))
    {
        notes.push(
            "pipeline.convert is off, so guest repairs are written into the source disks \
             themselves"
                .to_owned(),
        );
    }
    fix
}
