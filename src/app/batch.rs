//! `--batch-manifest`: plan every VM, run them, write the batch report, summary and page.

use std::path::Path;

use super::options::{Options, ScaleOut};
use super::{AppError, print_text, render, setup};
use crate::batch::{self, BatchOptions};
use crate::exec::CancelToken;
use crate::exit_code;
use crate::report;
use crate::ui::{Display, ProgressMode};

pub(super) fn run(
    path: &Path,
    options: &Options,
    scale: &ScaleOut,
    progress: ProgressMode,
) -> Result<u8, AppError> {
    if let Some(shards) = scale.k8s_job {
        return k8s_job(path, options, scale, shards);
    }
    let shard = scale
        .shard
        .as_deref()
        .map(|s| batch::shard::ShardSpec::parse(s, |k| std::env::var(k).ok()))
        .transpose()
        .map_err(AppError::Usage)?;
    let mut prepared = batch::prepare(
        path,
        &BatchOptions {
            parallel: options.batch_parallel,
            continue_on_error: options.batch_continue_on_error,
            resume: options.batch_resume,
            overwrite: options.overwrite,
            connect: options.connect.clone(),
            dry_run: options.dry_run,
            output_dir: options.output_dir.clone(),
            in_place: options.in_place,
            shard,
        },
    )?;
    if options.dry_run {
        print_text(&prepared.describe());
        return Ok(exit_code::SUCCESS);
    }
    // Held until the batch report and summary are written.
    let held = prepared.lock_outputs()?;
    let cancel = CancelToken::new();
    setup::install_signal_handlers(&cancel)?;
    let display = Display::start(
        options.progress.unwrap_or(progress),
        crate::ui::Totals {
            vms: prepared.runnable(),
            bytes: prepared.runnable_bytes(),
            widest_id: prepared.widest_id(),
        },
    );
    let held = std::sync::Mutex::new(held);
    let outcome = prepared.run(&held, &cancel, &display.sink());
    display.finish();

    let batch_report = report::batch::build(&outcome);
    let summary = report::batch::summary_text(&batch_report);
    let page = report::html::batch_page(&batch_report, &outcome.report_dir);
    let report_path = outcome.report_dir.join("batch_report.json");
    let summary_path = outcome.report_dir.join("batch_summary.txt");
    let page_path = outcome.report_dir.join("batch_report.html");
    // All are tried, and the summary printed, whatever happens to any file.
    let written = [
        (&report_path, report::write(&report_path, &batch_report)),
        (
            &summary_path,
            crate::atomic::write(&summary_path, summary.as_bytes()),
        ),
        (
            &page_path,
            crate::atomic::write(&page_path, page.as_bytes()),
        ),
    ];
    let b = &batch_report.batch;
    let all_written = written.iter().all(|(_, r)| r.is_ok());
    // -q prints nothing for a batch that succeeded and was recorded.
    let succeeded =
        all_written && !outcome.interrupted && b.failed_vms == 0 && b.not_started_vms == 0;
    let show = !(options.quiet && succeeded);
    if show {
        print_text(&summary);
    }
    let mut unwritten = None;
    if all_written {
        if show {
            print_text(&format!(
                "Reports: {}, batch_summary.txt and batch_report.html\n",
                report_path.display()
            ));
        }
    } else {
        for (path, result) in written {
            match result {
                Ok(()) => print_text(&format!("Report: {}\n", path.display())),
                Err(e) => {
                    print_text(&render::report_not_written(&e));
                    unwritten.get_or_insert(e);
                }
            }
        }
    }
    drop(held);
    if outcome.interrupted || b.failed_vms + b.not_started_vms + b.interrupted_vms > 0 {
        let argv: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        print_text(&render::resume_command(&argv));
    }
    if outcome.interrupted {
        return Ok(exit_code::INTERRUPTED);
    }
    if let Some(e) = unwritten {
        return Err(AppError::Report(e));
    }
    Ok(if b.failed_vms > 0 || b.not_started_vms > 0 {
        exit_code::BATCH_PARTIAL
    } else {
        exit_code::SUCCESS
    })
}

/// `--batch-k8s-job N`: prints the Indexed Job that runs the batch as N shards.
fn k8s_job(
    path: &Path,
    options: &Options,
    scale: &ScaleOut,
    shards: usize,
) -> Result<u8, AppError> {
    let manifest = crate::manifest::batch::load(path).map_err(batch::BatchError::from)?;
    let job = batch::k8s::job(
        &manifest,
        &batch::k8s::JobOptions {
            shards,
            image: scale.k8s_image.clone(),
            parallelism: scale.k8s_parallelism,
            sources_claim: scale.k8s_sources_claim.clone(),
            outputs_claim: scale.k8s_outputs_claim.clone(),
            output_dir: options.output_dir.clone(),
            batch_parallel: options.batch_parallel,
            kvm: match scale.k8s_kvm.unwrap_or(crate::cli::KvmChoice::Auto) {
                crate::cli::KvmChoice::Auto => Path::new("/dev/kvm").exists(),
                crate::cli::KvmChoice::On => true,
                crate::cli::KvmChoice::Off => false,
            },
        },
    )
    .map_err(|problems| batch::BatchError::Invalid {
        path: manifest.path.clone(),
        problems,
    })?;
    print_text(&batch::k8s::to_yaml(&job));
    Ok(exit_code::SUCCESS)
}
