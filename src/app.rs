//! One function per mode: dump the resolved configuration, run one VM from its manifest, or
//! run a batch, or import a libvirt domain XML into a manifest (`--libvirt-xml`, or
//! `cmd: libvirt-xml`).
//!
//! This is the layer between the command line and the library: it merges `--config` files,
//! separates tool options from manifest content, sets up logging and signal handling, and turns
//! outcomes into exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::batch::{self, BatchError, BatchOptions};
use crate::cli::Cli;
use crate::config::{self, ConfigError};
use crate::exec::CancelToken;
use crate::exit_code;
use crate::libvirt::import::{self as libvirt_import, ImportError, ImportOptions, ImportOutcome};
use crate::manifest::{self, Layers, ManifestError};
use crate::pipeline::{self, VmStatus};
use crate::plan::{self, PlanError, PlanOptions};
use crate::report;
use crate::ui::{Display, ProgressMode};

/// Keys of a `--config` file that set tool options rather than manifest content.
const OPTION_KEYS: &[&str] = &[
    "manifest",
    "batch_manifest",
    "batch_parallel",
    "batch_continue_on_error",
    "batch_resume",
    "output_dir",
    "dry_run",
    "overwrite",
    "log_file",
    "verbose",
    "progress",
    "cmd",
    "command",
    "libvirt_xml",
    "xml_path",
    "manifest_filename",
    "compute_checksums",
];

/// The `cmd:` values this version understands (a manifest needs none).
const COMMANDS: &[&str] = &["libvirt-xml"];
const DEFAULT_MANIFEST_FILENAME: &str = "manifest.json";

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
            AppError::Batch(BatchError::Tool(_) | BatchError::BootTestTool(_)) => {
                exit_code::MISSING_TOOL
            }
            AppError::Batch(_) => exit_code::INVALID_INPUT,
            AppError::Report(_) => exit_code::VM_FAILED,
            // Nothing has been touched yet (log file, signal handlers).
            AppError::Setup { .. } => exit_code::INVALID_INPUT,
        }
    }
}

/// The error and its causes, each cause on its own line.
pub fn render_error(err: &AppError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    // Transparent variants already print their source's text.
    if matches!(
        err,
        AppError::Config(_) | AppError::Manifest(_) | AppError::Plan(_) | AppError::Batch(_)
    ) {
        source = source.and_then(std::error::Error::source);
    }
    while let Some(s) = source {
        text.push_str("\n  caused by: ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Tool options after merging config files and the command line (the command line wins).
#[derive(Debug, Default)]
struct Options {
    manifest: Option<PathBuf>,
    batch_manifest: Option<PathBuf>,
    batch_parallel: Option<usize>,
    batch_continue_on_error: Option<bool>,
    batch_resume: bool,
    output_dir: Option<PathBuf>,
    dry_run: bool,
    overwrite: bool,
    log_file: Option<PathBuf>,
    verbose: u8,
    progress: Option<ProgressMode>,
    cmd: Option<String>,
    libvirt_xml: Option<PathBuf>,
    manifest_filename: Option<String>,
    compute_checksums: Option<bool>,
}

/// Runs the mode the command line asks for and returns the exit code.
pub fn run(cli: Cli) -> Result<u8, AppError> {
    let (mut options, manifest_docs, config_layer) = gather(&cli)?;
    init_logging(options.verbose, options.log_file.as_deref())?;

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
        return run_libvirt_import(&cli, options, xml, &manifest_docs, &config_layer);
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
        return run_batch(&batch_path, &options, cli.progress);
    }

    if manifest_docs.is_empty() {
        if cli.dump_config {
            print_json(&Value::Object(config_layer));
            return Ok(exit_code::SUCCESS);
        }
        return Err(AppError::Usage(
            "no manifest given: pass --manifest FILE, or --config FILE with a file that holds \
             manifest_version (see --help)"
                .to_owned(),
        ));
    }

    let (manifest_path, doc) = merge_manifests(manifest_docs);
    let layers = Layers {
        shared_config: (!config_layer.is_empty()).then_some(config_layer),
        overrides: None,
    };
    let loaded = manifest::resolve(&manifest_path, doc, &layers)?;
    if cli.dump_config {
        // The typed manifest, so every default is shown as a run will use it.
        let resolved = serde_json::to_value(&loaded.manifest).unwrap_or(Value::Null);
        print_json(&resolved);
        return Ok(exit_code::SUCCESS);
    }

    let plan = plan::plan(
        &loaded,
        &PlanOptions {
            output_dir_override: options.output_dir.clone(),
            default_output_dir: None,
            overwrite: options.overwrite,
            dry_run: options.dry_run,
            vm_id: None,
            batch_id: None,
            guest_env: None,
            reserved_macs: Default::default(),
        },
    )?;
    if plan.dry_run {
        print_text(&plan.describe());
        if plan.fix.is_some() {
            // Guest repairs can only be known by reading the guest: do that read-only.
            let cancel = CancelToken::new();
            install_signal_handlers(&cancel)?;
            match pipeline::preview_fix(&plan, &cancel) {
                Ok(preview) => print_text(&fix_preview_text(&preview)),
                Err(e) => {
                    print_text(&format!("  fix: the guest could not be read: {e}\n"));
                    return Ok(exit_code::VM_FAILED);
                }
            }
        }
        return Ok(exit_code::SUCCESS);
    }

    let cancel = CancelToken::new();
    install_signal_handlers(&cancel)?;
    let display = Display::start(options.progress.unwrap_or(cli.progress), 1);
    let outcome = pipeline::run_vm(&plan, &cancel, &display.sink());
    display.finish();

    let vm_report = report::vm_report(&plan, &outcome);
    if let Some(path) = &plan.report_path {
        report::write(path, &vm_report).map_err(AppError::Report)?;
    }
    print_text(&summary_text(&plan, &outcome));
    Ok(match outcome.status {
        VmStatus::Succeeded => exit_code::SUCCESS,
        VmStatus::Failed => exit_code::VM_FAILED,
        VmStatus::Interrupted => exit_code::INTERRUPTED,
    })
}

fn run_batch(path: &Path, options: &Options, progress: ProgressMode) -> Result<u8, AppError> {
    let prepared = batch::prepare(
        path,
        &BatchOptions {
            parallel: options.batch_parallel,
            continue_on_error: options.batch_continue_on_error,
            resume: options.batch_resume,
            overwrite: options.overwrite,
            dry_run: options.dry_run,
            output_dir: options.output_dir.clone(),
        },
    )?;
    if options.dry_run {
        print_text(&prepared.describe());
        return Ok(exit_code::SUCCESS);
    }
    let cancel = CancelToken::new();
    install_signal_handlers(&cancel)?;
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

/// The guest changes a dry run found, one per line.
fn fix_preview_text(p: &crate::guest::repair::RepairOutcome) -> String {
    let mut s =
        String::from("  fix (computed read-only from the source disks; nothing was written):\n");
    if let Some(skipped) = &p.skipped {
        s.push_str(&format!("    {skipped}\n"));
    }
    s.push_str(&format!(
        "    guest: {} ({} {}), root {}\n",
        p.guest.product_name, p.guest.os_type, p.guest.distro, p.guest.root
    ));
    for c in &p.changes {
        let line = c.line.map(|l| format!(":{l}")).unwrap_or_default();
        s.push_str(&format!("    {}{line} ({})\n", c.path, c.reason));
        if !c.before.is_empty() {
            s.push_str(&format!(
                "      - {}\n",
                c.before.trim_end().replace('\t', "  ")
            ));
        }
        if !c.after.is_empty() {
            s.push_str(&format!(
                "      + {}\n",
                c.after.trim_end().replace('\t', "  ")
            ));
        }
    }
    for r in &p.removed {
        s.push_str(&format!("    remove {r}\n"));
    }
    for i in &p.initramfs {
        let verb = if i.rebuilt { "rebuild" } else { "keep" };
        let image = i.image.as_deref().unwrap_or("its initramfs");
        s.push_str(&format!(
            "    {verb} {image} (kernel {}): {}\n",
            i.kernel, i.reason
        ));
    }
    for n in &p.notes {
        s.push_str(&format!("    note: {n}\n"));
    }
    if p.changes.is_empty() && p.removed.is_empty() && p.skipped.is_none() {
        s.push_str("    no changes needed\n");
    }
    s
}

/// `--libvirt-xml`: writes a manifest for an existing domain; converts nothing.
fn run_libvirt_import(
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
    install_signal_handlers(&cancel)?;
    let display = Display::start(options.progress.unwrap_or(cli.progress), 1);
    let result = libvirt_import::run(&opts, &cancel, &display.sink());
    display.finish();
    let outcome = result?;
    print_text(&import_summary(&outcome));
    if !outcome.written {
        print_json(&outcome.manifest);
    }
    Ok(exit_code::SUCCESS)
}

/// What an import found, and the command to run next.
pub fn import_summary(o: &ImportOutcome) -> String {
    use crate::pipeline::human_bytes;
    let f = &o.facts;
    let mut s = String::new();
    let xml = o
        .manifest
        .pointer("/source/libvirt_xml_path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    s.push_str(&format!("Imported libvirt domain {} from {xml}\n", f.name));
    let vm = o.manifest.get("vm").cloned().unwrap_or_default();
    let text = |k: &str| {
        vm.get(k)
            .map(|v| v.to_string().trim_matches('"').to_owned())
    };
    s.push_str(&format!(
        "  vm: {} vCPUs, {} GiB, firmware {}{}{}\n",
        text("cpu").unwrap_or_else(|| "?".to_owned()),
        text("mem_gb").unwrap_or_else(|| "?".to_owned()),
        text("firmware").unwrap_or_default(),
        if f.secureboot { " (Secure Boot)" } else { "" },
        text("os_hint")
            .map(|h| format!(", os_hint {h}"))
            .unwrap_or_default()
    ));
    for (i, d) in o.disks.iter().enumerate() {
        s.push_str(&format!(
            "  disk {}: {}, {}, {} (virtual {}){}: {}\n",
            d.facts.id,
            if i == 0 { "boot" } else { "data" },
            d.facts.format,
            human_bytes(d.bytes),
            human_bytes(d.virtual_size),
            if d.checksum.is_some() {
                ", checksummed"
            } else {
                ""
            },
            d.facts.path.display()
        ));
    }
    for n in &f.nics {
        s.push_str(&format!(
            "  nic {}: {}{}{}{}\n",
            n.id,
            n.kind,
            n.network
                .as_deref()
                .map(|net| format!(" {net}"))
                .unwrap_or_default(),
            n.mac.map(|m| format!(", mac {m}")).unwrap_or_default(),
            n.model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default()
        ));
    }
    for skipped in &o.skipped {
        s.push_str(&format!("  warning: not imported: {skipped}\n"));
    }
    for note in &o.notes {
        s.push_str(&format!("  note: {note}\n"));
    }
    let path = crate::exec::quote_argv(&[o.manifest_path.display().to_string()]);
    if o.written {
        s.push_str(&format!("Manifest: {path}\n"));
        s.push_str(&format!(
            "Next steps: hyper2kvm --manifest {path}   (add --dry-run to see the plan first)\n"
        ));
    } else {
        s.push_str(&format!(
            "Dry run: {path} was not written; the manifest follows.\n"
        ));
    }
    s
}

/// The short account printed after a run (the report has the details).
pub fn summary_text(plan: &plan::VmPlan, outcome: &pipeline::VmOutcome) -> String {
    let mut s = String::new();
    let status = match outcome.status {
        VmStatus::Succeeded => "succeeded",
        VmStatus::Failed => "FAILED",
        VmStatus::Interrupted => "INTERRUPTED",
    };
    s.push_str(&format!(
        "VM {}: {status} in {:.2}s\n",
        outcome.vm_id, outcome.duration_seconds
    ));
    for a in &outcome.artifacts {
        s.push_str(&format!(
            "  {} -> {} ({}, {})\n",
            if a.disk_id.is_empty() {
                a.kind
            } else {
                &a.disk_id
            },
            a.path.display(),
            a.format,
            a.size_human
        ));
    }
    let validate = outcome.stages.iter().find(|st| st.name == "validate");
    if let Some(line) = crate::boot_test::summary_line(validate.and_then(|v| v.result.as_ref())) {
        s.push_str(&line);
    }
    for w in &outcome.warnings {
        s.push_str(&format!("  warning ({}): {}\n", w.stage, w.message));
    }
    for e in &outcome.errors {
        s.push_str(&format!("  error ({}): {}\n", e.stage, e.message));
    }
    // print_fstab: the guest's fstab before and after the fix stage.
    if let Some(fix) = outcome.stages.iter().find(|st| st.name == "fix")
        && let Some(result) = &fix.result
        && let (Some(before), Some(after)) = (
            result
                .get("fstab_before")
                .and_then(serde_json::Value::as_str),
            result
                .get("fstab_after")
                .and_then(serde_json::Value::as_str),
        )
    {
        s.push_str("  /etc/fstab before:\n");
        for l in before.lines() {
            s.push_str(&format!("    {l}\n"));
        }
        s.push_str("  /etc/fstab after:\n");
        for l in after.lines() {
            s.push_str(&format!("    {l}\n"));
        }
    }
    match &plan.report_path {
        Some(p) => s.push_str(&format!("Report: {}\n", p.display())),
        None => s.push_str("Report: disabled (options.report.enabled is false)\n"),
    }
    s
}

type Gathered = (
    Options,
    Vec<(PathBuf, Map<String, Value>)>,
    Map<String, Value>,
);

/// Loads every `--config`/`--manifest` file and sorts their content into tool options, manifest
/// documents and a lower configuration layer.
fn gather(cli: &Cli) -> Result<Gathered, AppError> {
    let mut options = Options::default();
    let mut manifest_docs = Vec::new();
    let mut config_layer = Map::new();
    for file in &cli.config {
        let mut doc = config::load_document(file)?;
        let base = config::dir_of(file);
        take_options(file, &base, &mut doc, &mut options)?;
        if doc.contains_key("manifest_version") {
            manifest_docs.push((file.clone(), doc));
        } else {
            config::merge_maps(&mut config_layer, doc);
        }
    }
    let batch_mode = cli.batch_manifest.is_some() || options.batch_manifest.is_some();
    let batch_only = [
        (
            "--batch-parallel",
            cli.batch_parallel.is_some() || options.batch_parallel.is_some(),
        ),
        (
            "--batch-continue-on-error",
            cli.batch_continue_on_error
                || cli.no_batch_continue_on_error
                || options.batch_continue_on_error.is_some(),
        ),
        ("--batch-resume", cli.batch_resume || options.batch_resume),
    ];
    if !batch_mode && let Some((flag, _)) = batch_only.iter().find(|(_, set)| *set) {
        return Err(AppError::Usage(format!(
            "{flag} applies to batch mode; it needs --batch-manifest FILE"
        )));
    }
    // A file named as a manifest is one, whatever it holds (validation says what is missing).
    if let Some(path) = cli.manifest.clone().or_else(|| options.manifest.take()) {
        let doc = config::load_document(&path)?;
        manifest_docs.push((path, doc));
    }
    // The command line beats config files.
    if cli.output_dir.is_some() {
        options.output_dir = cli.output_dir.clone();
    }
    options.dry_run |= cli.dry_run;
    options.overwrite |= cli.overwrite;
    if cli.log_file.is_some() {
        options.log_file = cli.log_file.clone();
    }
    if cli.batch_manifest.is_some() {
        options.batch_manifest = cli.batch_manifest.clone();
    }
    if let Some(n) = cli.batch_parallel {
        options.batch_parallel = Some(usize::from(n));
    }
    if cli.batch_continue_on_error {
        options.batch_continue_on_error = Some(true);
    }
    if cli.no_batch_continue_on_error {
        options.batch_continue_on_error = Some(false);
    }
    options.batch_resume |= cli.batch_resume;
    options.verbose = options.verbose.max(cli.verbose);
    if cli.progress != ProgressMode::Auto {
        options.progress = Some(cli.progress);
    }
    Ok((options, manifest_docs, config_layer))
}

fn take_options(
    file: &Path,
    base: &Path,
    doc: &mut Map<String, Value>,
    options: &mut Options,
) -> Result<(), AppError> {
    let bad = |key: &str, expected: &str| {
        AppError::Usage(format!("{}: {key} must be {expected}", file.display()))
    };
    for key in OPTION_KEYS {
        let Some(value) = doc.remove(*key) else {
            continue;
        };
        match *key {
            "manifest" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a path"))?;
                options.manifest = Some(config::resolve_relative(base, s));
            }
            "batch_manifest" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a path"))?;
                options.batch_manifest = Some(config::resolve_relative(base, s));
            }
            "batch_parallel" => {
                options.batch_parallel = Some(
                    value
                        .as_u64()
                        .filter(|n| *n >= 1)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| bad(key, "a positive integer"))?,
                )
            }
            "batch_continue_on_error" => {
                options.batch_continue_on_error =
                    Some(value.as_bool().ok_or_else(|| bad(key, "a boolean"))?)
            }
            "batch_resume" => {
                options.batch_resume = value.as_bool().ok_or_else(|| bad(key, "a boolean"))?
            }
            "output_dir" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a path"))?;
                options.output_dir = Some(config::resolve_relative(base, s));
            }
            "log_file" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a path"))?;
                options.log_file = Some(config::resolve_relative(base, s));
            }
            "dry_run" => options.dry_run = value.as_bool().ok_or_else(|| bad(key, "a boolean"))?,
            "overwrite" => {
                options.overwrite = value.as_bool().ok_or_else(|| bad(key, "a boolean"))?
            }
            "verbose" => {
                options.verbose = value
                    .as_u64()
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| bad(key, "an integer from 0 to 3"))?
            }
            "cmd" | "command" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a command name"))?;
                // The Python tool's configs spell it either way.
                options.cmd = Some(s.replace('_', "-"));
            }
            "libvirt_xml" | "xml_path" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a path"))?;
                options.libvirt_xml = Some(config::resolve_relative(base, s));
            }
            "manifest_filename" => {
                let s = value.as_str().ok_or_else(|| bad(key, "a file name"))?;
                options.manifest_filename = Some(s.to_owned());
            }
            "compute_checksums" => {
                options.compute_checksums =
                    Some(value.as_bool().ok_or_else(|| bad(key, "a boolean"))?)
            }
            "progress" => {
                let s = value.as_str().unwrap_or_default();
                options.progress = Some(
                    <ProgressMode as clap::ValueEnum>::from_str(s, true)
                        .map_err(|_| bad(key, "one of: auto, bars, lines, none"))?,
                );
            }
            _ => unreachable!("every option key is handled"),
        }
    }
    Ok(())
}

/// Merges manifest documents in order (later wins); relative paths resolve against the last one.
fn merge_manifests(docs: Vec<(PathBuf, Map<String, Value>)>) -> (PathBuf, Map<String, Value>) {
    let mut path = PathBuf::new();
    let mut merged = Map::new();
    for (p, doc) in docs {
        path = p;
        config::merge_maps(&mut merged, doc);
    }
    (path, merged)
}

fn init_logging(verbose: u8, log_file: Option<&Path>) -> Result<(), AppError> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};

    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let stderr_layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(EnvFilter::new(format!("hyper2kvm={level}")));
    let file_layer = match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AppError::Setup {
                    what: "the log file",
                    source,
                })?;
            let file_level = if verbose < 2 { "info" } else { level };
            Some(
                fmt::layer()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .with_filter(EnvFilter::new(format!("hyper2kvm={file_level}"))),
            )
        }
        None => None,
    };
    // A second initialisation (tests calling `run` twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Ok(())
}

/// SIGINT/SIGTERM cancel the run; a second one exits at once.
fn install_signal_handlers(cancel: &CancelToken) -> Result<(), AppError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let setup = |source| AppError::Setup {
        what: "signal handlers",
        source,
    };
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal set it.
        flag::register_conditional_shutdown(sig, i32::from(exit_code::INTERRUPTED), cancel.flag())
            .map_err(setup)?;
        flag::register(sig, cancel.flag()).map_err(setup)?;
    }
    Ok(())
}

fn print_text(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    print_text(&format!("{text}\n"));
}
