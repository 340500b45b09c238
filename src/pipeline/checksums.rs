//! Checksums: verified before anything else, or on a thread of their own while inspect and
//! convert run. Reading a source whose digest is not yet known is harmless as long as nothing
//! is published before it is, so convert holds back its renames until the verification is done
//! ([`Run::settle_checksums`]). On two cores this takes the hashing (one core) off the critical
//! path of a conversion that leaves a core idle much of the time. The outcome is recorded under
//! load_manifest, where it belongs, whichever stage waited for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::{Run, StageFailure, failed_status};
use crate::checksum;
use crate::diag::error_chain;
use crate::events::{Activity, Event, EventSink, VmStatus};
use crate::exec::CancelToken;
use crate::outcome::stages::VerifiedChecksum;
use crate::outcome::{Message, StageOutcome, StageResult};
use crate::plan::VmPlan;
use crate::stage::{HookStage, Stage};
use crate::units::seconds_since;

/// One disk's checksum: its id, the expected digest, and what the file hashed to.
type ChecksumResult = (String, String, Result<String, checksum::ChecksumError>);

/// Checksums being verified in the background, and what became of them.
#[derive(Default)]
pub(super) struct Checksums {
    pending: Option<Pending>,
    settled: Option<Settled>,
}

/// Checksums being verified on a thread of their own while inspect and convert run, at a
/// background priority until the pipeline waits for them; the thread hands back the results
/// and how long the hashing took.
struct Pending {
    handle: std::thread::JoinHandle<(Vec<ChecksumResult>, f64)>,
    background: Arc<checksum::Background>,
}

/// What became of checksums verified alongside the later stages.
struct Settled {
    verified: Vec<VerifiedChecksum>,
    seconds: f64,
    failure: Option<String>,
}

/// Whether the checksums may be verified while inspect and convert run, instead of before
/// them: only when no hook fires and no repair runs between load_manifest and the first rename,
/// since those may act on the source's identity; otherwise they are verified first.
pub(super) fn overlap(plan: &VmPlan) -> bool {
    plan.convert.is_some()
        && plan.fix.is_none()
        && plan.disks.iter().any(|d| d.checksum.is_some())
        && !plan.hooks.has(HookStage::PostExtraction)
        && !plan.hooks.has(HookStage::PreConvert)
}

/// Verifies the manifest's checksums now, or starts them in the background (see [`overlap`]);
/// returns the verified ones (none yet when they run in the background).
pub(super) fn start(run: &mut Run<'_>) -> Result<Vec<VerifiedChecksum>, StageFailure> {
    let plan = run.plan;
    let to_verify: Vec<ToVerify> = plan
        .disks
        .iter()
        .filter_map(|d| {
            d.checksum.as_ref().map(|c| ToVerify {
                id: d.id.clone(),
                path: d.given_path.clone(),
                expected: c.clone(),
                offset: d.member.as_ref().map_or(0, |m| m.offset),
                limit: d.source_bytes(),
            })
        })
        .collect();
    run.bytes_read += to_verify.iter().filter_map(|v| v.limit).sum::<u64>();
    if overlap(plan) {
        // The display shows the conversion's progress meanwhile: two activities on one VM's
        // bar would make it jump back and forth.
        let (cancel, events, vm) = (run.cancel.clone(), EventSink::discard(), plan.vm_id.clone());
        let background = Arc::new(checksum::Background::new());
        let lowered = Arc::clone(&background);
        run.checksums.pending = Some(Pending {
            handle: std::thread::spawn(move || {
                let started = Instant::now();
                let results = hash_disks(&to_verify, &cancel, &events, &vm, Some(&lowered));
                (results, seconds_since(started))
            }),
            background,
        });
        return Ok(Vec::new());
    }
    let results = hash_disks(&to_verify, run.cancel, run.events, &plan.vm_id, None);
    check(results)
}

/// A disk whose checksum the manifest gives; `limit` is its pinned size, the most that is read.
struct ToVerify {
    id: String,
    path: PathBuf,
    expected: String,
    /// Where the disk's bytes start in `path` (an archive member's offset; else 0).
    offset: u64,
    limit: Option<u64>,
}

/// Hashes the disks (in parallel) and pairs each digest with the one the manifest expects;
/// `background` as for [`checksum::sha256_file`].
fn hash_disks(
    to_verify: &[ToVerify],
    cancel: &CancelToken,
    events: &EventSink,
    vm: &str,
    background: Option<&checksum::Background>,
) -> Vec<ChecksumResult> {
    to_verify
        .par_iter()
        .map(
            |ToVerify {
                 id,
                 path,
                 expected,
                 offset,
                 limit,
             }| {
                let total = limit.unwrap_or(0);
                let range = checksum::Range {
                    offset: *offset,
                    limit: *limit,
                    sha1: false,
                };
                let actual = checksum::digests(path, range, Some(cancel), background, |done| {
                    events.send(Event::Progress {
                        vm: vm.to_owned(),
                        disk: id.clone(),
                        activity: Activity::Checksum,
                        done,
                        total,
                    })
                })
                .map(|d| d.sha256);
                (id.clone(), expected.clone(), actual)
            },
        )
        .collect()
}

/// The verified checksums for the report, or the first failure.
fn check(results: Vec<ChecksumResult>) -> Result<Vec<VerifiedChecksum>, StageFailure> {
    let mut verified = Vec::new();
    for (id, expected, actual) in results {
        let actual = match actual {
            Ok(a) => a,
            Err(checksum::ChecksumError::Cancelled { .. }) => {
                return Err(StageFailure::interrupted());
            }
            Err(e) => return Err(StageFailure::new(format!("disk {id}: {}", error_chain(&e)))),
        };
        if actual != expected {
            return Err(StageFailure::new(format!(
                "Checksum verification failed for disk {id}: the manifest says {expected}, the \
                 file hashes to {actual}"
            )));
        }
        verified.push(VerifiedChecksum {
            disk_id: id,
            checksum: actual,
        });
    }
    Ok(verified)
}

impl Run<'_> {
    /// Waits for checksums verified alongside convert and checks them. A mismatch is a
    /// load_manifest failure; it is reported once, however often this is called.
    pub(super) fn settle_checksums(&mut self) -> Result<(), StageFailure> {
        if let Some(pending) = self.checksums.pending.take() {
            pending.background.hurry();
            let Ok((results, seconds)) = pending.handle.join() else {
                // A panic while hashing verified nothing: never publish on that.
                self.checksums.settled = Some(Settled {
                    verified: Vec::new(),
                    seconds: 0.0,
                    failure: Some("the checksum verification stopped unexpectedly".to_owned()),
                });
                return self.settle_checksums();
            };
            let settled = match check(results) {
                Ok(verified) => Settled {
                    verified,
                    seconds,
                    failure: None,
                },
                Err(f) if f.interrupted => {
                    self.checksums.settled = Some(Settled {
                        verified: Vec::new(),
                        seconds,
                        failure: None,
                    });
                    return Err(f);
                }
                Err(f) => Settled {
                    verified: Vec::new(),
                    seconds,
                    failure: Some(f.message),
                },
            };
            self.checksums.settled = Some(settled);
        }
        match self
            .checksums
            .settled
            .as_ref()
            .and_then(|s| s.failure.clone())
        {
            Some(text) => Err(StageFailure {
                message: text,
                interrupted: false,
                result: None,
                stage: Some(Stage::Load),
            }),
            None => Ok(()),
        }
    }
}

/// At the end of the run: waits for checksums an earlier failure left running, and records
/// their outcome in load_manifest's result (a mismatch fails load_manifest, and the VM).
pub(super) fn record(
    run: &mut Run<'_>,
    stages: &mut [StageOutcome],
    errors: &mut Vec<Message>,
    status: &mut VmStatus,
) {
    if run.checksums.pending.is_some()
        && let Err(failure) = run.settle_checksums()
        && *status == VmStatus::Succeeded
    {
        *status = failed_status(&failure, run.cancel);
    }
    let Some(settled) = run.checksums.settled.take() else {
        return;
    };
    let Some(load) = stages.iter_mut().find(|s| s.stage == Stage::Load) else {
        return;
    };
    if let Some(StageResult::Load(result)) = load.result.as_mut() {
        result.checksums_verified = !settled.verified.is_empty();
        result.verified_checksums = settled.verified;
        result.checksums_verified_during_convert = Some(true);
        result.checksum_seconds = Some(settled.seconds);
    }
    if let Some(text) = settled.failure {
        load.success = false;
        load.error = Some(text.clone());
        if !errors
            .iter()
            .any(|e| e.stage == Stage::Load.into() && e.message == text)
        {
            errors.push(Message::now(Stage::Load, text));
        }
    }
}
