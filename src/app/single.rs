//! One VM from its manifest: `--dump-config` (the resolved manifest), `--dry-run` (the plan,
//! and with `--preview-guest` the guest repairs computed read-only), or the run itself, its
//! report, its page and the summary.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::options::{Options, merge_manifests};
use super::{AppError, print_json, print_text, render, setup};
use crate::atomic::WriteError;
use crate::cli::Cli;
use crate::events::VmStatus;
use crate::exec::CancelToken;
use crate::exit_code;
use crate::manifest::{self, Layers};
use crate::pipeline;
use crate::plan::{self, PlanOptions};
use crate::report;
use crate::ui::Display;

pub(super) fn run(
    cli: &Cli,
    options: &Options,
    manifest_docs: Vec<(PathBuf, Map<String, Value>)>,
    config_layer: Map<String, Value>,
) -> Result<u8, AppError> {
    let (manifest_path, doc) = merge_manifests(manifest_docs);
    let layers = Layers {
        shared_config: (!config_layer.is_empty()).then_some(config_layer),
        overrides: None,
    };
    let loaded = manifest::resolve(&manifest_path, doc, &layers)?;
    if cli.dump_config {
        // The typed manifest, so every default is shown as a run will use it.
        let mut resolved = serde_json::to_value(&loaded.manifest).unwrap_or(Value::Null);
        drop_unset(&mut resolved);
        // Notes go to stderr, so what stdout holds stays a manifest.
        let mut err = std::io::stderr().lock();
        for note in loaded.notes.iter().filter(|_| !options.quiet) {
            let _ = writeln!(err, "note: {note}");
        }
        drop(err);
        print_json(&resolved);
        return Ok(exit_code::SUCCESS);
    }

    if options.preview_guest && !(options.dry_run || loaded.manifest.options.dry_run) {
        return Err(AppError::Usage(
            "--preview-guest shows what a dry run would repair; add --dry-run".to_owned(),
        ));
    }
    let mut plan = plan::plan(
        &loaded,
        &PlanOptions {
            output_dir_override: options.output_dir.clone(),
            default_output_dir: None,
            overwrite: options.overwrite,
            dry_run: options.dry_run,
            preview_guest: options.preview_guest,
            in_place: options.in_place,
            vm_id: None,
            batch_id: None,
            guest_env: None,
            libvirt_uri: options.connect.clone(),
            replace_domains: options.overwrite,
            reserved_macs: Default::default(),
        },
    )?;
    if plan.dry_run {
        print_text(&plan.describe());
        if plan.fix.is_some() {
            print_text(&preview(&plan, options.preview_guest)?);
        }
        return Ok(exit_code::SUCCESS);
    }

    // Held until the report is written; leftovers of a killed run are gone once it is taken.
    let held = crate::lock::take(&plan.claim())?;
    plan.notes
        .extend(held.cleaned.iter().map(|c| c.note.clone()));
    let cancel = CancelToken::new();
    setup::install_signal_handlers(&cancel)?;
    let display = Display::start(
        options.progress.unwrap_or(cli.progress),
        crate::ui::Totals {
            vms: 1,
            bytes: plan.disks.iter().map(|d| d.expected_bytes).sum(),
            widest_id: plan.vm_id.chars().count(),
        },
    );
    let outcome = pipeline::run_vm(
        &plan,
        &cancel,
        &display.sink(),
        &pipeline::SpaceLedger::new(),
    );
    display.finish();

    let vm_report = report::vm_report(&plan, &outcome);
    // The report and its page are both tried, whatever happens to either.
    let written: Vec<(PathBuf, Result<(), WriteError>)> = match &plan.report_path {
        None => Vec::new(),
        Some(path) => {
            let page_path = plan::report_page_path(path);
            let dir = path.parent().unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let page = report::html::vm_page(&vm_report, dir, &name);
            vec![
                (path.clone(), report::write(path, &vm_report)),
                (
                    page_path.clone(),
                    crate::atomic::write(&page_path, page.as_bytes()),
                ),
            ]
        }
    };
    let all_written = written.iter().all(|(_, r)| r.is_ok());
    // The summary is what is left of the run when the report is lost: it always prints, but
    // for a success under -q.
    if !(options.quiet && outcome.status == VmStatus::Succeeded && all_written) {
        print_text(&render::summary(&plan, &outcome, &written));
    }
    drop(held);
    let unwritten = written.into_iter().find_map(|(_, r)| r.err());
    match (outcome.status, unwritten) {
        (VmStatus::Interrupted, _) => Ok(exit_code::INTERRUPTED),
        (_, Some(e)) => Err(AppError::Report(e)),
        (VmStatus::Succeeded, None) => Ok(exit_code::SUCCESS),
        (VmStatus::Failed, None) => Ok(exit_code::VM_FAILED),
    }
}

/// The dry run's account of the guest repairs. They can only be known by reading the guest,
/// which a dry run does only when asked (`--preview-guest`), read-only; a guest that cannot be
/// read is said, and the dry run still succeeds.
fn preview(plan: &plan::VmPlan, preview_guest: bool) -> Result<String, AppError> {
    if !preview_guest {
        return Ok(
            "  fix: the guest is not read by a dry run; add --preview-guest to read it \
                   (read-only) and list the repairs a run would make\n"
                .to_owned(),
        );
    }
    let mut text =
        "  fix: reading the guest read-only (--preview-guest); nothing is written to it\n"
            .to_owned();
    let cancel = CancelToken::new();
    setup::install_signal_handlers(&cancel)?;
    match pipeline::preview_fix(plan, &cancel) {
        Ok(preview) => text.push_str(&render::fix_preview(&preview)),
        Err(e) => text.push_str(&format!(
            "  note: the guest preview could not read the guest, so the repairs are not \
             listed: {e}\n"
        )),
    }
    Ok(text)
}

/// Leaves unset values (`null`) out of the dumped manifest, as the README says; `null` means
/// unset everywhere in a manifest, except inside `metadata`, whose contents are the user's.
fn drop_unset(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for (key, v) in map.iter_mut() {
                if key != "metadata" {
                    drop_unset(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unset),
        _ => {}
    }
}
