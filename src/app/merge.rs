//! `--batch-merge DIR...`: find the shard reports under each directory, merge them, and write
//! the batch report, summary and page.

use std::path::{Path, PathBuf};

use super::options::Options;
use super::{AppError, print_text, render};
use crate::exit_code;
use crate::report::{self, batch::BatchReport, merge};

/// How deep under each directory reports are looked for: `<dir>/shards/shard-I-of-N/` is
/// three levels, a fetched copy `<fetch dir>/<host>/shards/shard-I-of-N/` four.
const MAX_DEPTH: usize = 6;
/// The largest report read (a shard of 10,000 VMs with their embedded reports is about 200 MB).
const MAX_REPORT_BYTES: u64 = 1 << 30;
/// The name every batch report has.
const REPORT_NAME: &str = "batch_report.json";

pub(super) fn run(dirs: &[PathBuf], options: &Options) -> Result<u8, AppError> {
    let mut files = Vec::new();
    for dir in dirs {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => find(&crate::config::absolute(dir), 0, &mut files),
            Ok(_) => {
                return Err(AppError::Usage(format!(
                    "--batch-merge {}: not a directory (expected a directory holding shard \
                     reports, such as <output dir>/shards)",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(AppError::Usage(format!(
                    "--batch-merge {}: {e}",
                    dir.display()
                )));
            }
        }
    }
    files.sort();
    files.dedup_by(|a, b| same_file(a, b));
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for path in files {
        match read(&path) {
            Ok(Some(report)) => found.push(merge::Found { path, report }),
            Ok(None) => {}
            Err(why) => unreadable.push(format!("{}: {why}", path.display())),
        }
    }
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut merged = match merge::merge(found) {
        Ok(m) => m,
        Err(merge::MergeError::Nothing(_)) => {
            let mut why = format!(
                "no shard reports under {searched} (a shard writes \
                 <output dir>/shards/shard-I-of-N/{REPORT_NAME})"
            );
            for u in &unreadable {
                why.push_str(&format!("\n  - unreadable: {u}"));
            }
            return Err(AppError::Usage(why));
        }
        Err(e) => return Err(AppError::Usage(e.to_string())),
    };
    if let Some(m) = merged.merge.as_mut()
        && !unreadable.is_empty()
    {
        for u in &unreadable {
            m.problems.push(format!("could not read {u}"));
        }
    }

    let out_dir = options
        .output_dir
        .clone()
        .map(|d| crate::config::absolute(&d))
        .unwrap_or_else(|| crate::config::absolute(&dirs[0]));
    let mut claim = crate::lock::Claim::default();
    claim.dir(&out_dir);
    let held = crate::lock::take(&claim)?;
    let written = write(&merged, &out_dir);
    drop(held);

    let b = &merged.batch;
    let m = merged.merge.as_ref().expect("a merge has its section");
    let succeeded = written.is_ok() && m.complete && b.status == "succeeded";
    if !(options.quiet && succeeded) {
        print_text(&report::batch::summary_text(&merged));
    }
    match written {
        Ok(report_path) => {
            if !(options.quiet && succeeded) {
                print_text(&format!(
                    "Reports: {}, batch_summary.txt and batch_report.html\n",
                    report_path.display()
                ));
            }
        }
        Err(e) => {
            print_text(&render::report_not_written(&e));
            return Err(AppError::Report(e));
        }
    }
    Ok(if succeeded {
        exit_code::SUCCESS
    } else {
        exit_code::BATCH_PARTIAL
    })
}

/// Writes the three files; all are tried whatever happens to one.
fn write(merged: &BatchReport, out_dir: &Path) -> Result<PathBuf, crate::atomic::WriteError> {
    let report_path = out_dir.join(REPORT_NAME);
    let summary = report::batch::summary_text(merged);
    let page = report::html::batch_page(merged, out_dir);
    let results = [
        report::write(&report_path, merged),
        crate::atomic::write(&out_dir.join("batch_summary.txt"), summary.as_bytes()),
        crate::atomic::write(&out_dir.join("batch_report.html"), page.as_bytes()),
    ];
    for r in results {
        r?;
    }
    Ok(report_path)
}

/// Every `batch_report.json` under `dir`, not following links to directories.
fn find(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() && depth < MAX_DEPTH {
            find(&path, depth + 1, out);
        } else if e.file_name() == REPORT_NAME && !kind.is_dir() {
            out.push(path);
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// A shard report, `None` for any other batch report (a one-process run's, or a merged one,
/// which a second merge must not count again).
fn read(path: &Path) -> Result<Option<BatchReport>, String> {
    let m = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if m.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_REPORT_BYTES} a batch report may have",
            m.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON ({e}); a truncated copy?"))?;
    if value.get("report_type").and_then(|t| t.as_str()) != Some("batch_conversion") {
        return Ok(None);
    }
    if value.get("shard").is_none_or(|s| s.is_null()) {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| format!("not a batch report of this version ({e})"))
}
