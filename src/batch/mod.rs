//! Batch mode: many VMs, converted in parallel with per-VM isolation.
//!
//! The batch is decided before its first disk is touched: the batch manifest is validated, every
//! enabled VM's manifest is loaded, layered (`shared_config`, `overrides`) and planned, and VMs
//! that would write the same file are refused. With `continue_on_error: false` any VM that cannot
//! be planned aborts the batch; otherwise it is recorded as failed and the rest run.
//!
//! A dedicated rayon pool of `min(parallel_limit, runnable VMs)` workers takes VMs from one queue
//! in (priority, position) order, so start order is deterministic. Workers never print: they send
//! events, write their VM's report, and return a [`VmResult`]. After every VM a checkpoint is
//! written atomically, which `--batch-resume` uses to skip VMs whose outputs are complete and
//! validated. Cancellation (SIGINT/SIGTERM) stops new VMs from starting and kills running
//! conversions through the shared [`CancelToken`].

pub mod checkpoint;
pub mod k8s;
pub mod shard;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::events::EventSink;
use crate::events::VmStatus;
use crate::exec::CancelToken;
use crate::manifest::{self as vm_manifest, Layers, Loaded, MacAddr};
use crate::outcome::VmOutcome;
use crate::pipeline;
use crate::plan::{self, PlanOptions, VmPlan};
use crate::report;
use crate::report::batch::{ArtifactRecord, BatchOutcome, BatchVmStatus, StageTiming, VmResult};

pub use crate::manifest::batch::{BatchManifest, BatchManifestError, VmEntry};

/// Command-line choices that override the batch manifest.
#[derive(Clone, Debug, Default)]
pub struct BatchOptions {
    pub parallel: Option<usize>,
    pub continue_on_error: Option<bool>,
    pub resume: bool,
    pub overwrite: bool,
    /// `--connect`: the libvirt host of every VM with libvirt_integration.
    pub connect: Option<String>,
    pub dry_run: bool,
    /// `--output-dir`: replaces `shared_config.output_directory`.
    pub output_dir: Option<PathBuf>,
    /// `--allow-in-place` and `--no-disk-backup`, for every VM.
    pub in_place: plan::InPlaceConsent,
    /// `--batch-shard I/N`: run only this shard's VMs, with its own reports and checkpoint.
    pub shard: Option<shard::ShardSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Manifest(#[from] BatchManifestError),
    #[error(
        "batch {path} cannot start ({} problem{}):\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.iter().map(|p| format!("  - {}", p.replace('\n', "\n    "))).collect::<Vec<_>>().join("\n")
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error(transparent)]
    Tool(#[from] crate::exec::ExecError),
    /// The boot test cannot run on this host (no qemu-system, no OVMF for a UEFI VM).
    #[error(transparent)]
    BootTestTool(crate::boot_test::BootTestError),
}

/// A VM of the batch after loading and planning.
enum VmPrep {
    Run(Box<VmPlan>, Option<String>),
    Reuse(Box<VmResult>),
    Failed(String),
    Skipped,
}

/// A batch with everything decided before its first disk is touched.
pub struct PreparedBatch {
    batch: BatchManifest,
    parallel_limit: usize,
    continue_on_error: bool,
    resume: bool,
    report_dir: PathBuf,
    vms: Vec<(VmEntry, VmPrep)>,
    shard: Option<ShardRun>,
}

/// What a sharded run knows of the whole batch.
#[derive(Clone, Debug)]
pub struct ShardRun {
    pub spec: shard::ShardSpec,
    pub loads: Vec<shard::ShardLoad>,
    pub digest: String,
    /// Every VM of the batch with its shard, in file order.
    pub all: Vec<(String, usize)>,
}

/// Loads and plans a batch. Returns the prepared batch or every reason it cannot start.
pub fn prepare(path: &Path, opts: &BatchOptions) -> Result<PreparedBatch, BatchError> {
    let batch = crate::manifest::batch::load(path)?;
    let parallel_limit = opts.parallel.unwrap_or(batch.parallel_limit).max(1);
    let continue_on_error = opts.continue_on_error.unwrap_or(batch.continue_on_error);
    let shared_out = opts
        .output_dir
        .as_ref()
        .map(|d| crate::config::absolute(d))
        .or_else(|| batch.output_directory.clone());
    let base_report_dir = shared_out.clone().unwrap_or_else(|| batch.dir.clone());
    let sharding = match opts.shard {
        Some(spec) => Some(plan_shards(&batch, spec, shared_out.as_deref())?),
        None => None,
    };
    let report_dir = match &sharding {
        Some(s) => base_report_dir
            .join(shard::SHARDS_DIR)
            .join(s.run.spec.dir_name()),
        None => base_report_dir.clone(),
    };
    let checkpoint_file = checkpoint::path(&report_dir, &batch.batch_id);
    if !opts.resume && !opts.overwrite && !opts.dry_run && checkpoint_file.is_file() {
        return Err(BatchError::Invalid {
            path: batch.path.clone(),
            problems: vec![format!(
                "batch {} already has a checkpoint from an earlier run ({}); pass --batch-resume \
                 to finish that run, or --overwrite to start the batch over",
                batch.batch_id,
                checkpoint_file.display()
            )],
        });
    }
    let previous = match (&sharding, opts.resume) {
        (_, false) => HashMap::new(),
        (None, true) => checkpoint::load(&report_dir, &batch.batch_id),
        // A VM may have been converted by another shard of an earlier layout (before a shard
        // was added): every shard's checkpoint under the batch's report directory counts, its
        // own first.
        (Some(_), true) => checkpoint::load_shards(&base_report_dir, &report_dir, &batch.batch_id),
    };

    let mut problems: Vec<String> = Vec::new();
    let mut vms = Vec::new();
    // libguestfs is found and KVM probed once, for the first VM that needs them.
    let mut guest_env = None;
    // MACs of the VMs planned so far, in order, so a regenerated MAC is unique in the batch.
    let mut reserved_macs: BTreeSet<MacAddr> = BTreeSet::new();
    for (pos, entry) in batch.vms.iter().enumerate() {
        if let Some(s) = &sharding
            && s.run.all[pos].1 != s.run.spec.index
        {
            // Another shard's VM: its MACs are taken, as if it had been planned here.
            reserved_macs.extend(s.macs[pos].iter().copied());
            continue;
        }
        if !entry.enabled {
            vms.push((entry.clone(), VmPrep::Skipped));
            continue;
        }
        let prepared = match load_vm(&batch, entry) {
            Err(message) => VmPrep::Failed(message),
            Ok(loaded) => {
                let fingerprint = fingerprint(&loaded);
                match previous.get(&entry.id) {
                    Some(prev) if reusable(prev, fingerprint.as_deref()) => {
                        let mut reused = prev.clone();
                        reused.from_checkpoint = true;
                        // Its place on the earlier run's timeline says nothing about this one.
                        reused.start_offset_seconds = None;
                        reused.slot = None;
                        reused.index = entry.index;
                        reused.priority = entry.priority;
                        reserved_macs.extend(reused.macs.iter().copied());
                        VmPrep::Reuse(Box::new(reused))
                    }
                    _ => {
                        if guest_env.is_none() && plan::needs_guest(&loaded.manifest) {
                            // A dry run starts nothing: no KVM probe.
                            guest_env = Some(if opts.dry_run {
                                plan::guest_env_unprobed()?
                            } else {
                                plan::guest_env()?
                            });
                        }
                        let plan_opts = PlanOptions {
                            output_dir_override: None,
                            default_output_dir: shared_out.as_ref().map(|d| d.join(&entry.id)),
                            // A VM rerun on resume may replace what its own earlier run
                            // left; a VM the checkpoint does not know may not.
                            overwrite: opts.overwrite || previous.contains_key(&entry.id),
                            dry_run: opts.dry_run,
                            preview_guest: false,
                            in_place: opts.in_place,
                            vm_id: Some(entry.id.clone()),
                            batch_id: Some(batch.batch_id.clone()),
                            guest_env: guest_env.clone(),
                            libvirt_uri: opts.connect.clone(),
                            // Only an explicit --overwrite replaces another VM's domain.
                            replace_domains: opts.overwrite,
                            reserved_macs: reserved_macs.clone(),
                        };
                        match plan::plan(&loaded, &plan_opts) {
                            Ok(p) => {
                                reserved_macs.extend(p.macs());
                                VmPrep::Run(Box::new(p), fingerprint)
                            }
                            Err(plan::PlanError::Tool(t)) => return Err(BatchError::Tool(t)),
                            // A host without what the boot test needs fails every VM that
                            // asks for it: stop before the first disk, like a missing tool.
                            Err(plan::PlanError::BootTest(e)) if e.is_environment() => {
                                return Err(BatchError::BootTestTool(e));
                            }
                            Err(e) => VmPrep::Failed(e.to_string()),
                        }
                    }
                }
            }
        };
        if let VmPrep::Failed(message) = &prepared
            && !continue_on_error
        {
            problems.push(format!("vm {}: {message}", entry.id));
        }
        vms.push((entry.clone(), prepared));
    }

    // Two VMs must never write the same file, also through two names for one directory. (Their
    // `.part` files meet only where their outputs do: no output name ends in `.part`.)
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (entry, prepared) in &vms {
        let paths: Vec<PathBuf> = match prepared {
            VmPrep::Run(plan, _) => plan
                .disks
                .iter()
                .filter_map(|d| d.output.clone())
                .chain(plan.report_path.clone())
                .chain(plan.domain.as_ref().map(|d| d.path.clone()))
                .collect(),
            VmPrep::Reuse(r) => r
                .artifacts
                .iter()
                .map(|a| a.path.clone())
                .chain(r.report_path.clone())
                .collect(),
            _ => Vec::new(),
        };
        for p in paths {
            if let Some(other) = owners.insert(plan::same_file_key(&p), entry.id.clone())
                && other != entry.id
            {
                problems.push(format!(
                    "vms {other} and {} would both write {}; set shared_config.output_directory \
                     (each VM then writes under <dir>/<vm id>/) or give their manifests distinct \
                     output.directory values",
                    entry.id,
                    p.display()
                ));
            }
        }
    }
    if let Some(s) = &sharding {
        problems.extend(s.problems.iter().cloned());
    }
    if !problems.is_empty() {
        return Err(BatchError::Invalid {
            path: batch.path.clone(),
            problems,
        });
    }
    Ok(PreparedBatch {
        batch,
        parallel_limit,
        continue_on_error,
        resume: opts.resume,
        report_dir,
        vms,
        shard: sharding.map(|s| s.run),
    })
}

struct Sharding {
    run: ShardRun,
    /// Every VM's MACs by position (empty for export entries, which are not imported to be
    /// sketched, and for VMs that cannot be loaded).
    macs: Vec<Vec<MacAddr>>,
    /// Output directories this shard's VMs share with another shard's.
    problems: Vec<String>,
}

/// Splits the batch: every VM is sketched (its manifest read and layered, its source files
/// sized, nothing probed or imported), the assignment computed, and the output directories of
/// this shard's VMs checked against every other shard's.
fn plan_shards(
    batch: &BatchManifest,
    spec: shard::ShardSpec,
    shared_out: Option<&Path>,
) -> Result<Sharding, BatchError> {
    // The MACs of every VM, in file order, as one process would reserve them: a shard keeps
    // the MACs it regenerates unique against every other shard's VMs too. Each manifest is
    // dropped once read, so 10,000 VMs are not held at once.
    let mut reserved = BTreeSet::new();
    let mut macs = Vec::with_capacity(batch.vms.len());
    let mut sketches: Vec<shard::Sketch> = Vec::with_capacity(batch.vms.len());
    for e in &batch.vms {
        let mut s = sketch(batch, e, shared_out);
        let m = match (s.loaded.take(), e.enabled) {
            (Some(loaded), true) => plan::macs_of(&loaded, &e.id, &reserved),
            _ => Vec::new(),
        };
        reserved.extend(m.iter().copied());
        macs.push(m);
        sketches.push(s);
    }
    let items: Vec<shard::Item<'_>> = batch
        .vms
        .iter()
        .zip(&sketches)
        .map(|(e, s)| shard::Item {
            id: &e.id,
            bytes: s.bytes,
            enabled: e.enabled,
        })
        .collect();
    let assignment = shard::assign(&items, spec.count);

    let dirs: Vec<(&str, usize, PathBuf)> = batch
        .vms
        .iter()
        .zip(&sketches)
        .zip(&assignment.shard_of)
        .filter(|((e, _), _)| e.enabled)
        .filter_map(|((e, s), &shard)| Some((e.id.as_str(), shard, s.output_dir.clone()?)))
        .collect();
    let problems = shard::shared_directories(&dirs, spec.index);
    Ok(Sharding {
        run: ShardRun {
            spec,
            loads: assignment.loads,
            digest: assignment.digest,
            all: batch
                .vms
                .iter()
                .map(|e| e.id.clone())
                .zip(assignment.shard_of)
                .collect(),
        },
        macs,
        problems,
    })
}

/// What a shard needs to know of any VM (see [`shard::Sketch`]).
pub(crate) fn sketch(
    batch: &BatchManifest,
    entry: &VmEntry,
    shared_out: Option<&Path>,
) -> shard::Sketch {
    let default_dir = shared_out.map(|d| d.join(&entry.id));
    if let Some(kind) = entry.export {
        // The import writes no output.directory; only the entry's overrides can set one.
        let dir = entry
            .overrides
            .get("output")
            .and_then(|o| o.get("directory"))
            .and_then(|d| d.as_str())
            .map(|d| crate::config::resolve_relative(&crate::config::dir_of(&entry.manifest), d))
            .or(default_dir)
            .or_else(|| Some(crate::config::dir_of(&entry.manifest).join("output")));
        return shard::Sketch {
            bytes: shard::export_bytes(kind, &entry.manifest),
            output_dir: dir,
            sources: vec![entry.manifest.clone()],
            loaded: None,
        };
    }
    match load_vm(batch, entry) {
        Ok(loaded) => {
            let sources: Vec<PathBuf> = loaded
                .manifest
                .disks
                .iter()
                .flat_map(|d| {
                    std::iter::once(d.local_path.as_str())
                        .chain(d.backing_chain.iter().flatten().map(String::as_str))
                        .map(|p| crate::config::resolve_relative(&loaded.dir, p))
                        .collect::<Vec<_>>()
                })
                .collect();
            shard::Sketch {
                bytes: shard::file_bytes(sources.iter().map(PathBuf::as_path)),
                output_dir: Some(plan::output_dir_for(&loaded, default_dir)),
                sources,
                loaded: Some(Box::new(loaded)),
            }
        }
        // It fails in its own shard, which says why; here it only needs a place.
        Err(_) => shard::Sketch {
            bytes: None,
            output_dir: default_dir,
            sources: Vec::new(),
            loaded: None,
        },
    }
}

fn load_vm(batch: &BatchManifest, entry: &VmEntry) -> Result<Loaded, String> {
    let layers = Layers {
        shared_config: (!batch.shared_config.is_empty()).then(|| batch.shared_config.clone()),
        overrides: (!entry.overrides.is_empty()).then(|| entry.overrides.clone()),
    };
    if let Some(kind) = entry.export {
        return import_vm(kind, entry, &layers);
    }
    if !entry.manifest.is_file() {
        return Err(format!(
            "VM manifest not found: {}",
            entry.manifest.display()
        ));
    }
    let doc =
        crate::config::load_document_as(&entry.manifest, crate::config::DocumentKind::Manifest)
            .map_err(|e| e.to_string())?;
    vm_manifest::resolve(&entry.manifest, doc, &layers).map_err(|e| e.to_string())
}

/// A VM entry that names an export: its manifest is generated in memory by the import that
/// `--ova`/`--ovf`/`--vmx`/`--hyperv` run (the export read in place, its disks probed, its
/// SHA1 digests verified; SHA256 digests become the disks' checksums, which the VM's own run
/// verifies), then resolved with the batch's layers like any manifest. The import's pipeline
/// is used only when no layer names a profile or a pipeline.
fn import_vm(
    kind: crate::exports::ExportKind,
    entry: &VmEntry,
    layers: &Layers,
) -> Result<Loaded, String> {
    let chooses = |m: &Option<serde_json::Map<String, serde_json::Value>>| {
        m.as_ref()
            .is_some_and(crate::exports::import::names_pipeline)
    };
    let opts = crate::exports::import::ImportOptions::for_batch(
        kind,
        entry.manifest.clone(),
        !(chooses(&layers.shared_config) || chooses(&layers.overrides)),
    );
    let outcome = crate::exports::import::run(
        &opts,
        &crate::exec::CancelToken::new(),
        &crate::events::EventSink::discard(),
    )
    .map_err(|e| crate::diag::with_causes(&e))?;
    let serde_json::Value::Object(doc) = outcome.manifest else {
        unreachable!("an import's manifest is an object")
    };
    vm_manifest::resolve(&entry.manifest, doc, layers).map_err(|e| e.to_string())
}

fn fingerprint(loaded: &Loaded) -> Option<String> {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(&loaded.manifest).ok()?;
    let mut h = Sha256::new();
    h.update(loaded.path.to_string_lossy().as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    Some(crate::checksum::hex(&h.finalize()))
}

/// A checkpointed VM is reused only when it succeeded (so every planned stage, validate
/// included, passed), its resolved manifest is unchanged, and every output is still there at the
/// size it had.
fn reusable(prev: &VmResult, fingerprint: Option<&str>) -> bool {
    prev.status == BatchVmStatus::Succeeded
        && prev.fingerprint.as_deref() == fingerprint
        && fingerprint.is_some()
        && !prev.artifacts.is_empty()
        && prev.artifacts.iter().all(|a| {
            std::fs::metadata(&a.path).is_ok_and(|m| m.is_file() && m.len() == a.size_bytes)
        })
}

impl PreparedBatch {
    pub fn batch(&self) -> &BatchManifest {
        &self.batch
    }

    /// How many VMs will actually run.
    pub fn runnable(&self) -> usize {
        self.vms
            .iter()
            .filter(|(_, p)| matches!(p, VmPrep::Run(..)))
            .count()
    }

    /// The source bytes of the VMs that will run (what the batch's estimate counts).
    pub fn runnable_bytes(&self) -> u64 {
        self.vms
            .iter()
            .filter_map(|(_, p)| match p {
                VmPrep::Run(plan, _) => {
                    Some(plan.disks.iter().map(|d| d.expected_bytes).sum::<u64>())
                }
                _ => None,
            })
            .sum()
    }

    /// The longest id of a VM that will run, in characters.
    pub fn widest_id(&self) -> usize {
        self.vms
            .iter()
            .filter(|(_, p)| matches!(p, VmPrep::Run(..)))
            .map(|(e, _)| e.id.chars().count())
            .max()
            .unwrap_or(0)
    }

    pub fn workers(&self) -> usize {
        self.parallel_limit.min(self.runnable()).max(1)
    }

    /// What a dry run prints: the order, the decisions, and each VM's plan.
    pub fn describe(&self) -> String {
        let vms = match &self.shard {
            Some(sh) => format!(
                "shard {} of {}, {} of its {} VMs",
                sh.spec.index,
                sh.spec.count,
                self.vms.len(),
                self.batch.vms.len()
            ),
            None => format!("{} VMs", self.batch.vms.len()),
        };
        let mut s = format!(
            "Dry run of batch {} ({}): {vms}, {} to run with {} worker(s), continue_on_error: {}\n",
            self.batch.batch_id,
            self.batch.path.display(),
            self.runnable(),
            self.workers(),
            self.continue_on_error
        );
        s.push_str(&format!("Reports: {}\n", self.report_dir.display()));
        if let Some(sh) = &self.shard {
            s.push_str(&self.describe_shards(sh));
        }
        for (entry, prepared) in self.ordered() {
            let what = match prepared {
                VmPrep::Run(..) => "run".to_owned(),
                VmPrep::Reuse(_) => "done in an earlier run (resume)".to_owned(),
                VmPrep::Failed(m) => format!("cannot run: {m}"),
                VmPrep::Skipped => "skipped (enabled: false)".to_owned(),
            };
            s.push_str(&format!(
                "- {} (priority {}): {what}\n",
                entry.id, entry.priority
            ));
        }
        for (_, prepared) in self.ordered() {
            if let VmPrep::Run(plan, _) = prepared {
                s.push('\n');
                s.push_str(&plan.describe());
            }
        }
        s
    }

    /// The assignment: each shard's VMs and bytes, this shard marked, and the other shards' VMs
    /// by id.
    fn describe_shards(&self, sh: &ShardRun) -> String {
        let mut s = format!(
            "Shard {} of {} (assignment {}, by bytes of the source files):\n",
            sh.spec.index,
            sh.spec.count,
            &sh.digest[..16]
        );
        for load in &sh.loads {
            let mark = if load.index == sh.spec.index {
                "  <- this shard"
            } else {
                ""
            };
            s.push_str(&format!(
                "  shard {}: {} VM{}, {}{mark}\n",
                load.index,
                load.vms,
                if load.vms == 1 { "" } else { "s" },
                crate::units::human_bytes(load.bytes)
            ));
        }
        for load in sh.loads.iter().filter(|l| l.index != sh.spec.index) {
            let ids: Vec<&str> = sh
                .all
                .iter()
                .zip(&self.batch.vms)
                .filter(|((_, shard), e)| *shard == load.index && e.enabled)
                .map(|((id, _), _)| id.as_str())
                .collect();
            if !ids.is_empty() {
                s.push_str(&format!(
                    "  shard {} runs: {}\n",
                    load.index,
                    ids.join(", ")
                ));
            }
        }
        s
    }

    /// This shard, when the batch runs sharded.
    pub fn shard(&self) -> Option<&ShardRun> {
        self.shard.as_ref()
    }

    /// VMs in run order (priority, position), disabled ones last.
    fn ordered(&self) -> Vec<&(VmEntry, VmPrep)> {
        let mut v: Vec<&(VmEntry, VmPrep)> = self.vms.iter().collect();
        v.sort_by_key(|(e, _)| (!e.enabled, e.priority, e.index));
        v
    }

    /// Locks the batch's report directory, and every existing output directory of every VM that
    /// will run (see [`crate::lock`]), before the first VM starts, so a second run of the same
    /// batch (or any run writing where one of its VMs writes) stops at once. A VM's directories
    /// that do not exist yet are created and locked as it starts. The leftovers of a killed run
    /// found now are removed, and each VM whose directory held one says so in its report.
    pub fn lock_outputs(&mut self) -> Result<crate::lock::Held, crate::lock::LockError> {
        let mut claim = crate::lock::Claim::default();
        claim.dir(&self.report_dir);
        for (_, prepared) in &self.vms {
            if let VmPrep::Run(plan, _) = prepared
                && !plan.dry_run
            {
                claim.extend(&plan.claim().existing());
            }
        }
        let held = crate::lock::take(&claim)?;
        for (_, prepared) in &mut self.vms {
            if let VmPrep::Run(plan, _) = prepared {
                let mine = plan.claim();
                plan.notes.extend(
                    held.cleaned
                        .iter()
                        .filter(|c| mine.covers(c))
                        .map(|c| c.note.clone()),
                );
            }
        }
        Ok(held)
    }

    /// Runs the batch and returns its outcome; reports are the caller's to write. Each VM locks
    /// its directories in `locks` (from [`PreparedBatch::lock_outputs`]) as it starts; one held by
    /// another run fails the VM.
    pub fn run(
        self,
        locks: &Mutex<crate::lock::Held>,
        cancel: &CancelToken,
        events: &EventSink,
    ) -> BatchOutcome {
        let started_at = crate::clock::now_local();
        let started_unix = crate::clock::unix_seconds();
        let started = Instant::now();
        let workers = self.workers();
        let checkpoint_path = checkpoint::path(&self.report_dir, &self.batch.batch_id);
        let shard_index = self.shard.as_ref().map(|s| s.spec.index);

        let mut results: Vec<Option<VmResult>> = vec![None; self.vms.len()];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for (pos, (entry, prepared)) in self.vms.iter().enumerate() {
            match prepared {
                VmPrep::Run(..) => {}
                VmPrep::Reuse(r) => results[pos] = Some((**r).clone()),
                VmPrep::Failed(message) => {
                    results[pos] =
                        Some(not_run(entry, BatchVmStatus::Failed, Some(message.clone())))
                }
                VmPrep::Skipped => {
                    results[pos] = Some(not_run(entry, BatchVmStatus::Skipped, None))
                }
            }
        }
        let mut order: Vec<usize> = (0..self.vms.len())
            .filter(|&i| matches!(self.vms[i].1, VmPrep::Run(..)))
            .collect();
        order.sort_by_key(|&i| (self.vms[i].0.priority, self.vms[i].0.index));
        queue.extend(order);

        let results = Mutex::new(results);
        let queue = Mutex::new(queue);
        let stop = AtomicBool::new(false);
        // The VMs converting at once share it, so their outputs add up on a filesystem.
        let space = pipeline::SpaceLedger::new();
        let continue_on_error = self.continue_on_error;
        let record = |results: &Mutex<Vec<Option<VmResult>>>| {
            let snapshot: Vec<VmResult> = results
                .lock()
                .map(|r| r.iter().flatten().cloned().collect())
                .unwrap_or_default();
            if let Err(e) = checkpoint::write(&checkpoint_path, &self.batch, &snapshot) {
                tracing::warn!(
                    "could not write the checkpoint: {}",
                    crate::diag::error_chain(&e)
                );
            }
        };
        // Results of earlier runs and VMs that could not load are checkpointed before any work.
        record(&results);

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("hyper2kvm-vm-{i}"))
            .build();
        // `slot` is the worker's number, which the report's timeline draws a row for.
        let work = |slot: usize| loop {
            if cancel.is_cancelled() || stop.load(Ordering::SeqCst) {
                break;
            }
            let next = queue.lock().ok().and_then(|mut q| q.pop_front());
            let Some(pos) = next else { break };
            let (entry, prepared) = &self.vms[pos];
            let VmPrep::Run(plan, fingerprint) = prepared else {
                continue;
            };
            if plan.dry_run {
                // options.dry_run in this VM's own settings: plan only, like --dry-run.
                let mut result = not_run(entry, BatchVmStatus::Skipped, None);
                result.error = Some("options.dry_run is true: planned, not run".to_owned());
                if let Ok(mut r) = results.lock() {
                    r[pos] = Some(result);
                }
                continue;
            }
            let locked = match locks.lock() {
                Ok(mut held) => held.take_more(&plan.claim()),
                Err(_) => Ok(Vec::new()),
            };
            let cleaned = match locked {
                Ok(cleaned) => cleaned,
                Err(e) => {
                    let mut result = not_run(entry, BatchVmStatus::Failed, Some(e.to_string()));
                    result.start_offset_seconds = Some(crate::units::seconds(started.elapsed()));
                    result.slot = Some(slot);
                    if !continue_on_error {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut r) = results.lock() {
                        r[pos] = Some(result);
                    }
                    record(&results);
                    continue;
                }
            };
            // Leftovers found only now (in a directory that appeared since the batch started).
            let with_notes;
            let plan: &VmPlan = if cleaned.is_empty() {
                plan
            } else {
                let mut p = (**plan).clone();
                p.notes.extend(cleaned.into_iter().map(|c| c.note));
                with_notes = p;
                &with_notes
            };
            let start_offset = crate::units::seconds(started.elapsed());
            // Known to the checkpoint from its start: a run killed now leaves a record that
            // lets `--batch-resume` replace what this VM had written, and only this VM.
            let mut running = not_run(
                entry,
                BatchVmStatus::Interrupted,
                Some("started; the run ended before the VM finished".to_owned()),
            );
            running.start_offset_seconds = Some(start_offset);
            running.slot = Some(slot);
            running.shard = shard_index;
            if let Ok(mut r) = results.lock() {
                r[pos] = Some(running);
            }
            record(&results);
            let outcome = pipeline::run_vm(plan, cancel, events, &space);
            let mut result = ran(entry, plan, &outcome, fingerprint.clone());
            result.start_offset_seconds = Some(start_offset);
            result.slot = Some(slot);
            if let Some(path) = &plan.report_path {
                let vm_report = report::vm_report(plan, &outcome);
                if let Err(e) = report::write(path, &vm_report) {
                    // The report is part of what a VM delivers; without it the VM failed.
                    result.status = BatchVmStatus::Failed;
                    result.success = false;
                    result
                        .error
                        .get_or_insert_with(|| crate::diag::error_chain(&e));
                }
                result.pipeline_report = serde_json::to_value(&vm_report).ok().map(Box::new);
            }
            if outcome.status == VmStatus::Failed && !continue_on_error {
                stop.store(true, Ordering::SeqCst);
            }
            if let Ok(mut r) = results.lock() {
                r[pos] = Some(result);
            }
            record(&results);
        };
        match pool {
            Ok(pool) => pool.scope(|s| {
                let work = &work;
                for slot in 0..workers {
                    s.spawn(move |_| work(slot));
                }
            }),
            // No pool (thread limit reached): run the queue on this thread, still in order.
            Err(e) => {
                tracing::warn!("could not start worker threads ({e}); running VMs one at a time");
                work(0);
            }
        }

        let interrupted = cancel.is_cancelled();
        let mut results = results.into_inner().unwrap_or_default();
        for (pos, slot) in results.iter_mut().enumerate() {
            if slot.is_none() {
                let status = if interrupted {
                    BatchVmStatus::Interrupted
                } else {
                    BatchVmStatus::NotStarted
                };
                let why = if interrupted {
                    "not started: the batch was interrupted"
                } else {
                    "not started: an earlier VM failed and continue_on_error is false"
                };
                *slot = Some(not_run(&self.vms[pos].0, status, Some(why.to_owned())));
            }
        }
        let mut results: Vec<VmResult> = results.into_iter().flatten().collect();
        for r in &mut results {
            r.shard = shard_index;
        }
        if let Err(e) = checkpoint::write(&checkpoint_path, &self.batch, &results) {
            tracing::warn!(
                "could not write the checkpoint: {}",
                crate::diag::error_chain(&e)
            );
        }
        BatchOutcome {
            parallel_limit: self.parallel_limit,
            continue_on_error: self.continue_on_error,
            resumed: self.resume,
            started_at,
            duration_seconds: crate::units::round2(started.elapsed().as_secs_f64()),
            results,
            interrupted,
            report_dir: self.report_dir,
            batch: self.batch,
            shard: self.shard.map(|s| report::batch::ShardSection {
                index: s.spec.index,
                count: s.spec.count,
                assignment_digest: s.digest,
                loads: s.loads,
                started_unix,
            }),
        }
    }
}

fn not_run(entry: &VmEntry, status: BatchVmStatus, error: Option<String>) -> VmResult {
    VmResult {
        vm_id: entry.id.clone(),
        index: entry.index,
        priority: entry.priority,
        manifest: entry.manifest.clone(),
        status,
        success: false,
        duration_seconds: 0.0,
        timestamp: None,
        start_offset_seconds: None,
        slot: None,
        error,
        output_directory: None,
        report_path: None,
        stage_durations: Vec::new(),
        bytes_read: 0,
        bytes_written: 0,
        artifacts: Vec::new(),
        validated: false,
        macs: Vec::new(),
        fingerprint: None,
        from_checkpoint: false,
        shard: None,
        pipeline_report: None,
    }
}

fn ran(
    entry: &VmEntry,
    plan: &VmPlan,
    outcome: &VmOutcome,
    fingerprint: Option<String>,
) -> VmResult {
    let status = match outcome.status {
        VmStatus::Succeeded => BatchVmStatus::Succeeded,
        VmStatus::Failed => BatchVmStatus::Failed,
        VmStatus::Interrupted => BatchVmStatus::Interrupted,
    };
    VmResult {
        vm_id: entry.id.clone(),
        index: entry.index,
        priority: entry.priority,
        manifest: entry.manifest.clone(),
        status,
        success: outcome.succeeded(),
        duration_seconds: crate::units::round2(outcome.duration_seconds),
        timestamp: Some(outcome.started_at.clone()),
        start_offset_seconds: None,
        slot: None,
        error: outcome
            .errors
            .first()
            .map(|e| format!("{}: {}", e.stage, e.message)),
        output_directory: Some(plan.output_dir.clone()),
        report_path: plan.report_path.clone(),
        stage_durations: outcome
            .stages
            .iter()
            .map(|s| StageTiming {
                stage: s.stage.name().to_owned(),
                seconds: s.duration,
            })
            .collect(),
        bytes_read: outcome.bytes_read,
        bytes_written: outcome.bytes_written,
        artifacts: outcome
            .artifacts
            .iter()
            .map(|a| ArtifactRecord {
                path: a.path.clone(),
                size_bytes: a.size_bytes,
            })
            .collect(),
        validated: outcome
            .stage(crate::stage::Stage::Validate)
            .is_some_and(|s| s.success),
        macs: plan.macs(),
        fingerprint,
        from_checkpoint: false,
        shard: None,
        pipeline_report: None,
    }
}
