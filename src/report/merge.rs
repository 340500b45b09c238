//! `--batch-merge`: many shard reports made into one batch report, by a pure function.
//!
//! The shard reports of one batch are found by the caller; this decides which to take and what
//! the whole says:
//!
//! - **One layout.** Reports of the batch's latest shard count are merged (a batch re-split from
//!   4 to 5 shards leaves 4-shard reports behind: they are set aside, and said to be).
//! - **One report per shard.** The same report found twice (a fetched copy beside the
//!   original) counts once; two runs of one shard give the later run's report.
//! - **Agreement.** Every shard must have computed the same assignment; VMs reported by two
//!   shards, or assigned to a shard that reported without them, are named.
//! - **Nothing invented.** A missing shard is listed with the VMs it was assigned, and the
//!   merged status is `incomplete`; a failed or interrupted shard makes it `failed` or
//!   `interrupted`.
//!
//! The result depends only on the reports' contents (never on the time of the merge or the order
//! they were found in), so merging again gives the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::batch::{
    BatchReport, BatchVmStatus, MergeSection, MergedShard, RunFacts, ShardSection, assemble,
};

/// A shard report as found.
#[derive(Clone, Debug)]
pub struct Found {
    pub path: PathBuf,
    pub report: BatchReport,
}

/// Why no merged report can be made.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no shard reports found{}", if .0.is_empty() { String::new() } else { format!(" ({})", .0) })]
    Nothing(String),
    #[error(
        "the shard reports found belong to {} batches ({}); merge one batch at a time, giving \
         the directories of that batch's shards",
        .0.len(),
        .0.iter().map(|(id, n)| format!("{id}: {n} report{}", if *n == 1 { "" } else { "s" })).collect::<Vec<_>>().join(", ")
    )]
    ManyBatches(Vec<(String, usize)>),
}

fn shard(f: &Found) -> &ShardSection {
    f.report
        .shard
        .as_ref()
        .expect("only shard reports are merged")
}

/// Merges shard reports (every one with a `shard` section) into one batch report, with a
/// `merge` section saying what was found.
pub fn merge(found: Vec<Found>) -> Result<BatchReport, MergeError> {
    let found: Vec<Found> = found
        .into_iter()
        .filter(|f| f.report.shard.is_some())
        .collect();
    if found.is_empty() {
        return Err(MergeError::Nothing(String::new()));
    }
    let mut batches: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &found {
        *batches.entry(&f.report.batch.batch_id).or_default() += 1;
    }
    if batches.len() > 1 {
        return Err(MergeError::ManyBatches(
            batches
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        ));
    }
    let mut problems: Vec<String> = Vec::new();
    // Set by what makes the merged result doubtful, not by what is only worth saying.
    let mut doubtful = false;

    // The layout of the latest shard run.
    let latest = found
        .iter()
        .max_by(|a, b| {
            shard(a)
                .started_unix
                .total_cmp(&shard(b).started_unix)
                .then_with(|| b.path.cmp(&a.path))
        })
        .expect("not empty");
    let count = shard(latest).count;
    let older: Vec<&Found> = found.iter().filter(|f| shard(f).count != count).collect();
    if !older.is_empty() {
        let counts: BTreeSet<usize> = older.iter().map(|f| shard(f).count).collect();
        problems.push(format!(
            "set aside {} report{} of an earlier split into {} shards; merged the latest split \
             into {count}",
            older.len(),
            if older.len() == 1 { "" } else { "s" },
            counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }

    // One report per index: the latest run's; copies of one report count once.
    let mut chosen: BTreeMap<usize, &Found> = BTreeMap::new();
    for f in found.iter().filter(|f| shard(f).count == count) {
        let idx = shard(f).index;
        match chosen.get(&idx) {
            None => {
                chosen.insert(idx, f);
            }
            Some(have) => {
                let same_run = shard(have).started_unix == shard(f).started_unix
                    && have.report.timestamp == f.report.timestamp;
                if same_run {
                    // A copy (fetched beside the original): the first path found stands.
                    if f.path < have.path {
                        chosen.insert(idx, f);
                    }
                } else {
                    let (newer, older) = if shard(f).started_unix > shard(have).started_unix {
                        (f, *have)
                    } else {
                        (*have, f)
                    };
                    problems.push(format!(
                        "shard {idx} has reports of two runs; took the later one ({}), not {}",
                        newer.path.display(),
                        older.path.display()
                    ));
                    chosen.insert(idx, newer);
                }
            }
        }
    }

    // The assignment every shard computed.
    let digests: BTreeMap<&str, Vec<usize>> =
        chosen.iter().fold(BTreeMap::new(), |mut m, (idx, f)| {
            m.entry(shard(f).assignment_digest.as_str())
                .or_insert_with(Vec::new)
                .push(*idx);
            m
        });
    let reference = shard(chosen.values().next().expect("not empty")).clone();
    if digests.len() > 1 {
        doubtful = true;
        problems.push(format!(
            "the shards computed different assignments ({}): they saw a different batch file or \
             different source sizes, so a VM may have run in two shards or in none; rerun the \
             shards against the same files",
            digests
                .values()
                .map(|idxs| format!("shards {}", list(idxs)))
                .collect::<Vec<_>>()
                .join(" against ")
        ));
    }

    let missing: Vec<usize> = (0..count).filter(|i| !chosen.contains_key(i)).collect();
    let first_start = chosen
        .values()
        .map(|f| shard(f).started_unix)
        .fold(f64::INFINITY, f64::min);
    let end = chosen
        .values()
        .map(|f| shard(f).started_unix + f.report.batch.duration_seconds)
        .fold(f64::NEG_INFINITY, f64::max);

    // Every VM once, in the batch file's order.
    let mut results = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut shards = Vec::new();
    let mut failed_shards = Vec::new();
    let mut interrupted = false;
    for idx in 0..count {
        let assigned = reference.loads.get(idx).map(|l| l.vms).unwrap_or_default();
        let Some(f) = chosen.get(&idx) else {
            shards.push(MergedShard {
                index: idx,
                status: "missing".to_owned(),
                report: None,
                assigned_vms: assigned,
                reported_vms: 0,
            });
            continue;
        };
        let b = &f.report.batch;
        let offset = shard(f).started_unix - first_start;
        let enabled = f
            .report
            .vm_results
            .iter()
            .filter(|v| v.status != BatchVmStatus::Skipped)
            .count();
        if enabled != assigned && digests.len() == 1 {
            doubtful = true;
            problems.push(format!(
                "shard {idx} was assigned {assigned} VMs but its report ({}) lists {enabled}",
                f.path.display()
            ));
        }
        if b.status != "succeeded" {
            failed_shards.push(idx);
        }
        interrupted |= b.status == "interrupted";
        shards.push(MergedShard {
            index: idx,
            status: b.status.clone(),
            report: Some(f.path.clone()),
            assigned_vms: assigned,
            reported_vms: enabled,
        });
        for v in &f.report.vm_results {
            if let Some(other) = seen.get(&v.vm_id) {
                doubtful = true;
                problems.push(format!(
                    "vm {} is in the reports of shards {other} and {idx}; kept shard {other}'s",
                    v.vm_id
                ));
                continue;
            }
            seen.insert(v.vm_id.clone(), idx);
            let mut v = v.clone();
            v.shard = Some(idx);
            v.start_offset_seconds = v
                .start_offset_seconds
                .map(|s| crate::units::round_to(s + offset, 3));
            results.push(v);
        }
    }
    results.sort_by_key(|v| (v.index, v.vm_id.clone()));
    // Each shard keeps the MACs it makes unique against the whole batch's manifests, but an
    // export entry's MACs are known only to its own shard: two VMs of the batch with one MAC
    // would fight on the network.
    let mut by_mac: BTreeMap<crate::manifest::MacAddr, &str> = BTreeMap::new();
    for v in &results {
        for mac in &v.macs {
            if let Some(other) = by_mac.insert(*mac, &v.vm_id)
                && other != v.vm_id
            {
                doubtful = true;
                problems.push(format!(
                    "vms {other} and {} both have MAC {mac}: give one another                      (network_mapping.mac_address_overrides) before starting them",
                    v.vm_id
                ));
            }
        }
    }
    if !missing.is_empty() {
        let lost: usize = missing
            .iter()
            .map(|&i| reference.loads.get(i).map(|l| l.vms).unwrap_or_default())
            .sum();
        problems.push(format!(
            "no report from shard{} {} of {count}: {lost} VM{} have no result; run {} (with \
             --batch-resume), then merge again",
            if missing.len() == 1 { "" } else { "s" },
            list(&missing),
            if lost == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|i| format!("--batch-shard {i}/{count}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let any = chosen.values().next().expect("not empty");
    let earliest = chosen
        .values()
        .min_by(|a, b| shard(a).started_unix.total_cmp(&shard(b).started_unix))
        .expect("not empty");
    let facts = RunFacts {
        batch_id: any.report.batch.batch_id.clone(),
        manifest_path: any.report.batch.manifest_path.clone(),
        parallel_limit: chosen.values().map(|f| f.report.batch.parallel_limit).sum(),
        continue_on_error: any.report.batch.continue_on_error,
        resumed: chosen.values().any(|f| f.report.batch.resumed),
        started_at: earliest.report.timestamp.clone(),
        duration_seconds: crate::units::round2((end - first_start).max(0.0)),
        interrupted,
    };
    let mut report = assemble(&facts, results);
    let complete = missing.is_empty() && !doubtful;
    // A missing shard says more than a failed VM: some VMs have no result at all.
    if !complete && report.batch.status != "interrupted" {
        report.batch.status = "incomplete".to_owned();
        report.batch.success = false;
    }
    if !failed_shards.is_empty() && report.batch.status == "succeeded" {
        report.batch.status = "failed".to_owned();
        report.batch.success = false;
    }
    report.merge = Some(MergeSection {
        shard_count: count,
        assignment_digest: reference.assignment_digest,
        shards,
        missing_shards: missing,
        failed_shards,
        problems,
        complete,
    });
    Ok(report)
}

fn list(indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
