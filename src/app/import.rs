//! `--libvirt-xml`: writes a manifest for an existing libvirt domain; converts nothing.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::options::Options;
use super::{AppError, print_json, print_text, render, setup};
use crate::cli::Cli;
use crate::exec::CancelToken;
use crate::exit_code;
use crate::libvirt::import::{self as libvirt_import, ImportOptions};
use crate::ui::Display;

const DEFAULT_MANIFEST_FILENAME: &str = "manifest.json";

/// `--libvirt-xml`: writes a manifest for an existing domain; converts nothing.
pub(super) fn run(
    cli: &Cli,
    options: Options,
    xml_path: PathBuf,
    manifest_docs: &[(PathBuf, Map<String, Value>)],
    config_layer: &Map<String, Value>,
) -> Result<u8, AppError> {
    if options.batch_manifest.is_some() {
        return Err(AppError::Usage(
            "--libvirt-xml writes one manifest; it cannot run together with --batch-manifest \
             (import each domain first, then list the manifests in the batch file)"
                .to_owned(),
        ));
    }
    if let Some((path, _)) = manifest_docs.first() {
        return Err(AppError::Usage(format!(
            "--libvirt-xml writes a manifest; it cannot also run the manifest {} (import first, \
             then run hyper2kvm --manifest on the result)",
            path.display()
        )));
    }
    if cli.dump_config {
        return Err(AppError::Usage(
            "--dump-config does not apply to --libvirt-xml (use --dry-run to print the manifest \
             without writing it)"
                .to_owned(),
        ));
    }
    if !config_layer.is_empty() {
        let keys: Vec<&str> = config_layer.keys().map(String::as_str).collect();
        return Err(AppError::Usage(format!(
            "these config keys do not apply to --libvirt-xml: {} (it reads cmd, libvirt_xml, \
             output_dir, manifest_filename, compute_checksums, overwrite, dry_run)",
            keys.join(", ")
        )));
    }
    let Some(output_dir) = options.output_dir.clone() else {
        return Err(AppError::Usage(
            "--libvirt-xml needs --output-dir DIR (or output_dir in the config): the directory \
             the manifest is written to, and where the converted disks will go"
                .to_owned(),
        ));
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
    let opts = ImportOptions {
        xml_path,
        output_dir,
        manifest_filename,
        compute_checksums,
        overwrite: options.overwrite,
        dry_run: options.dry_run,
    };
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
    let result = libvirt_import::run(&opts, &cancel, &display.sink());
    display.finish();
    let outcome = result?;
    if !(options.quiet && outcome.written) {
        print_text(&render::import_summary(&outcome));
    }
    if !outcome.written {
        print_json(&outcome.manifest);
    }
    Ok(exit_code::SUCCESS)
}
