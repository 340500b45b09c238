//! Entry points for fuzzing: one function per parser, each taking arbitrary bytes and going
//! through the code the binary runs on a file with those bytes in it.
//!
//! The `fuzz/` crate's libFuzzer targets and the stable `fuzz_*` tests of the main suite call
//! these (docs/fuzzing.md). The bytes are written to a file in a scratch directory kept for the
//! thread, so the size checks, the choice of parser by file name and the error texts are the
//! binary's own. The first byte of the input chooses the file name's extension (`.json`,
//! `.yaml` or none), so JSON read as YAML and the reverse are covered too; the rest is the file.
//!
//! Each function returns what the binary would exit with and the error text it would print.
//! Nothing here starts a process or touches a disk image: a libvirt import stops before it looks
//! at the disks, and a batch resolves its shared settings and overrides around one fixed manifest
//! rather than reading the files its entries name.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{Map, Value, json};

use crate::app::{self, AppError};
use crate::cli::Cli;
use crate::config;
use crate::exit_code;
use crate::libvirt::{import as libvirt_import, xml};
use crate::manifest::{self, Layers};

/// What one input came to.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code the binary would end with.
    pub code: u8,
    /// The error text the binary would print (empty on success).
    pub message: String,
}

impl Outcome {
    fn of(result: Result<(), AppError>) -> Outcome {
        match result {
            Ok(()) => Outcome {
                code: exit_code::SUCCESS,
                message: String::new(),
            },
            Err(e) => Outcome {
                code: e.exit_code(),
                message: app::render_error(&e),
            },
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// The thread's scratch directory, made on first use.
fn scratch() -> PathBuf {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = tempfile::Builder::new()
                .prefix("hyper2kvm-fuzz-")
                .tempdir()
                .ok();
            // The disk the fixed manifest of the batch and profile targets names.
            if let Some(d) = s.as_ref() {
                let _ = std::fs::write(d.path().join("disk0.raw"), [0u8; 512]);
            }
        }
        s.as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_else(std::env::temp_dir)
    })
}

/// Splits off the extension byte: `.json`, `.yaml`, or no extension.
fn split_ext(data: &[u8]) -> (&'static str, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => ([".json", ".yaml", ""][usize::from(*b % 3)], rest),
        None => ("", data),
    }
}

/// Writes `data` to `dir/stem<ext>`, first removing the names an earlier input may have left.
fn put(dir: &Path, stem: &str, ext: &str, data: &[u8]) -> PathBuf {
    for old in ["", ".json", ".yaml"] {
        let _ = std::fs::remove_file(dir.join(format!("{stem}{old}")));
    }
    let path = dir.join(format!("{stem}{ext}"));
    // A write that fails leaves no file: the loader then says so, which is a fine outcome too.
    let _ = std::fs::write(&path, data);
    path
}

/// A VM manifest: `--manifest FILE` up to `--dump-config` (load, profile, validation, typing).
pub fn manifest(data: &[u8]) -> Outcome {
    let (ext, body) = split_ext(data);
    let path = put(&scratch(), "manifest", ext, body);
    Outcome::of(manifest::load(&path).map(dump).map_err(AppError::from))
}

/// A `--config` file: tool options taken out, then the rest as a manifest or as the layer under
/// one (`--config FILE --dump-config`).
pub fn config(data: &[u8]) -> Outcome {
    let (ext, body) = split_ext(data);
    let path = put(&scratch(), "config", ext, body);
    let run = || -> Result<(), AppError> {
        let cli = Cli::try_parse_from([
            "hyper2kvm".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
            "--dump-config".as_ref(),
        ])
        .map_err(|e| AppError::Usage(e.to_string()))?;
        let gathered = app::options::gather(&cli)?;
        if gathered.manifest_docs.is_empty() {
            return Ok(());
        }
        let (manifest_path, doc) = app::options::merge_manifests(gathered.manifest_docs);
        let layers = Layers {
            shared_config: Some(gathered.config_layer),
            overrides: None,
        };
        manifest::resolve(&manifest_path, doc, &layers).map(dump)?;
        Ok(())
    };
    Outcome::of(run())
}

/// A Batch Manifest v1 (`--batch-manifest FILE`), then every entry's layers (`shared_config`
/// under, `overrides` over) resolved around a fixed minimal manifest.
pub fn batch(data: &[u8]) -> Outcome {
    let (ext, body) = split_ext(data);
    let dir = scratch();
    let path = put(&dir, "batch", ext, body);
    let run = || -> Result<(), AppError> {
        let batch = manifest::batch::load(&path).map_err(crate::batch::BatchError::from)?;
        for vm in batch.run_order() {
            let layers = Layers {
                shared_config: Some(batch.shared_config.clone()),
                overrides: Some(vm.overrides.clone()),
            };
            // A VM that does not resolve is that VM's failure, not the batch's: keep going.
            let _ = manifest::resolve(&dir.join("vm.json"), minimal_manifest(), &layers).map(dump);
        }
        Ok(())
    };
    Outcome::of(run())
}

/// Custom profiles: the input up to its first NUL byte is profile `fuzz`, the rest profile
/// `base`, both in the manifest's `custom_profile_path`; a manifest asks for `fuzz`, so `extends`
/// chains, cycles and built-in parents are all reachable.
pub fn profile(data: &[u8]) -> Outcome {
    let (ext, body) = split_ext(data);
    let dir = scratch();
    let profiles = dir.join("profiles");
    let _ = std::fs::create_dir_all(&profiles);
    let (child, parent) = match body.iter().position(|b| *b == 0) {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &[][..]),
    };
    // Profiles are found by name with a .yaml, .yml or .json extension only.
    let ext = if ext.is_empty() { ".yml" } else { ext };
    for stem in ["fuzz", "base"] {
        let _ = std::fs::remove_file(profiles.join(format!("{stem}.yml")));
    }
    put(&profiles, "fuzz", ext, child);
    put(&profiles, "base", ext, parent);
    let mut doc = minimal_manifest();
    doc.insert("profile".into(), json!("fuzz"));
    doc.insert("custom_profile_path".into(), json!("profiles"));
    let loaded = manifest::resolve(&dir.join("vm.json"), doc, &Layers::default());
    Outcome::of(loaded.map(dump).map_err(AppError::from))
}

/// A hook value with `{{ var }}` placeholders (and `${ENV}` references, as header values allow),
/// parsed and rendered. A value that does not parse is then put where the binary meets it, a
/// script hook's argument or an HTTP hook's header, so the message is the one a manifest gives.
/// The input must be UTF-8, as every document is once parsed.
pub fn template(data: &[u8]) -> Outcome {
    use crate::manifest::hooks::template::{Context, Syntax, Template};
    let (syntax, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 1 => (Syntax::VarsAndEnv, rest),
        Some((_, rest)) => (Syntax::Vars, rest),
        None => (Syntax::Vars, data),
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return Outcome::of(Ok(()));
    };
    if let Ok(t) = Template::parse(text, syntax) {
        let _ = t.render(&Context::default());
        let _ = t.render_url(&Context::default());
        return Outcome::of(Ok(()));
    }
    let hook = match syntax {
        Syntax::Vars => json!({"type": "script", "path": "/bin/true", "args": [text]}),
        Syntax::VarsAndEnv => {
            json!({"type": "http", "url": "https://127.0.0.1/", "headers": {"X-Value": text}})
        }
    };
    let mut doc = minimal_manifest();
    doc.insert("hooks".into(), json!({"pre_convert": [hook]}));
    let loaded = manifest::resolve(&scratch().join("vm.json"), doc, &Layers::default());
    Outcome::of(loaded.map(dump).map_err(AppError::from))
}

/// A libvirt domain XML (`--libvirt-xml FILE`): read, parsed and turned into the domain's facts,
/// up to where the import looks at the disks on this machine.
pub fn libvirt_xml(data: &[u8]) -> Outcome {
    use libvirt_import::ImportError;
    let path = put(&scratch(), "domain", ".xml", data);
    let run = || -> Result<(), ImportError> {
        let text = libvirt_import::read_xml(&path)?;
        let root = xml::parse(&text).map_err(|err| ImportError::Xml {
            path: path.clone(),
            err,
        })?;
        let facts =
            libvirt_import::read_domain(&root, &config::dir_of(&path)).map_err(|problems| {
                ImportError::Invalid {
                    path: path.clone(),
                    problems,
                }
            })?;
        if facts.disks.is_empty() {
            return Err(ImportError::NoDisks {
                path: path.clone(),
                skipped: facts.unsupported,
            });
        }
        if let Some(dropped) = facts.boot_disk_dropped {
            return Err(ImportError::BootDiskDropped {
                path: path.clone(),
                dropped,
                next: facts.disks[0].id.clone(),
            });
        }
        Ok(())
    };
    Outcome::of(run().map_err(AppError::from))
}

/// A VMware or Hyper-V export's text files, by their first bytes: a Hyper-V configuration (a
/// UTF-16 BOM, or `<configuration` in the first KiB), an OVF descriptor (`<`), an OVA's `.mf`
/// digest list (a `NAME(file)= digest` first line), else a `.vmx` file; each read as
/// `--hyperv`, `--ovf`, `--ova` and `--vmx` read them, up to where the disks are looked at on
/// this machine.
pub fn vmware_export(data: &[u8]) -> Outcome {
    use crate::exports::{self, ExportError, ExportKind};
    let dir = scratch();
    let run = || -> Result<(), ExportError> {
        let head = data.trim_ascii_start();
        let first = &data[..data.len().min(1024)];
        if data.starts_with(&[0xff, 0xfe])
            || data.starts_with(&[0xfe, 0xff])
            || first.windows(14).any(|w| w == b"<configuration")
        {
            let vms = dir.join("hyperv/Virtual Machines");
            let _ = std::fs::create_dir_all(&vms);
            let _ = std::fs::create_dir_all(dir.join("hyperv/Virtual Hard Disks"));
            put(&vms, "export", ".xml", data);
            exports::hyperv::read_hyperv(&dir.join("hyperv")).map(drop)
        } else if head.starts_with(b"<") {
            let path = put(&dir, "export", ".ovf", data);
            let text = std::str::from_utf8(data).map_err(|_| ExportError::Refused {
                path: path.clone(),
                why: "not UTF-8".to_owned(),
            })?;
            let container = exports::ovf::Container::Dir(&dir);
            exports::ovf::read(text, "export.ovf", ExportKind::Ovf, &path, container).map(drop)
        } else if head
            .split(|&b| b == b'\n')
            .next()
            .is_some_and(|l| l.contains(&b'(') && l.windows(2).any(|w| w == b")="))
        {
            let text = String::from_utf8_lossy(data);
            let mut problems = exports::Collected::default();
            exports::mf::parse(&text, "export.mf", &mut problems);
            problems.into_result(ExportKind::Ova, &dir.join("export.mf"), ())
        } else {
            let path = put(&dir, "export", ".vmx", data);
            exports::vmx::read_vmx(&path).map(drop)
        }
    };
    Outcome::of(run().map_err(AppError::from))
}

/// What `--dump-config` does with a resolved manifest.
fn dump(loaded: manifest::Loaded) {
    let _ = serde_json::to_value(&loaded.manifest);
}

/// The smallest valid manifest: one disk, conversion on.
fn minimal_manifest() -> Map<String, Value> {
    let doc = json!({
        "manifest_version": "1.0",
        "disks": [{"id": "disk0", "source_format": "raw", "local_path": "disk0.raw"}],
        "pipeline": {"convert": {"enabled": true}}
    });
    match doc {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The longest error text an input may produce: problems shown are capped and values quoted in
/// them are cut, so a message stays readable whatever the input's size.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Panics (the fuzzer's finding) unless `outcome` is one the binary documents for a document it
/// could not use: success or invalid input (docs/exit-codes.md), with a bounded message.
pub fn check(outcome: &Outcome, input_len: usize) {
    assert!(
        outcome.code == exit_code::SUCCESS || outcome.code == exit_code::INVALID_INPUT,
        "exit code {} for a {input_len}-byte input: {}",
        outcome.code,
        outcome.message
    );
    assert!(
        outcome.message.len() <= MAX_MESSAGE_BYTES,
        "a {input_len}-byte input gave a {}-byte message (the bound is {MAX_MESSAGE_BYTES}): {}…",
        outcome.message.len(),
        outcome.message.chars().take(400).collect::<String>()
    );
}
