//! The libvirt_integration stage's plan: which host (`--connect` beats the manifest's `uri`),
//! which steps (define, pool import, snapshot, autostart, start with a boot proof), the volume
//! each converted disk becomes, and whether another VM's domain may be replaced.
//!
//! Problems found here stop the run before any disk is touched: the section needs the convert
//! stage (there is nothing to define otherwise), a pool import needs a local connection (the
//! volumes are written as files into the pool's directory), and a start is proven on the
//! domain's serial console, which only a local connection can read.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::DiskPlan;
use crate::diag::{Problem, Problems};
use crate::manifest::{Manifest, OutputFormat};
use crate::tools::virsh::{self, Virsh};

#[derive(Clone, Debug)]
pub struct LibvirtPlan {
    pub virsh: Virsh,
    /// Whether the connection is to this host (see [`virsh::is_local`]).
    pub local: bool,
    pub define: bool,
    /// Another VM's domain of the same name or UUID may be replaced (`overwrite_domain`, or an
    /// explicit `--overwrite`).
    pub replace_domains: bool,
    pub snapshot: Option<String>,
    pub autostart: bool,
    pub start: Option<BootProof>,
    pub pool: Option<PoolPlan>,
}

/// Where the disks go: a directory-based storage pool.
#[derive(Clone, Debug)]
pub struct PoolPlan {
    pub name: String,
    /// The directory of a pool this run defines; an existing pool keeps its own.
    pub path: PathBuf,
    /// Copy the converted disks (keeping them in the output directory), or move them.
    pub copy: bool,
    pub overwrite_volumes: bool,
    pub volumes: Vec<VolumePlan>,
}

#[derive(Clone, Debug)]
pub struct VolumePlan {
    pub disk_id: String,
    /// The converted disk.
    pub output: PathBuf,
    /// `<vm_name>-<disk id>.<format>`.
    pub name: String,
}

/// How a start is proven: the boot test's patterns and timeout, read from the domain's serial
/// console.
#[derive(Clone, Debug)]
pub struct BootProof {
    pub success: Regex,
    pub failure: Option<Regex>,
    pub timeout: Duration,
}

pub struct LibvirtInputs<'a> {
    pub manifest: &'a Manifest,
    /// `--connect`.
    pub uri_override: Option<&'a str>,
    /// An explicit `--overwrite` on the command line.
    pub overwrite: bool,
    pub converting: bool,
    pub domain_name: &'a str,
    pub disks: &'a [DiskPlan],
    pub format: OutputFormat,
}

pub fn plan(input: &LibvirtInputs<'_>, problems: &mut Problems) -> Option<LibvirtPlan> {
    let m = input.manifest;
    let s = &m.libvirt_integration;
    if !s.enabled {
        return None;
    }
    let mut problem = |path: &str, message: String| {
        problems.0.push(Problem {
            path: path.to_owned(),
            message,
        })
    };
    if !input.converting {
        problem(
            "libvirt_integration.enabled",
            "libvirt_integration.enabled is true but pipeline.convert is off: there are no \
             converted disks to define (set pipeline.convert.enabled: true)"
                .to_owned(),
        );
        return None;
    }
    let virsh = match crate::tools::Tool::Virsh.locate() {
        Ok(path) => path,
        Err(e) => {
            problem("libvirt_integration.enabled", e.to_string());
            return None;
        }
    };
    let uri = input.uri_override.unwrap_or(&s.uri).to_owned();
    let local = virsh::is_local(&uri);
    let pool_name = s
        .import_to_pool
        .clone()
        .or_else(|| m.storage_mapping.default_pool.clone());
    if let (Some(a), Some(b)) = (&s.import_to_pool, &m.storage_mapping.default_pool)
        && a != b
    {
        problem(
            "libvirt_integration.import_to_pool",
            format!(
                "libvirt_integration.import_to_pool is '{a}' but storage_mapping.default_pool \
                 is '{b}'; they name the same pool, so set one of them (or both the same)"
            ),
        );
    }
    if pool_name.is_some() && !local {
        problem(
            "libvirt_integration.import_to_pool",
            format!(
                "importing into a storage pool needs a connection to this host (the volumes are \
                 written as files into the pool's directory), but the connection is {uri}; run \
                 hyper2kvm on that host, or leave import_to_pool unset and copy the disks there"
            ),
        );
    }
    if s.auto_start && !local {
        problem(
            "libvirt_integration.auto_start",
            format!(
                "auto_start proves the boot on the domain's serial console, which can be read \
                 only on this host, but the connection is {uri}; run hyper2kvm on that host"
            ),
        );
    }
    let vm_name = s
        .vm_name
        .clone()
        .unwrap_or_else(|| input.domain_name.to_owned());
    let pool = pool_name.map(|name| PoolPlan {
        name,
        path: PathBuf::from(&s.pool_path),
        copy: s.copy_disks,
        overwrite_volumes: s.overwrite_volumes,
        volumes: input
            .disks
            .iter()
            .filter_map(|d| {
                Some(VolumePlan {
                    disk_id: d.id.clone(),
                    output: d.output.clone()?,
                    name: format!("{vm_name}-{}.{}", d.id, input.format.name()),
                })
            })
            .collect(),
    });
    let start = if s.auto_start {
        let b = &m.pipeline.validate.boot_test;
        match crate::boot_test::compile_patterns(b) {
            Ok((success, failure)) => Some(BootProof {
                success,
                failure,
                timeout: Duration::from_secs(b.timeout.max(1)),
            }),
            Err(e) => {
                problem("pipeline.validate.boot_test", e.to_string());
                None
            }
        }
    } else {
        None
    };
    Some(LibvirtPlan {
        virsh: Virsh::new(virsh, uri),
        local,
        define: s.define_domain,
        replace_domains: s.overwrite_domain || input.overwrite,
        snapshot: s.create_snapshot.then(|| s.snapshot_name.clone()),
        autostart: s.autostart,
        start,
        pool,
    })
}

impl LibvirtPlan {
    /// Lines for `--dry-run`.
    pub fn describe(&self, domain: &str) -> Vec<String> {
        let mut lines = vec![format!("libvirt host {}:", self.virsh.uri)];
        if let Some(p) = &self.pool {
            lines.push(format!(
                "  storage pool '{}' (a directory pool at {} when it does not exist); the disks \
                 are {} into it:",
                p.name,
                p.path.display(),
                if p.copy { "copied" } else { "moved" }
            ));
            for v in &p.volumes {
                lines.push(format!("    {} -> volume {}", v.output.display(), v.name));
            }
        }
        if self.define {
            lines.push(format!(
                "  define domain '{domain}' (replacing this VM's own earlier domain; another \
                 VM's domain of the same name or UUID {})",
                if self.replace_domains {
                    "is replaced, its definition saved beside the report"
                } else {
                    "stops the run"
                }
            ));
        }
        if let Some(s) = &self.snapshot {
            lines.push(format!("  snapshot '{s}' before the first boot"));
        }
        if self.autostart {
            lines.push("  autostart on".to_owned());
        }
        if let Some(b) = &self.start {
            lines.push(format!(
                "  start it and read its serial console until /{}/ (timeout {} s)",
                b.success.as_str(),
                b.timeout.as_secs()
            ));
        }
        lines
    }
}
