//! `batch_report.json` and `batch_summary.txt`, built from a [`BatchOutcome`] by pure functions.
//!
//! Both keep upstream's layouts (upstream-behaviour §3.3 and §3.4) and add the per-VM status
//! (succeeded, failed, skipped, not_started, interrupted), stage timings and bytes moved.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::manifest::MacAddr;
use crate::manifest::batch::BatchManifest;
use crate::units::round2;

/// What happened to one VM of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchVmStatus {
    Succeeded,
    Failed,
    /// `enabled: false` in the batch manifest.
    Skipped,
    /// Never started because an earlier failure stopped the batch (`continue_on_error: false`).
    NotStarted,
    /// Stopped by SIGINT/SIGTERM, or never started because of one.
    Interrupted,
}

/// One VM's line in the batch report (and its checkpoint record).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmResult {
    pub vm_id: String,
    pub index: usize,
    pub priority: i64,
    pub manifest: PathBuf,
    pub status: BatchVmStatus,
    pub success: bool,
    pub duration_seconds: f64,
    pub timestamp: Option<String>,
    /// Seconds from the batch's start to this VM's, on a monotonic clock; absent for a VM that
    /// did not start in this run (skipped, not started, or taken from a checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offset_seconds: Option<f64>,
    /// The parallel worker slot (0-based) the VM ran in; absent like `start_offset_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub output_directory: Option<PathBuf>,
    pub report_path: Option<PathBuf>,
    /// Seconds per stage, in pipeline order.
    pub stage_durations: Vec<StageTiming>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Output files and their sizes, for resume.
    pub artifacts: Vec<ArtifactRecord>,
    /// Whether the validate stage ran and passed.
    pub validated: bool,
    /// The MAC addresses of the emitted domain's NICs; a resumed batch keeps them reserved so a
    /// VM planned after a reused one never gets the same MAC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<MacAddr>,
    /// Digest of the resolved manifest; resume reuses a result only for the same manifest.
    pub fingerprint: Option<String>,
    /// Taken from the checkpoint of an earlier run (`--batch-resume`), not run again.
    pub from_checkpoint: bool,
    /// The shard that ran it, when the batch ran sharded (`--batch-shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<usize>,
    /// The VM's own report (its `report.json`), embedded in the batch report (never in the
    /// checkpoint); kept as JSON, so a merge carries it over as it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_report: Option<Box<serde_json::Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// The finished batch, ready for reporting.
#[derive(Clone, Debug)]
pub struct BatchOutcome {
    pub batch: BatchManifest,
    pub parallel_limit: usize,
    pub continue_on_error: bool,
    pub resumed: bool,
    pub started_at: String,
    pub duration_seconds: f64,
    /// In batch-file order.
    pub results: Vec<VmResult>,
    pub interrupted: bool,
    pub report_dir: PathBuf,
    /// Set when this run was one shard of the batch.
    pub shard: Option<ShardSection>,
}

/// How much one shard got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardLoad {
    pub index: usize,
    pub vms: usize,
    /// Bytes of the source files of its VMs whose size is known.
    pub bytes: u64,
}

/// `merge` in a merged report: every shard's state, and what the merge found wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeSection {
    pub shard_count: usize,
    pub assignment_digest: String,
    /// Every shard, by index, found or not.
    pub shards: Vec<MergedShard>,
    /// Indexes of the shards with no report.
    pub missing_shards: Vec<usize>,
    /// Indexes of the shards whose run did not succeed (failed or interrupted).
    pub failed_shards: Vec<usize>,
    /// Everything that makes the merged result incomplete or doubtful, in words.
    pub problems: Vec<String>,
    /// Whether every shard reported and the shards agree (their VMs may still have failed).
    pub complete: bool,
}

/// One shard as the merge saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedShard {
    pub index: usize,
    /// `succeeded`, `failed`, `interrupted` (the shard's own status) or `missing`.
    pub status: String,
    /// Its report, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
    /// Enabled VMs it was assigned, and enabled VMs its report lists.
    pub assigned_vms: usize,
    pub reported_vms: usize,
}

/// `shard` in a shard's `batch_report.json`: which shard it is, and what every shard got,
/// which `--batch-merge` checks the shards agree on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardSection {
    pub index: usize,
    pub count: usize,
    /// SHA-256 of the whole assignment (every VM id and its shard).
    pub assignment_digest: String,
    /// VMs and source bytes of every shard, by index.
    pub loads: Vec<ShardLoad>,
    /// When this shard's run started, in seconds since the Unix epoch.
    pub started_unix: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchReport {
    pub version: String,
    pub report_type: String,
    pub timestamp: String,
    pub batch: BatchSection,
    pub vm_results: Vec<VmResult>,
    pub aggregate_stats: AggregateStats,
    pub warnings: Vec<BatchMessage>,
    pub errors: Vec<BatchMessage>,
    pub hyper2kvm_version: String,
    /// This report is one shard's (`--batch-shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSection>,
    /// This report merges shard reports (`--batch-merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeSection>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchSection {
    pub batch_id: String,
    pub manifest_path: String,
    pub success: bool,
    pub status: String,
    pub duration_seconds: f64,
    pub parallel_limit: usize,
    pub continue_on_error: bool,
    pub resumed: bool,
    pub total_vms: usize,
    pub processed_vms: usize,
    pub successful_vms: usize,
    pub failed_vms: usize,
    pub skipped_vms: usize,
    pub not_started_vms: usize,
    pub interrupted_vms: usize,
    pub success_rate: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AggregateStats {
    pub total_duration: f64,
    pub average_duration: f64,
    pub fastest_conversion: Option<Timing>,
    pub slowest_conversion: Option<Timing>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    pub vm_id: String,
    pub duration: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchMessage {
    pub vm_id: String,
    pub message: String,
    pub timestamp: String,
}

fn count(results: &[VmResult], status: BatchVmStatus) -> usize {
    results.iter().filter(|r| r.status == status).count()
}

/// What a batch report says of the run as a whole, beside its VMs' results.
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub batch_id: String,
    pub manifest_path: String,
    pub parallel_limit: usize,
    pub continue_on_error: bool,
    pub resumed: bool,
    pub started_at: String,
    pub duration_seconds: f64,
    pub interrupted: bool,
}

pub fn build(outcome: &BatchOutcome) -> BatchReport {
    let facts = RunFacts {
        batch_id: outcome.batch.batch_id.clone(),
        manifest_path: outcome.batch.path.display().to_string(),
        parallel_limit: outcome.parallel_limit,
        continue_on_error: outcome.continue_on_error,
        resumed: outcome.resumed,
        started_at: outcome.started_at.clone(),
        duration_seconds: outcome.duration_seconds,
        interrupted: outcome.interrupted,
    };
    let mut report = assemble(&facts, outcome.results.clone());
    report.shard = outcome.shard.clone();
    report
}

/// The batch report of `results` (in batch-file order): counts, timings, the warnings and
/// errors of every VM. One run's report and a merge of shard reports are both made here.
pub fn assemble(facts: &RunFacts, results: Vec<VmResult>) -> BatchReport {
    let r = &results;
    let succeeded = count(r, BatchVmStatus::Succeeded);
    let failed = count(r, BatchVmStatus::Failed);
    let interrupted = count(r, BatchVmStatus::Interrupted);
    let processed = succeeded + failed;
    let ok: Vec<&VmResult> = r
        .iter()
        .filter(|v| v.status == BatchVmStatus::Succeeded)
        .collect();
    let average = if ok.is_empty() {
        0.0
    } else {
        round2(ok.iter().map(|v| v.duration_seconds).sum::<f64>() / ok.len() as f64)
    };
    let timing = |v: &&VmResult| Timing {
        vm_id: v.vm_id.clone(),
        duration: v.duration_seconds,
    };
    let fastest = ok
        .iter()
        .min_by(|a, b| a.duration_seconds.total_cmp(&b.duration_seconds))
        .map(timing);
    let slowest = ok
        .iter()
        .max_by(|a, b| a.duration_seconds.total_cmp(&b.duration_seconds))
        .map(timing);
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for v in r {
        let embedded = v
            .pipeline_report
            .as_deref()
            .and_then(|r| r.get("warnings"))
            .and_then(|w| w.as_array());
        for w in embedded.into_iter().flatten() {
            let text = |k: &str| w.get(k).and_then(|x| x.as_str()).unwrap_or_default();
            warnings.push(BatchMessage {
                vm_id: v.vm_id.clone(),
                message: text("message").to_owned(),
                timestamp: text("timestamp").to_owned(),
            });
        }
        if let Some(e) = &v.error
            && v.status != BatchVmStatus::Skipped
        {
            errors.push(BatchMessage {
                vm_id: v.vm_id.clone(),
                message: e.clone(),
                timestamp: v
                    .timestamp
                    .clone()
                    .unwrap_or_else(|| facts.started_at.clone()),
            });
        }
    }
    let status = if facts.interrupted {
        "interrupted"
    } else if failed == 0 && count(r, BatchVmStatus::NotStarted) == 0 {
        "succeeded"
    } else {
        "failed"
    };
    BatchReport {
        version: super::REPORT_VERSION.to_owned(),
        report_type: "batch_conversion".to_owned(),
        timestamp: facts.started_at.clone(),
        batch: BatchSection {
            batch_id: facts.batch_id.clone(),
            manifest_path: facts.manifest_path.clone(),
            success: status == "succeeded",
            status: status.to_owned(),
            duration_seconds: round2(facts.duration_seconds),
            parallel_limit: facts.parallel_limit,
            continue_on_error: facts.continue_on_error,
            resumed: facts.resumed,
            total_vms: r.len(),
            processed_vms: processed,
            successful_vms: succeeded,
            failed_vms: failed,
            skipped_vms: count(r, BatchVmStatus::Skipped),
            not_started_vms: count(r, BatchVmStatus::NotStarted),
            interrupted_vms: interrupted,
            success_rate: if processed == 0 {
                0.0
            } else {
                crate::units::round_to(succeeded as f64 / processed as f64, 4)
            },
            bytes_read: r.iter().map(|v| v.bytes_read).sum(),
            bytes_written: r.iter().map(|v| v.bytes_written).sum(),
        },
        vm_results: results,
        aggregate_stats: AggregateStats {
            total_duration: round2(facts.duration_seconds),
            average_duration: average,
            fastest_conversion: fastest,
            slowest_conversion: slowest,
        },
        warnings,
        errors,
        hyper2kvm_version: env!("CARGO_PKG_VERSION").to_owned(),
        shard: None,
        merge: None,
    }
}

impl BatchVmStatus {
    /// As the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            BatchVmStatus::Succeeded => "succeeded",
            BatchVmStatus::Failed => "failed",
            BatchVmStatus::Skipped => "skipped",
            BatchVmStatus::NotStarted => "not_started",
            BatchVmStatus::Interrupted => "interrupted",
        }
    }
}

fn status_label(s: BatchVmStatus) -> &'static str {
    match s {
        BatchVmStatus::Succeeded => "SUCCESS",
        BatchVmStatus::Failed => "FAILED",
        BatchVmStatus::Skipped => "SKIPPED",
        BatchVmStatus::NotStarted => "NOT STARTED",
        BatchVmStatus::Interrupted => "INTERRUPTED",
    }
}

/// `batch_summary.txt`: upstream's layout, with a status word per VM instead of symbols.
pub fn summary_text(report: &BatchReport) -> String {
    let eq = "=".repeat(80);
    let dash = "-".repeat(80);
    let b = &report.batch;
    let mut s = String::new();
    let mut line = |text: &str| {
        s.push_str(text);
        s.push('\n');
    };
    line(&eq);
    line("Batch Conversion Summary");
    line(&eq);
    line("");
    line(&format!("Batch ID: {}", b.batch_id));
    line(&format!("Timestamp: {}", report.timestamp));
    line(&format!("Duration: {:.2}s", b.duration_seconds));
    line(&format!("Status: {}", b.status));
    if let Some(sh) = &report.shard {
        line(&format!(
            "Shard: {} of {} (indexes from 0; assignment {})",
            sh.index,
            sh.count,
            short(&sh.assignment_digest)
        ));
    }
    if let Some(m) = &report.merge {
        for text in merge_lines(m) {
            line(&text);
        }
    }
    line("");
    line("Results:");
    line(&format!("  Total VMs: {}", b.total_vms));
    line(&format!("  Processed: {}", b.processed_vms));
    line(&format!("  Successful: {}", b.successful_vms));
    line(&format!("  Failed: {}", b.failed_vms));
    line(&format!("  Skipped: {}", b.skipped_vms));
    line(&format!("  Not started: {}", b.not_started_vms));
    line(&format!("  Interrupted: {}", b.interrupted_vms));
    line(&format!("  Success Rate: {:.1}%", b.success_rate * 100.0));
    line("");
    let a = &report.aggregate_stats;
    if a.average_duration != 0.0 {
        line("Performance:");
        line(&format!("  Average Duration: {:.2}s", a.average_duration));
        if let Some(f) = &a.fastest_conversion {
            line(&format!("  Fastest: {} ({:.2}s)", f.vm_id, f.duration));
        }
        if let Some(f) = &a.slowest_conversion {
            line(&format!("  Slowest: {} ({:.2}s)", f.vm_id, f.duration));
        }
        line("");
    }
    line("VM Details:");
    line(&dash);
    for v in &report.vm_results {
        let resumed = if v.from_checkpoint {
            " (from an earlier run)"
        } else {
            ""
        };
        line(&format!(
            "{} | {} | {:.2}s{resumed}",
            status_label(v.status),
            v.vm_id,
            v.duration_seconds
        ));
        if let Some(e) = &v.error {
            // Multi-line errors (validation lists) stay readable, indented under the VM.
            let mut lines = e.lines();
            if let Some(first) = lines.next() {
                line(&format!("  Error: {first}"));
            }
            for rest in lines {
                line(&format!("    {}", rest.trim_start()));
            }
        }
    }
    line(&dash);
    line("");
    for (title, items) in [("Warnings:", &report.warnings), ("Errors:", &report.errors)] {
        if items.is_empty() {
            continue;
        }
        line(title);
        for (message, vms) in grouped(items) {
            let mut lines = message.lines();
            line(&format!(
                "  [{}] {}",
                vm_list(&vms),
                lines.next().unwrap_or_default()
            ));
            for rest in lines {
                line(&format!("      {}", rest.trim_start()));
            }
        }
        line("");
    }
    line(&eq);
    s
}

/// The same message for many VMs (a shared default, a shared mistake) once, with the VMs it
/// concerns, in order of first appearance.
pub fn grouped(items: &[BatchMessage]) -> Vec<(&str, Vec<&str>)> {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for m in items {
        match grouped.iter_mut().find(|(msg, _)| *msg == m.message) {
            Some((_, vms)) => {
                if !vms.contains(&m.vm_id.as_str()) {
                    vms.push(&m.vm_id)
                }
            }
            None => grouped.push((&m.message, vec![&m.vm_id])),
        }
    }
    grouped
}

/// `vm1`, `vm1, vm2`, or `vm1, vm2, vm3, vm4, vm5 and 7 more`.
fn vm_list(vms: &[&str]) -> String {
    const SHOWN: usize = 5;
    if vms.len() <= SHOWN + 1 {
        return vms.join(", ");
    }
    format!("{} and {} more", vms[..SHOWN].join(", "), vms.len() - SHOWN)
}

fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}

/// What a merged report says of its shards, line by line (the summary and the page).
pub fn merge_lines(m: &MergeSection) -> Vec<String> {
    let reported = m.shards.iter().filter(|s| s.status != "missing").count();
    let mut lines = vec![format!(
        "Shards: {reported} of {} reported (assignment {}){}",
        m.shard_count,
        short(&m.assignment_digest),
        if m.complete { "" } else { ", INCOMPLETE" }
    )];
    for s in &m.shards {
        lines.push(format!(
            "  shard {}: {}, {} VM{} assigned, {} reported{}",
            s.index,
            s.status,
            s.assigned_vms,
            if s.assigned_vms == 1 { "" } else { "s" },
            s.reported_vms,
            s.report
                .as_ref()
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default()
        ));
    }
    for p in &m.problems {
        lines.push(format!("  Note: {p}"));
    }
    lines
}
