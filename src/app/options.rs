//! Tool options: what `--config` files and the command line say about how to run (as opposed to
//! manifest content), merged with the command line winning.
//!
//! A config file's option keys are read with serde into [`FileOptions`] (the rest of the file is
//! manifest content, kept as it is); a bad value is named by its key and file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::AppError;
use crate::cli::Cli;
use crate::config;
use crate::ui::{LogFormat, ProgressMode};

/// Tool options after merging config files and the command line (the command line wins).
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub manifest: Option<PathBuf>,
    pub batch_manifest: Option<PathBuf>,
    pub batch_parallel: Option<usize>,
    pub batch_continue_on_error: Option<bool>,
    pub batch_resume: bool,
    pub output_dir: Option<PathBuf>,
    pub dry_run: bool,
    pub preview_guest: bool,
    pub in_place: crate::plan::InPlaceConsent,
    pub overwrite: bool,
    /// `--connect` (or `connect:` in a config file).
    pub connect: Option<String>,
    pub log_file: Option<PathBuf>,
    pub verbose: u8,
    /// `-q`: no progress, only errors on stderr, no summary of a success.
    pub quiet: bool,
    pub progress: Option<ProgressMode>,
    pub log_format: LogFormat,
    pub cmd: Option<String>,
    pub libvirt_xml: Option<PathBuf>,
    pub manifest_filename: Option<String>,
    pub compute_checksums: Option<bool>,
}

/// What the config files and the command line amount to.
pub(crate) struct Gathered {
    pub options: Options,
    /// Manifest documents, in order (`--config` files that hold `manifest_version`, then
    /// `--manifest`).
    pub manifest_docs: Vec<(PathBuf, Map<String, Value>)>,
    /// The other config files' manifest content, merged: a layer below the manifest.
    pub config_layer: Map<String, Value>,
}

/// Loads every `--config`/`--manifest` file and sorts their content into tool options, manifest
/// documents and a lower configuration layer.
/// The scale-out flags, which only the command line sets.
#[derive(Clone, Debug, Default)]
pub struct ScaleOut {
    pub shard: Option<String>,
    pub k8s_job: Option<usize>,
    pub k8s_image: Option<String>,
    pub k8s_parallelism: Option<usize>,
    pub k8s_sources_claim: Option<String>,
    pub k8s_outputs_claim: Option<String>,
    pub k8s_kvm: Option<crate::cli::KvmChoice>,
}

impl ScaleOut {
    pub fn of(cli: &Cli) -> Self {
        ScaleOut {
            shard: cli.batch_shard.clone(),
            k8s_job: cli.batch_k8s_job.map(usize::from),
            k8s_image: cli.k8s_image.clone(),
            k8s_parallelism: cli.k8s_parallelism.map(usize::from),
            k8s_sources_claim: cli.k8s_sources_claim.clone(),
            k8s_outputs_claim: cli.k8s_outputs_claim.clone(),
            k8s_kvm: cli.k8s_kvm,
        }
    }
}

pub(crate) fn gather(cli: &Cli) -> Result<Gathered, AppError> {
    let mut options = Options::default();
    let mut manifest_docs = Vec::new();
    let mut config_layer = Map::new();
    for file in &cli.config {
        let mut doc = config::load_document_as(file, config::DocumentKind::Config)?;
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
        ("--batch-shard", cli.batch_shard.is_some()),
        ("--batch-k8s-job", cli.batch_k8s_job.is_some()),
    ];
    if !batch_mode && let Some((flag, _)) = batch_only.iter().find(|(_, set)| *set) {
        return Err(AppError::Usage(format!(
            "{flag} applies to batch mode; it needs --batch-manifest FILE"
        )));
    }
    // A file named as a manifest is one, whatever it holds (validation says what is missing).
    if let Some(path) = cli.manifest.clone().or_else(|| options.manifest.take()) {
        let doc = config::load_document_as(&path, config::DocumentKind::Manifest)?;
        manifest_docs.push((path, doc));
    }
    // The command line beats config files.
    if cli.output_dir.is_some() {
        options.output_dir = cli.output_dir.clone();
    }
    options.dry_run |= cli.dry_run;
    options.preview_guest = cli.preview_guest;
    options.in_place = crate::plan::InPlaceConsent {
        allow_in_place: cli.allow_in_place,
        no_disk_backup: cli.no_disk_backup,
    };
    options.overwrite |= cli.overwrite;
    if cli.connect.is_some() {
        options.connect = cli.connect.clone();
    }
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
    if let Some(f) = cli.log_format {
        options.log_format = f;
    }
    // Beats the config files' verbose and progress (clap refuses it with -v or --progress).
    if cli.quiet {
        options.quiet = true;
        options.verbose = 0;
        options.progress = Some(ProgressMode::None);
    }
    Ok(Gathered {
        options,
        manifest_docs,
        config_layer,
    })
}

/// The option keys a `--config` file may hold. Paths are as written; they resolve against the
/// file's directory. Everything else in the file is manifest content.
#[derive(Debug, Default, Deserialize)]
struct FileOptions {
    manifest: Option<String>,
    batch_manifest: Option<String>,
    #[serde(default, deserialize_with = "positive")]
    batch_parallel: Option<usize>,
    batch_continue_on_error: Option<bool>,
    batch_resume: Option<bool>,
    output_dir: Option<String>,
    dry_run: Option<bool>,
    overwrite: Option<bool>,
    connect: Option<String>,
    log_file: Option<String>,
    #[serde(default, deserialize_with = "verbosity")]
    verbose: Option<u8>,
    progress: Option<ProgressMode>,
    log_format: Option<LogFormat>,
    /// The Python tool's configs spell it either way, and `libvirt_xml` or `libvirt-xml`.
    #[serde(alias = "command")]
    cmd: Option<String>,
    #[serde(alias = "xml_path")]
    libvirt_xml: Option<String>,
    manifest_filename: Option<String>,
    compute_checksums: Option<bool>,
    /// Manifest content.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// A positive integer (`batch_parallel`).
fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v = Value::deserialize(d)?;
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("must be a positive integer (got {v})")))
}

/// 0 to 3 (`verbose`, as `-v` to `-vvv`).
fn verbosity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let v = Value::deserialize(d)?;
    v.as_u64()
        .filter(|n| *n <= 3)
        .and_then(|n| u8::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("must be an integer from 0 to 3 (got {v})"))
        })
}

/// Takes the option keys out of a config file's document (the rest stays manifest content).
fn take_options(
    file: &Path,
    base: &Path,
    doc: &mut Map<String, Value>,
    options: &mut Options,
) -> Result<(), AppError> {
    let taken: FileOptions = serde_path_to_error::deserialize(Value::Object(std::mem::take(doc)))
        .map_err(|e| {
        AppError::Usage(format!("{}: {}: {}", file.display(), e.path(), e.inner()))
    })?;
    let path = |p: Option<String>| p.map(|p| config::resolve_relative(base, &p));
    *doc = taken.rest;
    options.manifest = path(taken.manifest).or(options.manifest.take());
    options.batch_manifest = path(taken.batch_manifest).or(options.batch_manifest.take());
    options.output_dir = path(taken.output_dir).or(options.output_dir.take());
    options.log_file = path(taken.log_file).or(options.log_file.take());
    options.libvirt_xml = path(taken.libvirt_xml).or(options.libvirt_xml.take());
    if taken.batch_parallel.is_some() {
        options.batch_parallel = taken.batch_parallel;
    }
    if taken.batch_continue_on_error.is_some() {
        options.batch_continue_on_error = taken.batch_continue_on_error;
    }
    if let Some(b) = taken.batch_resume {
        options.batch_resume = b;
    }
    if let Some(b) = taken.dry_run {
        options.dry_run = b;
    }
    if let Some(b) = taken.overwrite {
        options.overwrite = b;
    }
    if taken.connect.is_some() {
        options.connect = taken.connect;
    }
    if let Some(v) = taken.verbose {
        options.verbose = v;
    }
    if taken.progress.is_some() {
        options.progress = taken.progress;
    }
    if let Some(f) = taken.log_format {
        options.log_format = f;
    }
    if let Some(cmd) = taken.cmd {
        options.cmd = Some(cmd.replace('_', "-"));
    }
    if taken.manifest_filename.is_some() {
        options.manifest_filename = taken.manifest_filename;
    }
    if taken.compute_checksums.is_some() {
        options.compute_checksums = taken.compute_checksums;
    }
    Ok(())
}

/// Merges manifest documents in order (later wins); relative paths resolve against the last one.
pub(crate) fn merge_manifests(
    docs: Vec<(PathBuf, Map<String, Value>)>,
) -> (PathBuf, Map<String, Value>) {
    let mut path = PathBuf::new();
    let mut merged = Map::new();
    for (p, doc) in docs {
        path = p;
        config::merge_maps(&mut merged, doc);
    }
    (path, merged)
}
