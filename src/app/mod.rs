//! The entry layer: one file per mode, and what they share.
//!
//! [`run`] reads like the program: `--print-schema` prints one of [`crate::schemas`] and
//! returns before anything is read; otherwise gather the tool options from `--config` files and
//! the command line ([`options`]), set up logging, then hand over to exactly one mode: import a
//! libvirt domain ([`import`]), run a batch ([`batch`]), or run one manifest, which includes
//! `--dump-config` and `--dry-run` ([`single`]). Every mode turns its outcome into an exit code;
//! the text it prints comes from [`render`], built from typed outcomes. Errors come back as an
//! [`AppError`], which `main.rs` prints once with [`render_error`] and maps with
//! [`AppError::exit_code`].

mod batch;
mod import;
mod merge;
pub(crate) mod options;
pub mod render;
mod setup;
mod single;

use std::io::Write;

use serde_json::Value;

use crate::batch::BatchError;
use crate::cli::Cli;
use crate::config::ConfigError;
use crate::exit_code;
use crate::libvirt::import::ImportError;
use crate::manifest::ManifestError;
use crate::plan::PlanError;

/// The `cmd:` values this version understands (a manifest needs none).
const COMMANDS: &[&str] = &["libvirt-xml"];

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Export(#[from] crate::exports::ExportError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("could not write the report")]
    Report(#[source] crate::atomic::WriteError),
    #[error("could not set up {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) | AppError::Config(_) | AppError::Manifest(_) => {
                exit_code::INVALID_INPUT
            }
            AppError::Plan(p) if p.is_environment() => exit_code::MISSING_TOOL,
            AppError::Plan(_) => exit_code::INVALID_INPUT,
            AppError::Import(e) if e.is_environment() => exit_code::MISSING_TOOL,
            AppError::Import(ImportError::Interrupted) => exit_code::INTERRUPTED,
            AppError::Import(
                ImportError::Checksum { .. }
                | ImportError::Write(_)
                | ImportError::SelfCheck { .. },
            ) => exit_code::VM_FAILED,
            AppError::Import(_) => exit_code::INVALID_INPUT,
            AppError::Export(e) if e.is_environment() => exit_code::MISSING_TOOL,
            AppError::Export(crate::exports::ExportError::Interrupted) => exit_code::INTERRUPTED,
            AppError::Export(
                crate::exports::ExportError::Checksum { .. }
                | crate::exports::ExportError::Write(_)
                | crate::exports::ExportError::SelfCheck { .. },
            ) => exit_code::VM_FAILED,
            AppError::Export(_) => exit_code::INVALID_INPUT,
            AppError::Batch(BatchError::Tool(_) | BatchError::BootTestTool(_)) => {
                exit_code::MISSING_TOOL
            }
            AppError::Batch(_) => exit_code::INVALID_INPUT,
            AppError::Report(_) => exit_code::VM_FAILED,
            // Another run holds an output directory: nothing was touched, run it later.
            AppError::Lock(_) => exit_code::INVALID_INPUT,
            // Nothing has been touched yet (log file, signal handlers).
            AppError::Setup { .. } => exit_code::INVALID_INPUT,
        }
    }
}

/// The error and its causes, each cause on its own line.
pub fn render_error(err: &AppError) -> String {
    crate::diag::with_causes(err)
}

/// Runs the mode the command line asks for and returns the exit code.
pub fn run(cli: Cli) -> Result<u8, AppError> {
    // Like --version: nothing is read, set up or checked first.
    if let Some(schema) = cli.print_schema {
        print_text(schema.text());
        return Ok(exit_code::SUCCESS);
    }
    let options::Gathered {
        mut options,
        manifest_docs,
        config_layer,
    } = options::gather(&cli)?;
    setup::init_logging(
        options.verbose,
        options.quiet,
        options.log_file.as_deref(),
        options.log_format,
    )?;
    // With the event stream on stdout, what is printed for people goes to stderr.
    if options.progress.unwrap_or(cli.progress) == crate::ui::ProgressMode::Json {
        TEXT_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    setup::start_reaper();

    if !cli.batch_merge.is_empty() {
        return merge::run(&cli.batch_merge, &options);
    }

    if let Some(cmd) = options.cmd.as_deref()
        && !COMMANDS.contains(&cmd)
    {
        return Err(AppError::Usage(format!(
            "unknown cmd '{cmd}': this version of hyper2kvm supports cmd: {} (a manifest needs \
             no cmd: pass --manifest FILE)",
            COMMANDS.join(", ")
        )));
    }
    let libvirt_xml = cli.libvirt_xml.clone().or(options.libvirt_xml.take());
    if options.cmd.as_deref() == Some("libvirt-xml") && libvirt_xml.is_none() {
        return Err(AppError::Usage(
            "libvirt-xml mode requires --libvirt-xml <path> or --xml-path <path>".to_owned(),
        ));
    }
    if let Some(xml) = libvirt_xml {
        return import::run(&cli, options, xml, &manifest_docs, &config_layer);
    }
    if let Some((kind, path)) = cli.export_source() {
        return import::run_export(&cli, options, kind, path, &manifest_docs, &config_layer);
    }

    if let Some(batch_path) = options.batch_manifest.clone() {
        if !manifest_docs.is_empty() || !config_layer.is_empty() {
            return Err(AppError::Usage(
                "--batch-manifest runs the manifests it lists; put shared settings in its \
                 shared_config, not in --manifest or --config files"
                    .to_owned(),
            ));
        }
        if cli.dump_config {
            return Err(AppError::Usage(
                "--dump-config shows one VM: run it with --manifest on a VM's manifest".to_owned(),
            ));
        }
        if options.preview_guest {
            return Err(AppError::Usage(
                "--preview-guest reads one VM's guest: run it with --manifest on a VM's manifest \
                 and --dry-run"
                    .to_owned(),
            ));
        }
        return batch::run(
            &batch_path,
            &options,
            &options::ScaleOut::of(&cli),
            cli.progress,
        );
    }

    if manifest_docs.is_empty() {
        // --dump-config included: it shows what a run would use, and a run refuses this.
        return Err(AppError::Usage(
            "no manifest given: pass --manifest FILE, or --config FILE with a file that holds \
             manifest_version (see --help)"
                .to_owned(),
        ));
    }

    single::run(&cli, &options, manifest_docs, config_layer)
}

/// Set when stdout carries the `--progress json` event stream.
static TEXT_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints text for people: on stdout, or on stderr when stdout is the event stream.
fn print_text(text: &str) {
    if TEXT_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    print_text(&format!("{text}\n"));
}
