//! The batch checkpoint: every VM's result so far, rewritten atomically after each VM.
//!
//! It lives at `<report dir>/.checkpoints/checkpoint-<batch id>.json` and is what
//! `--batch-resume` reads to skip VMs whose outputs are already complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BatchManifest, VmResult};
use crate::atomic;

const CHECKPOINT_VERSION: &str = "1.0";

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: String,
    batch_id: String,
    batch_manifest: PathBuf,
    updated_at: String,
    vms: Vec<VmResult>,
}

/// Where a batch's checkpoint lives.
pub fn path(report_dir: &Path, batch_id: &str) -> PathBuf {
    let safe: String = batch_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    report_dir
        .join(".checkpoints")
        .join(format!("checkpoint-{safe}.json"))
}

pub fn write(
    path: &Path,
    batch: &BatchManifest,
    results: &[VmResult],
) -> Result<(), atomic::WriteError> {
    let checkpoint = Checkpoint {
        version: CHECKPOINT_VERSION.to_owned(),
        batch_id: batch.batch_id.clone(),
        batch_manifest: batch.path.clone(),
        updated_at: crate::clock::now_local(),
        vms: results
            .iter()
            .map(|r| VmResult {
                // The VM's own report.json has the details; keep the checkpoint small.
                pipeline_report: None,
                ..r.clone()
            })
            .collect(),
    };
    atomic::write_json(path, &checkpoint)
}

/// The results recorded for a batch, by VM id; empty when there is no usable checkpoint.
pub fn load(report_dir: &Path, batch_id: &str) -> HashMap<String, VmResult> {
    let file = path(report_dir, batch_id);
    let Ok(bytes) = std::fs::read(&file) else {
        return HashMap::new();
    };
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(c) if c.version == CHECKPOINT_VERSION && c.batch_id == batch_id => {
            c.vms.into_iter().map(|r| (r.vm_id.clone(), r)).collect()
        }
        Ok(_) => HashMap::new(),
        Err(e) => {
            tracing::warn!(
                "ignoring unreadable checkpoint {}: {e}; every VM will run",
                file.display()
            );
            HashMap::new()
        }
    }
}

/// The results a shard may reuse on `--batch-resume`: its own checkpoint (`own_dir`), then
/// every other shard's and the unsharded run's under `base_dir`, for VMs it has no result for
/// yet, or only one that did not succeed. Reading another shard's checkpoint writes nothing.
pub fn load_shards(base_dir: &Path, own_dir: &Path, batch_id: &str) -> HashMap<String, VmResult> {
    let mut found = load(own_dir, batch_id);
    let mut others: Vec<PathBuf> = std::fs::read_dir(base_dir.join(super::shard::SHARDS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != own_dir && p.is_dir())
        .collect();
    others.sort();
    others.push(base_dir.to_owned());
    for dir in others {
        for (id, r) in load(&dir, batch_id) {
            let better = match found.get(&id) {
                None => true,
                Some(have) => {
                    have.status != super::BatchVmStatus::Succeeded
                        && r.status == super::BatchVmStatus::Succeeded
                }
            };
            if better {
                found.insert(id, r);
            }
        }
    }
    found
}
