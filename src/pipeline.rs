//! The per-VM pipeline: load_manifest (checksums) → inspect → convert → validate, with hooks
//! fired around them (pre/post_extraction around load_manifest, pre/post_fix around fix,
//! pre/post_convert around convert, post_validate after validate; a hook stage fires only when
//! its pipeline stage runs).
//!
//! [`run_vm`] executes a [`VmPlan`] and returns a [`VmOutcome`]: what each stage did, the commands
//! it ran, the artifacts it produced, each hook's outcome, warnings and errors. It never prints;
//! progress goes out as [`Event`]s and the outcome is a return value. Outputs are written to
//! `<name>.part` and renamed only after qemu-img succeeded; a failed or interrupted conversion
//! removes its `.part` file. Source disks are only ever opened for reading.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::checksum;
use crate::exec::{self, CancelToken, CommandRecord, Status, Watch};
use crate::guest::inspect::{self as guest_inspect, GuestInfo, InspectError};
use crate::guest::repair::{self as guest_repair, RepairError};
use crate::guest::session::{Drive, GuestEnv, GuestError, Session};
use crate::hooks::{self, HookOutcome, HookStage};
use crate::manifest::SourceFormat;
use crate::plan::FixMode;
use crate::plan::{DiskPlan, VmPlan};
use crate::qemu_img::{self, Aio, CheckSummary, CheckVerdict, ImageInfo};
use crate::ui::{Event, EventSink};

/// How a VM's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    Succeeded,
    Failed,
    Interrupted,
}

/// One stage as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct StageOutcome {
    pub name: &'static str,
    pub success: bool,
    pub duration: f64,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub commands: Vec<CommandRecord>,
}

/// A file the run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: PathBuf,
    pub disk_id: String,
    pub format: String,
    pub size_bytes: u64,
    pub size_human: String,
    pub boot_order_hint: u32,
    pub compressed: bool,
}

/// A warning or error, attributed to the stage that raised it.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub stage: String,
    pub message: String,
    pub timestamp: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct VmOutcome {
    pub vm_id: String,
    pub status: VmStatus,
    pub started_at: String,
    pub duration_seconds: f64,
    pub stages: Vec<StageOutcome>,
    pub artifacts: Vec<Artifact>,
    pub warnings: Vec<Message>,
    pub errors: Vec<Message>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Every hook that ran, in the order it ran.
    pub hooks: Vec<HookOutcome>,
}

impl VmOutcome {
    pub fn succeeded(&self) -> bool {
        self.status == VmStatus::Succeeded
    }
}

/// What a stage function hands back when it fails.
struct StageFailure {
    message: String,
    interrupted: bool,
    /// What the stage found before it failed (a failed boot test's console), for the report.
    result: Option<Value>,
    /// The stage the failure belongs to, when it is not the one running: a checksum verified
    /// alongside convert fails `load_manifest`.
    stage: Option<&'static str>,
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

/// One disk's checksum: its id, the expected digest, and what the file hashed to.
type ChecksumResult = (String, String, Result<String, checksum::ChecksumError>);

/// Checksums being verified on a thread of their own while inspect and convert run, at a
/// background priority until the pipeline waits for them; the thread hands back the results
/// and how long the hashing took.
struct PendingChecksums {
    handle: std::thread::JoinHandle<(Vec<ChecksumResult>, f64)>,
    background: Arc<checksum::Background>,
}

/// What became of checksums verified alongside the later stages.
struct SettledChecksums {
    verified: Vec<Value>,
    seconds: f64,
    failure: Option<String>,
}

/// What we learnt about a source disk from qemu-img, shared by inspect and convert.
#[derive(Clone, Debug)]
struct SourceFacts {
    driver: String,
    info: ImageInfo,
    checked: bool,
}

/// Mutable state of one VM's run.
struct Run<'a> {
    plan: &'a VmPlan,
    cancel: &'a CancelToken,
    events: &'a EventSink,
    warnings: Vec<Message>,
    commands: Vec<CommandRecord>,
    facts: Vec<Option<SourceFacts>>,
    /// Whether qemu-img can read through io_uring here; learnt by the first format probe that
    /// tries it (see [`Aio`]).
    io_uring: Option<bool>,
    /// Per disk, the qcow2 overlay holding guest repairs, when fix wrote one.
    overlays: Vec<Option<PathBuf>>,
    artifacts: Vec<Artifact>,
    bytes_read: u64,
    bytes_written: u64,
    hooks: Vec<HookOutcome>,
    /// Checksums still being verified (see [`overlaps_checksums`]).
    pending_checksums: Option<PendingChecksums>,
    settled_checksums: Option<SettledChecksums>,
}

/// Whether the checksums may be verified while inspect and convert run, instead of before
/// them: reading a source whose digest is not yet known is harmless as long as nothing is
/// published before it is, so convert holds back its renames until the verification is done.
/// Only when no hook fires and no repair runs between load_manifest and the first rename, since
/// those may act on the source's identity; otherwise the checksums are verified first, as
/// before. On two cores this takes the hashing (one core) off the critical path of a
/// conversion that leaves a core idle much of the time.
fn overlaps_checksums(plan: &VmPlan) -> bool {
    plan.convert.is_some()
        && plan.fix.is_none()
        && plan.disks.iter().any(|d| d.checksum.is_some())
        && !plan.hooks.has(HookStage::PostExtraction)
        && !plan.hooks.has(HookStage::PreConvert)
}

/// Runs every planned stage of one VM.
pub fn run_vm(plan: &VmPlan, cancel: &CancelToken, events: &EventSink) -> VmOutcome {
    let started_at = now_iso();
    let started = Instant::now();
    events.send(Event::VmStarted {
        vm: plan.vm_id.clone(),
    });
    let mut run = Run {
        plan,
        cancel,
        events,
        warnings: plan
            .notes
            .iter()
            .map(|n| Message {
                stage: "plan".to_owned(),
                message: n.clone(),
                timestamp: now_iso(),
            })
            .collect(),
        commands: Vec::new(),
        facts: vec![None; plan.disks.len()],
        io_uring: None,
        overlays: vec![None; plan.disks.len()],
        artifacts: Vec::new(),
        bytes_read: 0,
        bytes_written: 0,
        hooks: Vec::new(),
        pending_checksums: None,
        settled_checksums: None,
    };
    let mut stages = Vec::new();
    let mut errors = Vec::new();
    let mut status = VmStatus::Succeeded;

    type StageFn = fn(&mut Run<'_>) -> Result<Value, StageFailure>;
    use HookStage as H;
    /// (stage, enabled, function, hooks fired before it, hooks fired after it)
    type Step = (&'static str, bool, StageFn, Option<H>, Option<H>);
    let order: [Step; 6] = [
        (
            "load_manifest",
            true,
            stage_load,
            Some(H::PreExtraction),
            Some(H::PostExtraction),
        ),
        ("inspect", plan.inspect.is_some(), stage_inspect, None, None),
        (
            "fix",
            plan.fix.is_some(),
            stage_fix,
            Some(H::PreFix),
            Some(H::PostFix),
        ),
        (
            "convert",
            plan.convert.is_some(),
            stage_convert,
            Some(H::PreConvert),
            Some(H::PostConvert),
        ),
        (
            "validate",
            plan.validate.is_some(),
            stage_validate,
            None,
            Some(H::PostValidate),
        ),
        (
            "domain_xml",
            plan.domain.is_some(),
            stage_domain,
            None,
            None,
        ),
    ];
    for (name, enabled, stage, hooks_before, hooks_after) in order {
        if !enabled {
            continue;
        }
        if cancel.is_cancelled() {
            status = VmStatus::Interrupted;
            errors.push(message(name, "interrupted before this stage started"));
            break;
        }
        if let Some(h) = hooks_before
            && let Err(failure) = run.fire_hooks(h)
        {
            errors.push(message(h.name(), &failure.message));
            status = failed_status(&failure, cancel);
            break;
        }
        events.send(Event::StageStarted {
            vm: plan.vm_id.clone(),
            stage: name,
        });
        let t = Instant::now();
        let result = stage(&mut run);
        let duration = secs(t);
        let commands = std::mem::take(&mut run.commands);
        events.send(Event::StageFinished {
            vm: plan.vm_id.clone(),
            stage: name,
            success: result.is_ok(),
        });
        match result {
            Ok(value) => stages.push(StageOutcome {
                name,
                success: true,
                duration,
                result: Some(value),
                error: None,
                commands,
            }),
            Err(failure) => {
                stages.push(StageOutcome {
                    name,
                    success: false,
                    duration,
                    result: failure.result.clone(),
                    error: Some(failure.message.clone()),
                    commands,
                });
                errors.push(message(failure.stage.unwrap_or(name), &failure.message));
                status = failed_status(&failure, cancel);
                break;
            }
        }
        if let Some(h) = hooks_after
            && let Err(failure) = run.fire_hooks(h)
        {
            errors.push(message(h.name(), &failure.message));
            status = failed_status(&failure, cancel);
            break;
        }
    }

    // Checksums verified alongside convert: wait for them when an earlier failure left them
    // running, and record their outcome under load_manifest, where they belong.
    if run.pending_checksums.is_some()
        && let Err(failure) = run.settle_checksums()
        && status == VmStatus::Succeeded
    {
        status = failed_status(&failure, cancel);
    }
    if let Some(settled) = run.settled_checksums.take()
        && let Some(load) = stages.iter_mut().find(|s| s.name == "load_manifest")
    {
        if let Some(result) = load.result.as_mut() {
            result["checksums_verified"] = Value::Bool(!settled.verified.is_empty());
            result["verified_checksums"] = Value::Array(settled.verified);
            result["checksums_verified_during_convert"] = Value::Bool(true);
            result["checksum_seconds"] = serde_json::json!(settled.seconds);
        }
        if let Some(text) = settled.failure {
            load.success = false;
            load.error = Some(text.clone());
            if !errors
                .iter()
                .any(|e: &Message| e.stage == "load_manifest" && e.message == text)
            {
                errors.push(message("load_manifest", &text));
            }
        }
    }

    // Overlays are scratch space: the output (or the source, for in-place repairs) holds the
    // result, so they go whatever happened.
    if let Some(crate::plan::FixPlan {
        mode: crate::plan::FixMode::Overlay { work_dir },
        ..
    }) = &plan.fix
        && work_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(work_dir)
    {
        run.warnings.push(message(
            "fix",
            &format!(
                "could not remove the work directory {}: {e}",
                work_dir.display()
            ),
        ));
    }
    let outcome = VmOutcome {
        vm_id: plan.vm_id.clone(),
        status,
        started_at,
        duration_seconds: secs(started),
        stages,
        artifacts: run.artifacts,
        warnings: run.warnings,
        errors,
        bytes_read: run.bytes_read,
        bytes_written: run.bytes_written,
        hooks: run.hooks,
    };
    events.send(Event::VmFinished {
        vm: plan.vm_id.clone(),
        status: outcome.status,
    });
    outcome
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
        self.events.send(Event::StageStarted {
            vm: self.plan.vm_id.clone(),
            stage: stage.label(),
        });
        let ran = hooks::run_stage(&self.plan.hooks, stage, self.cancel);
        self.events.send(Event::StageFinished {
            vm: self.plan.vm_id.clone(),
            stage: stage.label(),
            success: ran.failure.is_none() && ran.warnings.is_empty(),
        });
        self.hooks.extend(ran.outcomes);
        for w in ran.warnings {
            self.warn(stage.name(), w);
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

    /// Waits for checksums verified alongside convert and checks them. A mismatch is a
    /// load_manifest failure; it is reported once, however often this is called.
    fn settle_checksums(&mut self) -> Result<(), StageFailure> {
        if let Some(pending) = self.pending_checksums.take() {
            pending.background.hurry();
            let Ok((results, seconds)) = pending.handle.join() else {
                // A panic while hashing verified nothing: never publish on that.
                let text = "the checksum verification stopped unexpectedly".to_owned();
                self.settled_checksums = Some(SettledChecksums {
                    verified: Vec::new(),
                    seconds: 0.0,
                    failure: Some(text),
                });
                return self.settle_checksums();
            };
            let settled = match check_checksums(results) {
                Ok(verified) => SettledChecksums {
                    verified,
                    seconds,
                    failure: None,
                },
                Err(f) if f.interrupted => {
                    self.settled_checksums = Some(SettledChecksums {
                        verified: Vec::new(),
                        seconds,
                        failure: None,
                    });
                    return Err(f);
                }
                Err(f) => SettledChecksums {
                    verified: Vec::new(),
                    seconds,
                    failure: Some(f.message),
                },
            };
            self.settled_checksums = Some(settled);
        }
        match self
            .settled_checksums
            .as_ref()
            .and_then(|s| s.failure.clone())
        {
            Some(text) => Err(StageFailure {
                message: text,
                interrupted: false,
                result: None,
                stage: Some("load_manifest"),
            }),
            None => Ok(()),
        }
    }

    fn warn(&mut self, stage: &str, text: String) {
        self.events.send(Event::Warning {
            vm: self.plan.vm_id.clone(),
            message: text.clone(),
        });
        self.warnings.push(message(stage, &text));
    }

    /// Runs a command, records it, and turns "could not start" or cancellation into failures.
    fn exec(
        &mut self,
        cmd: &exec::Command,
        on_line: Option<&mut dyn FnMut(&str)>,
    ) -> Result<exec::Output, StageFailure> {
        let out = exec::run(
            cmd,
            Watch {
                cancel: Some(self.cancel),
                on_stdout_line: on_line,
            },
        )
        .map_err(|e| StageFailure::new(error_chain(&e)))?;
        self.commands.push(out.record.clone());
        if out.record.status == Status::Cancelled {
            return Err(StageFailure::interrupted());
        }
        Ok(out)
    }

    /// Probes the format, reads size and backing file, and (when asked) checks the source.
    fn source_facts(&mut self, idx: usize, check: bool) -> Result<SourceFacts, StageFailure> {
        if let Some(f) = &self.facts[idx]
            && (f.checked || !check)
        {
            return Ok(f.clone());
        }
        let disk = &self.plan.disks[idx];
        let q = self.plan.qemu_img.clone();
        let (driver, info) = match self.facts[idx].take() {
            Some(f) => (f.driver, f.info),
            None => {
                let out = self.probe_source(disk)?;
                if !out.record.success() {
                    return Err(StageFailure::new(format!(
                        "disk {}: qemu-img cannot open {}: {}",
                        disk.id,
                        disk.source.display(),
                        out.record.stderr_tail.trim()
                    )));
                }
                let probed = ImageInfo::parse(&out.stdout)
                    .map_err(|e| StageFailure::new(format!("disk {}: {e}", disk.id)))?;
                let driver = self.resolve_driver(disk, &probed.format)?;
                if driver == probed.format {
                    (driver, probed)
                } else {
                    // The probe guessed wrong (fixed VHD): read the image as what it is.
                    let info = self.info_as(disk, &driver)?;
                    (driver, info)
                }
            }
        };
        if let Some(backing) = &info.backing_filename {
            return Err(StageFailure::new(format!(
                "disk {}: {} has a backing file ({backing}); hyper2kvm converts standalone \
                 images only: flatten it first (qemu-img convert) or list the chain's base",
                disk.id,
                disk.source.display()
            )));
        }
        let mut checked = false;
        let format = SourceFormat::from_driver(&driver);
        if check && format.is_some_and(SourceFormat::checkable) {
            let out = self.exec(&q.check_cmd(&disk.source, &driver), None)?;
            let summary: CheckSummary = serde_json::from_slice(&out.stdout).unwrap_or_default();
            match CheckVerdict::from_exit_code(out.record.exit_code()) {
                CheckVerdict::Clean | CheckVerdict::Unsupported => {}
                CheckVerdict::LeaksOnly => self.warn(
                    "inspect",
                    format!(
                        "disk {}: qemu-img check found {} leaked cluster(s) in the source; they \
                         waste space but lose no data",
                        disk.id, summary.leaks
                    ),
                ),
                CheckVerdict::Corrupt => {
                    return Err(StageFailure::new(format!(
                        "disk {}: source {} is corrupt (qemu-img check: {} corruption(s)); \
                         refusing to convert it",
                        disk.id,
                        disk.source.display(),
                        summary.corruptions
                    )));
                }
                CheckVerdict::Failed => {
                    return Err(StageFailure::new(format!(
                        "disk {}: source {} failed qemu-img check (truncated or damaged image, \
                         which would convert with missing data read as zeros): {}",
                        disk.id,
                        disk.source.display(),
                        out.record.stderr_tail.trim()
                    )));
                }
            }
            checked = true;
        }
        let facts = SourceFacts {
            driver,
            info,
            checked,
        };
        self.facts[idx] = Some(facts.clone());
        Ok(facts)
    }

    /// The format probe. For a file that may be read through io_uring it tries io_uring first
    /// (while io_uring is not known to fail), which settles whether it works; when that probe
    /// fails the plain one decides: if it succeeds, io_uring was what failed.
    fn probe_source(&mut self, disk: &DiskPlan) -> Result<exec::Output, StageFailure> {
        let q = self.plan.qemu_img.clone();
        let candidate =
            self.io_uring != Some(false) && Aio::for_file(true, &disk.source) == Aio::IoUring;
        if candidate {
            let out = self.exec(&q.probe_cmd(&disk.source, Aio::IoUring), None)?;
            if out.record.success() {
                self.io_uring = Some(true);
                return Ok(out);
            }
        }
        let out = self.exec(&q.probe_cmd(&disk.source, Aio::Threads), None)?;
        if candidate && out.record.success() {
            self.io_uring = Some(false);
        }
        Ok(out)
    }

    /// How qemu-img should read `image`: through io_uring when a probe showed it works and the
    /// file's size allows it.
    fn aio(&self, image: &Path) -> Aio {
        Aio::for_file(self.io_uring == Some(true), image)
    }

    /// `qemu-img info -f <driver>`.
    fn info_as(&mut self, disk: &DiskPlan, driver: &str) -> Result<ImageInfo, StageFailure> {
        let out = self.exec(&self.plan.qemu_img.info_cmd(&disk.source, driver), None)?;
        if !out.record.success() {
            return Err(StageFailure::new(format!(
                "disk {}: qemu-img cannot read {} as {}: {}",
                disk.id,
                disk.source.display(),
                driver,
                out.record.stderr_tail.trim()
            )));
        }
        ImageInfo::parse(&out.stdout)
            .map_err(|e| StageFailure::new(format!("disk {}: {e}", disk.id)))
    }

    /// Reconciles the probed format with the manifest's `source_format`.
    fn resolve_driver(&mut self, disk: &DiskPlan, probed: &str) -> Result<String, StageFailure> {
        let declared = disk.declared.driver();
        if probed == declared {
            return Ok(probed.to_owned());
        }
        if probed == "raw"
            && disk.declared == SourceFormat::Vhd
            && qemu_img::has_vhd_footer(&disk.source)
        {
            // A fixed VHD: raw data plus a 512-byte footer that qemu-img probes as raw.
            return Ok(declared.to_owned());
        }
        if probed == "raw"
            && disk.declared == SourceFormat::Vmdk
            && disk.source.to_string_lossy().ends_with("-flat.vmdk")
        {
            self.warn(
                "inspect",
                format!(
                    "disk {}: {} is a flat VMDK extent without its descriptor; converting it as \
                     raw data",
                    disk.id,
                    disk.source.display()
                ),
            );
            return Ok("raw".to_owned());
        }
        let detected = SourceFormat::from_driver(probed)
            .map(|f| f.name().to_owned())
            .unwrap_or_else(|| probed.to_owned());
        Err(StageFailure::new(format!(
            "disk {}: source_format is {} but qemu-img detects {} in {}; fix source_format in \
             the manifest",
            disk.id,
            disk.declared,
            detected,
            disk.source.display()
        )))
    }
}

fn stage_load(run: &mut Run<'_>) -> Result<Value, StageFailure> {
    let plan = run.plan;
    let to_verify: Vec<(String, PathBuf, String)> = plan
        .disks
        .iter()
        .filter_map(|d| {
            d.checksum
                .as_ref()
                .map(|c| (d.id.clone(), d.given_path.clone(), c.clone()))
        })
        .collect();
    run.bytes_read += to_verify
        .iter()
        .filter_map(|(_, path, _)| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum::<u64>();
    let mut verified = Vec::new();
    let deferred = overlaps_checksums(plan);
    if deferred {
        // The display shows the conversion's progress meanwhile: two activities on one VM's
        // bar would make it jump back and forth.
        let (cancel, events, vm) = (run.cancel.clone(), EventSink::discard(), plan.vm_id.clone());
        let background = Arc::new(checksum::Background::new());
        let lowered = Arc::clone(&background);
        run.pending_checksums = Some(PendingChecksums {
            handle: std::thread::spawn(move || {
                let started = Instant::now();
                let results = hash_disks(&to_verify, &cancel, &events, &vm, Some(&lowered));
                (results, secs(started))
            }),
            background,
        });
    } else {
        let results = hash_disks(&to_verify, run.cancel, run.events, &plan.vm_id, None);
        verified = check_checksums(results)?;
    }
    Ok(serde_json::json!({
        "manifest_version": plan.manifest_version,
        "manifest_path": plan.manifest_path,
        "source_provider": plan.source_provider,
        "source_vm_id": plan.source_vm_id,
        "source_vm_name": plan.vm_name,
        "disks_count": plan.disks.len(),
        "firmware": plan.firmware,
        "os_hint": plan.os_hint,
        "profile": plan.profile_chain.first(),
        "checksums_verified": !verified.is_empty(),
        "verified_checksums": verified,
    }))
}

/// Hashes the disks (in parallel) and pairs each digest with the one the manifest expects;
/// `background` as for [`checksum::sha256_file`].
fn hash_disks(
    to_verify: &[(String, PathBuf, String)],
    cancel: &CancelToken,
    events: &EventSink,
    vm: &str,
    background: Option<&checksum::Background>,
) -> Vec<ChecksumResult> {
    to_verify
        .par_iter()
        .map(|(id, path, expected)| {
            let total = disk_size(path).unwrap_or(0);
            let actual = checksum::sha256_file(path, Some(cancel), background, |done| {
                events.send(Event::Progress {
                    vm: vm.to_owned(),
                    disk: id.clone(),
                    activity: "checksum",
                    done,
                    total,
                })
            });
            (id.clone(), expected.clone(), actual)
        })
        .collect()
}

/// The verified checksums for the report, or the first failure.
fn check_checksums(results: Vec<ChecksumResult>) -> Result<Vec<Value>, StageFailure> {
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
        verified.push(serde_json::json!({"disk_id": id, "checksum": actual}));
    }
    Ok(verified)
}

fn stage_inspect(run: &mut Run<'_>) -> Result<Value, StageFailure> {
    let check = run.plan.inspect.as_ref().is_some_and(|i| i.check_source);
    let mut disks = Vec::new();
    for idx in 0..run.plan.disks.len() {
        let disk = &run.plan.disks[idx];
        let actual = disk_size(&disk.given_path).map_err(|e| {
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
            run.warn("inspect", text);
        }
        let facts = run.source_facts(idx, check)?;
        let disk = &run.plan.disks[idx];
        disks.push(serde_json::json!({
        "id": disk.id,
        "source_format": disk.declared,
        "detected_format": SourceFormat::from_driver(&facts.driver).map(SourceFormat::name),
        "expected_bytes": disk.expected_bytes,
        "actual_bytes": actual,
        "size_match": size_match,
        "size_human": human_bytes(actual),
        "virtual_size": facts.info.virtual_size,
        "vmdk_create_type": facts.info.vmdk_create_type(),
        "path": disk.source,
        "integrity_check": if facts.checked { "passed" } else { "skipped" },
            }));
    }
    let mut result = serde_json::json!({ "disks": disks });
    if run.plan.inspect.as_ref().is_some_and(|i| i.guest_info) {
        // Like upstream, what the guest turns out to be is information: a guest libguestfs
        // cannot read is a warning here (the fix stage, when enabled, makes it an error).
        match inspect_guest(run) {
            Ok(info) => result["guest"] = serde_json::to_value(info).unwrap_or(Value::Null),
            Err(f) if f.interrupted => return Err(f),
            Err(f) => {
                result["guest_inspection_error"] = Value::String(f.message.clone());
                run.warn("inspect", format!("guest inspection failed: {}", f.message));
            }
        }
    }
    Ok(result)
}

/// The libguestfs environment, which the plan provides whenever a stage needs it.
fn guest_env(plan: &VmPlan) -> Result<&GuestEnv, StageFailure> {
    plan.guest_env
        .as_ref()
        .ok_or_else(|| StageFailure::new("internal: libguestfs was not located at plan time"))
}

fn guest_failure(e: &dyn std::error::Error, interrupted: bool) -> StageFailure {
    if interrupted {
        StageFailure::interrupted()
    } else {
        StageFailure::new(error_chain(e))
    }
}

/// Looks inside the guest read-only: OS, filesystems, mount points, kernels.
fn inspect_guest(run: &mut Run<'_>) -> Result<GuestInfo, StageFailure> {
    let plan = run.plan;
    let env = guest_env(plan)?;
    let mut drives = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, false)?;
        drives.push(Drive {
            path: plan.disks[idx].source.clone(),
            format: facts.driver,
            readonly: true,
        });
    }
    let cancel = run.cancel;
    let mut session = Session::launch(env, &drives, cancel)
        .map_err(|e| guest_failure(&e, matches!(e, GuestError::Cancelled)))?;
    let result = guest_inspect::inspect(&mut session)
        .map_err(|e| {
            let interrupted = matches!(e, InspectError::Guest(GuestError::Cancelled));
            guest_failure(&e, interrupted)
        })
        .and_then(|mut info| {
            // Mounting read-only lists the installed kernels; an unmountable guest still has
            // the rest of its inspection data.
            if let Err(e) = guest_inspect::mount(&mut session, &mut info, true) {
                if matches!(e, InspectError::Guest(GuestError::Cancelled)) {
                    return Err(StageFailure::interrupted());
                }
                run.warnings.push(message("inspect", &error_chain(&e)));
            }
            Ok(info)
        });
    let (records, finished) = session.finish();
    run.commands.extend(records);
    if let Err(e) = finished
        && result.is_ok()
    {
        return Err(guest_failure(&e, matches!(e, GuestError::Cancelled)));
    }
    result
}

/// Offline guest repair, into overlays (convert on) or into the sources (convert off).
fn stage_fix(run: &mut Run<'_>) -> Result<Value, StageFailure> {
    let plan = run.plan;
    let fix = plan.fix.as_ref().expect("stage runs only when planned");
    let env = guest_env(plan)?;
    let mut drives = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, true)?;
        let disk = &plan.disks[idx];
        match &fix.mode {
            FixMode::Overlay { work_dir } => {
                std::fs::create_dir_all(work_dir).map_err(|e| {
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
    let cancel = run.cancel;
    let mut session = Session::launch(env, &drives, cancel)
        .map_err(|e| guest_failure(&e, matches!(e, GuestError::Cancelled)))?;
    let result = guest_repair::repair(&mut session, &fix.settings, false);
    let (records, finished) = session.finish();
    run.commands.extend(records);
    let outcome = result.map_err(|e| {
        let interrupted = matches!(
            e,
            RepairError::Guest(GuestError::Cancelled)
                | RepairError::Inspect(InspectError::Guest(GuestError::Cancelled))
        );
        guest_failure(&e, interrupted)
    })?;
    if let Err(e) = finished {
        return Err(guest_failure(&e, matches!(e, GuestError::Cancelled)));
    }
    for note in &outcome.notes {
        run.warn("fix", note.clone());
    }
    if let Some(skipped) = &outcome.skipped {
        run.warn("fix", skipped.clone());
    }
    run.events.send(Event::GuestChanges {
        vm: plan.vm_id.clone(),
        changes: outcome.changes.len(),
    });
    let mut value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
    value["mode"] = Value::String(
        match fix.mode {
            FixMode::Overlay { .. } => "overlay",
            FixMode::InPlace { .. } => "in_place",
        }
        .to_owned(),
    );
    Ok(value)
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
    let mut run = Run {
        plan,
        cancel,
        events: &events,
        warnings: Vec::new(),
        commands: Vec::new(),
        facts: vec![None; plan.disks.len()],
        io_uring: None,
        overlays: vec![None; plan.disks.len()],
        hooks: Vec::new(),
        artifacts: Vec::new(),
        bytes_read: 0,
        bytes_written: 0,
        pending_checksums: None,
        settled_checksums: None,
    };
    let env = guest_env(plan).map_err(|f| f.message)?;
    let mut drives = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, false).map_err(|f| f.message)?;
        drives.push(Drive {
            path: plan.disks[idx].source.clone(),
            format: facts.driver,
            readonly: true,
        });
    }
    let mut session = Session::launch(env, &drives, cancel).map_err(|e| error_chain(&e))?;
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
        let part = crate::plan::part_path(&dest);
        let cmd = crate::exec::Command::new("cp")
            .args([
                "--reflink=auto",
                "--sparse=always",
                "--preserve=mode,timestamps",
            ])
            .arg(&file)
            .arg(&part);
        let out = run.exec(&cmd, None).inspect_err(|_| remove_part(&part))?;
        let failure = if !out.record.success() {
            Some(out.record.to_string())
        } else {
            finalize(&part, &dest, false).err()
        };
        if let Some(why) = failure {
            remove_part(&part);
            return Err(StageFailure::new(format!(
                "disk {}: could not back up {}: {why}",
                disk.id,
                file.display()
            )));
        }
    }
    Ok(())
}

fn stage_convert(run: &mut Run<'_>) -> Result<Value, StageFailure> {
    let plan = run.plan;
    let convert = plan.convert.as_ref().expect("stage runs only when planned");
    std::fs::create_dir_all(&plan.output_dir).map_err(|e| {
        StageFailure::new(format!(
            "cannot create output directory {}: {e}",
            plan.output_dir.display()
        ))
    })?;
    let mut converted = Vec::new();
    for idx in 0..plan.disks.len() {
        let facts = run.source_facts(idx, convert.check_source)?;
        let disk = &plan.disks[idx];
        let (Some(output), Some(part)) = (disk.output.clone(), disk.part_path()) else {
            continue;
        };
        // storage_mapping.disk_mappings may place this disk outside the output directory.
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StageFailure::new(format!(
                    "disk {}: cannot create directory {}: {e}",
                    disk.id,
                    dir.display()
                ))
            })?;
        }
        // With guest repairs, convert flattens the overlay (repairs plus the untouched source).
        let (source, driver) = match &run.overlays[idx] {
            Some(overlay) => (overlay.clone(), "qcow2".to_owned()),
            None => (disk.source.clone(), facts.driver.clone()),
        };
        let total = facts.info.virtual_size;
        let spec = plan
            .convert_spec(
                &source,
                &driver,
                run.aio(&source),
                &part,
                run.io_uring == Some(true),
                Some(total),
            )
            .expect("convert is planned");
        // The disk starts writing the output while qemu-img still produces it.
        let writeback = crate::atomic::Writeback::start(part.clone());
        if let Some(create) = plan.qemu_img.create_target_cmd(&spec) {
            write_part(run, &create, None, &part, |record| {
                format!("disk {}: could not create the output: {record}", disk.id)
            })?;
        }
        let cmd = plan.qemu_img.convert_cmd(&spec);
        let (vm, disk_id, events) = (plan.vm_id.clone(), disk.id.clone(), run.events);
        let mut on_line = |piece: &str| {
            if let Some(fraction) = qemu_img::parse_progress(piece) {
                events.send(Event::Progress {
                    vm: vm.clone(),
                    disk: disk_id.clone(),
                    activity: "convert",
                    done: (fraction * total as f64) as u64,
                    total,
                });
            }
        };
        write_part(run, &cmd, Some(&mut on_line), &part, |record| {
            format!("disk {}: conversion failed: {record}", disk.id)
        })?;
        let kicked = writeback.finish();
        tracing::debug!("disk {}: {kicked} early writebacks", disk.id);
        // Nothing is published before the source is known to be the one the manifest names.
        if let Err(f) = run.settle_checksums() {
            remove_part(&part);
            return Err(f);
        }
        if let Err(e) = finalize(&part, &output, plan.overwrite) {
            remove_part(&part);
            return Err(StageFailure::new(format!("disk {}: {e}", disk.id)));
        }
        let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
        // qemu-img's actual size counts every extent of a multi-file VMDK, not just the
        // descriptor it was given.
        let source_size = facts.info.actual_size.unwrap_or_else(|| {
            std::fs::metadata(&disk.source)
                .map(|m| m.len())
                .unwrap_or(0)
        });
        run.bytes_read += source_size;
        run.bytes_written += size;
        run.artifacts.push(Artifact {
            kind: "converted_disk",
            path: output.clone(),
            disk_id: disk.id.clone(),
            format: convert.format.name().to_owned(),
            size_bytes: size,
            size_human: human_bytes(size),
            boot_order_hint: disk.boot_order_hint,
            compressed: convert.compression.is_some(),
        });
        converted.push(serde_json::json!({
            "disk_id": disk.id,
            "input_format": SourceFormat::from_driver(&facts.driver).map(SourceFormat::name),
            "output_format": convert.format,
            "output_path": output,
            "output_size_bytes": size,
            "output_size_human": human_bytes(size),
            "boot_order_hint": disk.boot_order_hint,
        }));
    }
    Ok(serde_json::json!({
        "disks_converted": converted.len(),
        "output_format": convert.format,
        "output_directory": plan.output_dir,
        "compressed": convert.compression.is_some(),
        "compression": convert.compression,
        "converted_disks": converted,
    }))
}

fn stage_validate(run: &mut Run<'_>) -> Result<Value, StageFailure> {
    let plan = run.plan;
    let validate = plan
        .validate
        .as_ref()
        .expect("stage runs only when planned");
    let format = plan
        .convert
        .as_ref()
        .expect("validate is planned only with convert")
        .format
        .name();
    let q = plan.qemu_img.clone();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for idx in 0..plan.disks.len() {
        let disk = &plan.disks[idx];
        let Some(output) = disk.output.clone() else {
            continue;
        };
        if !output.is_file() {
            failures.push(format!(
                "Disk {}: Output file missing: {}",
                disk.id,
                output.display()
            ));
            results.push(
                serde_json::json!({"disk_id": disk.id, "output_path": output,
                "exists": false, "integrity_check": "failed", "content_check": "skipped"}),
            );
            continue;
        }
        let mut integrity = "skipped";
        if format == "qcow2" {
            let out = run.exec(&q.check_cmd(&output, format), None)?;
            match CheckVerdict::from_exit_code(out.record.exit_code()) {
                CheckVerdict::Clean => integrity = "passed",
                CheckVerdict::LeaksOnly => {
                    integrity = "passed";
                    run.warn(
                        "validate",
                        format!(
                            "disk {}: the output has leaked clusters (no data lost)",
                            disk.id
                        ),
                    );
                }
                _ => {
                    integrity = "failed";
                    failures.push(format!(
                        "disk {}: qemu-img check failed on the output {}: {}",
                        disk.id,
                        output.display(),
                        out.record
                    ));
                }
            }
        }
        let mut content = "skipped";
        if validate.compare {
            // The output must equal what was converted: the repaired overlay when fix ran.
            let (source, driver) = match run.overlays[idx].clone() {
                Some(overlay) => (overlay, "qcow2".to_owned()),
                None => {
                    let driver = match &run.facts[idx] {
                        Some(f) => f.driver.clone(),
                        None => run.source_facts(idx, false)?.driver,
                    };
                    (plan.disks[idx].source.clone(), driver)
                }
            };
            let virtual_size = match &run.facts[idx] {
                Some(f) => f.info.virtual_size,
                None => run.source_facts(idx, false)?.info.virtual_size,
            };
            // A repaired overlay is compared whole: a range window opened through a json: spec
            // does not open the overlay's backing file, so its unrepaired clusters read as zeros.
            let splittable = run.overlays[idx].is_none();
            let (verdict, detail) = compare_content(
                run,
                (&source, &driver, run.aio(&source)),
                (&output, format, run.aio(&output)),
                virtual_size,
                splittable,
            )?;
            content = verdict;
            if let Some(detail) = detail {
                failures.push(format!("disk {}: {detail}", disk.id));
            }
        }
        let disk = &plan.disks[idx];
        results.push(
            serde_json::json!({"disk_id": disk.id, "output_path": output, "exists": true,
            "integrity_check": integrity, "content_check": content}),
        );
    }
    if !failures.is_empty() {
        return Err(StageFailure::new(failures.join("; ")));
    }
    let mut result = serde_json::json!({
        "disks_validated": results.len(),
        "all_passed": true,
        "validation_results": results,
    });
    if let Some(boot_test) = &validate.boot_test {
        run_boot_test(run, boot_test, &mut result)?;
    }
    Ok(result)
}

/// Boots the outputs once; a guest that does not boot fails the stage, with the console in its
/// result.
fn run_boot_test(
    run: &mut Run<'_>,
    plan: &crate::boot_test::BootTestPlan,
    result: &mut Value,
) -> Result<(), StageFailure> {
    use crate::boot_test::BootResult;
    let vm = run.plan.vm_id.clone();
    run.events.send(Event::StageStarted {
        vm: vm.clone(),
        stage: "boot_test",
    });
    let ran = crate::boot_test::run(plan, run.cancel)
        .map_err(|e| StageFailure::new(format!("boot test: {e}")));
    let ran = match ran {
        Ok(r) => r,
        Err(f) => {
            run.events.send(Event::StageFinished {
                vm,
                stage: "boot_test",
                success: false,
            });
            return Err(f);
        }
    };
    run.commands.extend(ran.record);
    let outcome = ran.outcome;
    run.events.send(Event::StageFinished {
        vm,
        stage: "boot_test",
        success: outcome.result == BootResult::Passed,
    });
    result["boot_test"] = serde_json::to_value(&outcome).unwrap_or(Value::Null);
    match outcome.result {
        BootResult::Passed => Ok(()),
        BootResult::Interrupted => Err(StageFailure::interrupted()),
        BootResult::Failed => {
            result["all_passed"] = Value::Bool(false);
            Err(StageFailure {
                message: format!("boot test failed: {}", outcome.message),
                interrupted: false,
                result: Some(result.clone()),
                stage: None,
            })
        }
    }
}

/// Writes the libvirt domain for the converted disks (atomically) and records it as an artifact.
fn stage_domain(run: &mut Run<'_>) -> Result<Value, StageFailure> {
    let plan = run.plan;
    let domain = plan.domain.as_ref().expect("stage runs only when planned");
    let xml = crate::libvirt::emit::domain_xml(domain);
    crate::atomic::write(&domain.path, xml.as_bytes())
        .map_err(|e| StageFailure::new(error_chain(&e)))?;
    let size = xml.len() as u64;
    run.bytes_written += size;
    run.artifacts.push(Artifact {
        kind: "libvirt_domain",
        path: domain.path.clone(),
        disk_id: String::new(),
        format: "xml".to_owned(),
        size_bytes: size,
        size_human: human_bytes(size),
        boot_order_hint: 0,
        compressed: false,
    });
    Ok(serde_json::json!({
        "path": domain.path,
        "name": domain.name,
        "uuid": domain.uuid,
        "uuid_origin": domain.uuid_origin,
        "memory_kib": domain.memory_kib,
        "vcpus": domain.vcpus,
        "firmware": domain.firmware,
        "disks": domain.disks,
        "interfaces": domain.interfaces,
        "define_with": format!("virsh define {}", crate::exec::quote_argv(&[domain.path.display().to_string()])),
    }))
}

/// Images at least this large are compared in ranges, one process per core.
const SPLIT_COMPARE_MIN: u64 = 1 << 30;
/// Range boundaries fall on multiples of this (qemu-img compare reads 2 MiB at a time).
const COMPARE_ALIGN: u64 = 2 << 20;

/// Compares the guest-visible content of source and output: `identical`, `different` or
/// `error`, with the failure's text. `qemu-img compare` runs on one core; on a machine with more,
/// a large image is split into that many ranges (at most 4) compared at once, so this pass takes
/// a fraction of the time. A mismatch names its offset in the whole image.
fn compare_content(
    run: &mut Run<'_>,
    source: (&Path, &str, Aio),
    output: (&Path, &str, Aio),
    virtual_size: u64,
    splittable: bool,
) -> Result<(&'static str, Option<String>), StageFailure> {
    let q = run.plan.qemu_img.clone();
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let mut ranges = Vec::new();
    if splittable && parts > 1 && virtual_size >= SPLIT_COMPARE_MIN {
        let chunk = (virtual_size / parts).div_ceil(COMPARE_ALIGN) * COMPARE_ALIGN;
        let mut offset = 0;
        while offset < virtual_size {
            let last = offset + chunk >= virtual_size;
            let size = (!last).then_some(chunk);
            match q.compare_range_cmd(source, output, offset, size) {
                Some(cmd) => ranges.push((offset, cmd)),
                None => {
                    ranges.clear();
                    break;
                }
            }
            offset += chunk;
        }
    }
    if ranges.len() < 2 {
        ranges = vec![(0, q.compare_cmd(source, output))];
    }
    let cancel = run.cancel;
    let outs: Vec<Result<exec::Output, exec::ExecError>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|(_, cmd)| {
                s.spawn(move || {
                    exec::run(
                        cmd,
                        Watch {
                            cancel: Some(cancel),
                            on_stdout_line: None,
                        },
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("exec::run does not panic"))
            .collect()
    });
    let mut verdict = ("identical", None);
    for ((offset, _), out) in ranges.iter().zip(outs) {
        let out = out.map_err(|e| StageFailure::new(error_chain(&e)))?;
        run.commands.push(out.record.clone());
        if out.record.status == Status::Cancelled {
            return Err(StageFailure::interrupted());
        }
        let found = match out.record.exit_code() {
            Some(0) => continue,
            Some(1) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let text = match qemu_img::mismatch_offset(&stdout) {
                    Some(at) => format!("Content mismatch at offset {}!", offset + at),
                    None => out.record.stdout_summary(&out.stdout),
                };
                (
                    "different",
                    Some(format!(
                        "the output's content differs from the source: {text}"
                    )),
                )
            }
            _ => (
                "error",
                Some(format!(
                    "could not compare the output with the source: {}",
                    out.record
                )),
            ),
        };
        // The first range in disk order that failed names the failure; an error beats a
        // difference found elsewhere.
        if verdict.0 == "identical" || (found.0 == "error" && verdict.0 != "error") {
            verdict = found;
        }
    }
    Ok(verdict)
}

trait StdoutSummary {
    fn stdout_summary(&self, stdout: &[u8]) -> String;
}

impl StdoutSummary for CommandRecord {
    /// `qemu-img compare` says where content differs on stdout ("Content mismatch at offset N!").
    fn stdout_summary(&self, stdout: &[u8]) -> String {
        let text = String::from_utf8_lossy(stdout);
        let line = text.lines().last().unwrap_or("").trim().to_owned();
        if line.is_empty() {
            self.to_string()
        } else {
            line
        }
    }
}

/// Flushes a finished `.part` file to disk and moves it to its final name; without `overwrite`,
/// never replaces a file that appeared in the meantime. The writers (qemu-img, cp) do not flush,
/// and without it a crash could leave a final name over data that never reached the disk.
fn finalize(part: &Path, output: &Path, overwrite: bool) -> Result<(), String> {
    crate::atomic::sync_data(part)
        .map_err(|e| format!("could not flush {} to disk: {e}", part.display()))?;
    let result = if overwrite {
        std::fs::rename(part, output)
    } else {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            part,
            nix::fcntl::AT_FDCWD,
            output,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(std::io::Error::from)
    };
    result.map_err(|e| {
        format!(
            "could not move {} to {}: {e}",
            part.display(),
            output.display()
        )
    })?;
    if let Some(dir) = output.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Runs a command that writes `part`; when it cannot run or fails, `part` is removed and the
/// stage fails (with `failed`'s text for a command that ran and failed).
fn write_part(
    run: &mut Run<'_>,
    cmd: &exec::Command,
    on_line: Option<&mut dyn FnMut(&str)>,
    part: &Path,
    failed: impl FnOnce(&CommandRecord) -> String,
) -> Result<(), StageFailure> {
    let out = run.exec(cmd, on_line).inspect_err(|_| remove_part(part))?;
    if !out.record.success() {
        remove_part(part);
        return Err(StageFailure::new(failed(&out.record)));
    }
    Ok(())
}

fn remove_part(part: &Path) {
    if let Err(e) = std::fs::remove_file(part)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove {}: {e}", part.display());
    }
}

fn message(stage: &str, text: &str) -> Message {
    Message {
        stage: stage.to_owned(),
        message: text.to_owned(),
        timestamp: now_iso(),
    }
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// The error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Local time as RFC 3339 (UTC when the local offset cannot be determined).
pub fn now_iso() -> String {
    let now = time::OffsetDateTime::now_local().unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The size of a disk image file, or of a block device (whose file size is 0), in bytes.
pub fn disk_size(path: &Path) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    std::fs::File::open(path)?.seek(SeekFrom::End(0))
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(human_bytes(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }

    #[test]
    fn finalize_refuses_to_replace_without_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("d0.qcow2.part");
        let out = dir.path().join("d0.qcow2");
        std::fs::write(&part, b"new").expect("write");
        std::fs::write(&out, b"old").expect("write");
        assert!(finalize(&part, &out, false).is_err());
        assert_eq!(std::fs::read(&out).expect("read"), b"old");
        finalize(&part, &out, true).expect("overwrite");
        assert_eq!(std::fs::read(&out).expect("read"), b"new");
    }
}
