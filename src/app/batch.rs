//! `--batch-manifest`: plan every VM, run them, write the batch report and summary.

use std::path::Path;

use super::options::Options;
use super::{AppError, print_text, setup};
use crate::batch::{self, BatchOptions};
use crate::exec::CancelToken;
use crate::exit_code;
use crate::report;
use crate::ui::{Display, ProgressMode};

pub(super) fn run(path: &Path, options: &Options, progress: ProgressMode) -> Result<u8, AppError> {
    let prepared = batch::prepare(
        path,
        &BatchOptions {
            parallel: options.batch_parallel,
            continue_on_error: options.batch_continue_on_error,
            resume: options.batch_resume,
            overwrite: options.overwrite,
            dry_run: options.dry_run,
            output_dir: options.output_dir.clone(),
            in_place: options.in_place,
        },
    )?;
    if options.dry_run {
        print_text(&prepared.describe());
        return Ok(exit_code::SUCCESS);
    }
    let cancel = CancelToken::new();
    setup::install_signal_handlers(&cancel)?;
    let display = Display::start(options.progress.unwrap_or(progress), prepared.runnable());
    let outcome = prepared.run(&cancel, &display.sink());
    display.finish();

    let batch_report = report::batch::build(&outcome);
    let summary = report::batch::summary_text(&batch_report);
    let report_path = outcome.report_dir.join("batch_report.json");
    report::write(&report_path, &batch_report).map_err(AppError::Report)?;
    crate::atomic::write(
        &outcome.report_dir.join("batch_summary.txt"),
        summary.as_bytes(),
    )
    .map_err(AppError::Report)?;
    print_text(&summary);
    print_text(&format!(
        "Reports: {} and batch_summary.txt\n",
        report_path.display()
    ));
    let b = &batch_report.batch;
    Ok(if outcome.interrupted {
        exit_code::INTERRUPTED
    } else if b.failed_vms > 0 || b.not_started_vms > 0 {
        exit_code::BATCH_PARTIAL
    } else {
        exit_code::SUCCESS
    })
}
