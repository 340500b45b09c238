//! The import modes: `--libvirt-xml` (a libvirt domain) and `--ova`, `--ovf`, `--vmx` (VMware
//! exports) each write a manifest for an existing VM; they convert nothing.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::options::Options;
use super::{AppError, print_json, print_text, render, setup};
use crate::cli::Cli;
use crate::exec::CancelToken;
use crate::exit_code;
use crate::exports::{self, ExportKind};
use crate::libvirt::import::{self as libvirt_import, ImportOptions};
use crate::ui::Display;

const DEFAULT_MANIFEST_FILENAME: &str = "manifest.json";

/// What every import mode takes from the command line and config.
struct Common {
    output_dir: PathBuf,
    manifest_filename: String,
    compute_checksums: bool,
}

/// The checks every import mode (`mode` is its option) makes: it writes one manifest, runs
/// nothing else, and needs an output directory.
fn common(
    mode: &str,
    runs: bool,
    cli: &Cli,
    options: &Options,
    manifest_docs: &[(PathBuf, Map<String, Value>)],
    config_layer: &Map<String, Value>,
) -> Result<Common, AppError> {
    if options.batch_manifest.is_some() {
        return Err(AppError::Usage(format!(
            "{mode} writes one manifest; it cannot run together with --batch-manifest \
             (import each VM first, then list the manifests in the batch file)"
        )));
    }
    if let Some((path, _)) = manifest_docs.first() {
        return Err(AppError::Usage(format!(
            "{mode} writes a manifest; it cannot also run the manifest {} (import first, \
             then run hyper2kvm --manifest on the result)",
            path.display()
        )));
    }
    if cli.dump_config {
        return Err(AppError::Usage(format!(
            "--dump-config does not apply to {mode} (use --dry-run to print the manifest \
             without writing it)"
        )));
    }
    if cli.run && !runs {
        return Err(AppError::Usage(format!(
            "--run applies to --ova, --ovf, --vmx and --hyperv; {mode} writes a manifest only (run it \
             with hyper2kvm --manifest afterwards)"
        )));
    }
    if !config_layer.is_empty() && !cli.run {
        let keys: Vec<&str> = config_layer.keys().map(String::as_str).collect();
        return Err(AppError::Usage(format!(
            "these config keys do not apply to {mode}: {} (it reads cmd, libvirt_xml, \
             output_dir, manifest_filename, compute_checksums, overwrite, dry_run; add --run to \
             convert the VM with them as the layer below its manifest)",
            keys.join(", ")
        )));
    }
    let Some(output_dir) = options.output_dir.clone() else {
        return Err(AppError::Usage(format!(
            "{mode} needs --output-dir DIR (or output_dir in the config): the directory \
             the manifest is written to, and where the converted disks will go"
        )));
    };
    let manifest_filename = cli
        .manifest_filename
        .clone()
        .or(options.manifest_filename.clone())
        .unwrap_or_else(|| DEFAULT_MANIFEST_FILENAME.to_owned());
    if manifest_filename.contains('/') || matches!(manifest_filename.as_str(), "" | "." | "..") {
        return Err(AppError::Usage(format!(
            "--manifest-filename must be a file name, not a path (got '{manifest_filename}'); \
             the directory is --output-dir"
        )));
    }
    let compute_checksums = if cli.no_compute_checksums {
        false
    } else if cli.compute_checksums {
        true
    } else {
        options.compute_checksums.unwrap_or(true)
    };
    Ok(Common {
        output_dir,
        manifest_filename,
        compute_checksums,
    })
}

/// Runs an import with the progress display, then prints its summary (and, for a dry run that
/// runs nothing after it, the manifest).
fn with_display<T>(
    cli: &Cli,
    options: &Options,
    import: impl FnOnce(&CancelToken, &crate::events::EventSink) -> Result<T, AppError>,
    summary: impl FnOnce(&T) -> (String, bool, &Value),
) -> Result<T, AppError> {
    let cancel = CancelToken::new();
    setup::install_signal_handlers(&cancel)?;
    let display = Display::start(
        options.progress.unwrap_or(cli.progress),
        crate::ui::Totals {
            vms: 1,
            bytes: 0,
            widest_id: crate::ui::NAME_WIDTH,
        },
    );
    let result = import(&cancel, &display.sink());
    display.finish();
    let outcome = result?;
    let (text, written, manifest) = summary(&outcome);
    if !(options.quiet && written) {
        print_text(&text);
    }
    if !written && !cli.run {
        print_json(manifest);
    }
    Ok(outcome)
}

/// `--libvirt-xml`: writes a manifest for an existing domain; converts nothing.
pub(super) fn run(
    cli: &Cli,
    options: Options,
    xml_path: PathBuf,
    manifest_docs: &[(PathBuf, Map<String, Value>)],
    config_layer: &Map<String, Value>,
) -> Result<u8, AppError> {
    let c = common(
        "--libvirt-xml",
        false,
        cli,
        &options,
        manifest_docs,
        config_layer,
    )?;
    let opts = ImportOptions {
        xml_path,
        output_dir: c.output_dir,
        manifest_filename: c.manifest_filename,
        compute_checksums: c.compute_checksums,
        overwrite: options.overwrite,
        dry_run: options.dry_run,
    };
    with_display(
        cli,
        &options,
        |cancel, sink| Ok(libvirt_import::run(&opts, cancel, sink)?),
        |o| (render::import_summary(o), o.written, &o.manifest),
    )?;
    Ok(exit_code::SUCCESS)
}

/// `--ova`, `--ovf`, `--vmx`: writes a manifest for a VMware export; with `--run`, then runs it
/// as `--config FILE… --manifest` would.
pub(super) fn run_export(
    cli: &Cli,
    options: Options,
    kind: ExportKind,
    path: PathBuf,
    manifest_docs: &[(PathBuf, Map<String, Value>)],
    config_layer: &Map<String, Value>,
) -> Result<u8, AppError> {
    let c = common(
        kind.option(),
        true,
        cli,
        &options,
        manifest_docs,
        config_layer,
    )?;
    let opts = exports::import::ImportOptions {
        kind,
        path,
        output_dir: c.output_dir,
        manifest_filename: c.manifest_filename,
        compute_checksums: c.compute_checksums,
        overwrite: options.overwrite,
        dry_run: options.dry_run,
        purpose: if cli.run {
            exports::import::Use::Run
        } else {
            exports::import::Use::Write
        },
        pipeline_defaults: !exports::import::names_pipeline(config_layer),
    };
    let outcome = with_display(
        cli,
        &options,
        |cancel, sink| Ok(exports::import::run(&opts, cancel, sink)?),
        |o| (render::export_summary(o), o.written, &o.manifest),
    )?;
    if !cli.run {
        return Ok(exit_code::SUCCESS);
    }
    let Value::Object(doc) = outcome.manifest else {
        unreachable!("an import's manifest is an object")
    };
    super::single::run(
        cli,
        &options,
        vec![(outcome.manifest_path, doc)],
        config_layer.clone(),
    )
}
