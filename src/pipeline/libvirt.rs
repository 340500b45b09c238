//! libvirt_integration: the converted VM defined (and, when asked, snapshotted, marked to
//! autostart and started, its boot proven) on a libvirt host, its disks volumes of a storage
//! pool.
//!
//! Every step that changes the host is recorded as it is made, and a failure after the first
//! one undoes them in reverse order and says what it undid: a domain this run defined is
//! undefined (with its NVRAM), a domain it replaced is defined again from the copy saved beside
//! the report, volumes it wrote are removed (moved disks go back to the output directory, a
//! replaced volume comes back from where it was set aside), a pool it created is removed.
//!
//! A domain of the same name or UUID is this VM's own when it carries our metadata and the
//! same name and UUID (the UUID is derived from the VM's identity, see
//! [`crate::libvirt::domain::derive_uuid`]); that one is updated. Any other is another VM's and
//! is replaced only with `--overwrite` or `overwrite_domain: true`. A running domain is never
//! replaced. [`preflight`] makes the same checks before any disk is read, so a conflict stops
//! the run in seconds rather than after hours of conversion; the stage checks again, as the
//! host may have changed meanwhile.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Run, StageFailure};
use crate::boot_test::{BootResult, Reason, Scanner, TAIL_LINES};
use crate::exec::{self, Command, Watch};
use crate::libvirt::domain::{METADATA_NAMESPACE, VirtType};
use crate::manifest::libvirt_integration::SNAPSHOT_DESCRIPTION;
use crate::outcome::stages::{
    LibvirtBoot, LibvirtResult, PoolResult, ReplacedDomain, VolumeResult,
};
use crate::plan::libvirt::{BootProof, LibvirtPlan, PoolPlan};
use crate::tools::virsh::{self, Virsh};

/// Pools are looked up and created one VM at a time: two VMs of a batch asking for the same
/// missing pool would otherwise both try to define it.
static POOLS: Mutex<()> = Mutex::new(());

/// How often the boot proof asks whether the domain still runs.
const STATE_POLL: Duration = Duration::from_secs(5);
/// The console kept for the log (its end).
const CONSOLE_KEEP_BYTES: usize = 4 * 1024 * 1024;

/// A change made on the host, to undo on failure.
enum Undo {
    PoolCreated {
        name: String,
        dir: PathBuf,
        dir_was_there: bool,
    },
    PoolStarted(String),
    VolumeWritten(PathBuf),
    /// An existing volume set aside before being replaced.
    VolumeSetAside {
        volume: PathBuf,
        aside: PathBuf,
    },
    VolumeMoved {
        from: PathBuf,
        to: PathBuf,
    },
    Undefined(SavedDomain),
    Defined(String),
    Started(String),
}

#[derive(Clone)]
struct SavedDomain {
    name: String,
    uuid: String,
    xml: PathBuf,
    /// (saved copy, where it was)
    nvram: Option<(PathBuf, PathBuf)>,
}

/// A domain already on the host with this VM's name or UUID.
struct Existing {
    name: String,
    uuid: String,
    ours: bool,
    running: bool,
    xml: String,
}

/// Checks, before any disk is read, that the host answers and that nothing there stops the
/// stage later (another VM's domain, a running one, a pool that is not a directory).
pub(super) fn preflight(run: &mut Run<'_>) -> Result<(), StageFailure> {
    let (Some(lp), Some(domain)) = (&run.plan.libvirt, &run.plan.domain) else {
        return Ok(());
    };
    let v = &lp.virsh;
    call(run, v.command(["uri"]))?;
    if lp.define {
        let existing = existing(run, v, &domain.name, &domain.uuid)?;
        check_existing(lp, &existing)?;
    }
    if let Some(p) = &lp.pool
        && let Some(xml) = query(run, v.pool_dumpxml(&p.name))?
    {
        pool_dir(lp, p, &xml)?;
    }
    Ok(())
}

pub(super) fn run(run: &mut Run<'_>) -> Result<LibvirtResult, StageFailure> {
    let plan = run.plan;
    let lp = plan.libvirt.as_ref().expect("stage runs only when planned");
    let domain = plan.domain.as_ref().expect("libvirt runs after domain_xml");
    let mut result = LibvirtResult {
        uri: lp.virsh.uri.clone(),
        domain: domain.name.clone(),
        uuid: domain.uuid.clone(),
        ..LibvirtResult::default()
    };
    let mut undo = Vec::new();
    let mut deferred_removals = Vec::new();
    match steps(run, lp, &mut result, &mut undo, &mut deferred_removals) {
        Ok(()) => {
            for output in deferred_removals {
                if let Err(e) = std::fs::remove_file(&output) {
                    run.warn(
                        crate::stage::Stage::Libvirt,
                        format!(
                            "{} is no longer needed but could not be removed: {e}",
                            output.display()
                        ),
                    );
                }
            }
            Ok(result)
        }
        Err(mut failure) => {
            result.rolled_back = roll_back(run, &lp.virsh, undo);
            if !result.rolled_back.is_empty() {
                failure.message = format!(
                    "{}; rolled back: {}",
                    failure.message,
                    result.rolled_back.join("; ")
                );
            }
            failure.result = Some(Box::new(crate::outcome::StageResult::Libvirt(result)));
            Err(failure)
        }
    }
}

fn steps(
    run: &mut Run<'_>,
    lp: &LibvirtPlan,
    result: &mut LibvirtResult,
    undo: &mut Vec<Undo>,
    deferred_removals: &mut Vec<PathBuf>,
) -> Result<(), StageFailure> {
    let plan = run.plan;
    let domain = plan.domain.as_ref().expect("libvirt runs after domain_xml");
    let v = &lp.virsh;
    call(run, v.command(["uri"]))?;

    let existing = if lp.define {
        let e = existing(run, v, &domain.name, &domain.uuid)?;
        check_existing(lp, &e)?;
        e
    } else {
        Vec::new()
    };

    let (virt_type, reason) = virt_type(lp, run.plan.guest_env.as_ref().map(|g| g.accel));
    result.virt_type = virt_type.name().to_owned();
    result.virt_type_reason = reason;

    let mut defined = domain.clone();
    defined.virt_type = virt_type;
    if let Some(p) = &lp.pool {
        let guard = POOLS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (dir, created) = ensure_pool(run, lp, p, undo)?;
        drop(guard);
        result.pool = Some(PoolResult {
            name: p.name.clone(),
            path: dir.clone(),
            created,
        });
        for vol in &p.volumes {
            let target = dir.join(&vol.name);
            let used_by_us = existing
                .iter()
                .any(|e| e.ours && e.xml.contains(&format!("'{}'", target.display())))
                || existing
                    .iter()
                    .any(|e| e.ours && e.xml.contains(&format!("\"{}\"", target.display())));
            let replaced = std::fs::symlink_metadata(&target).is_ok();
            if replaced && !(p.overwrite_volumes || used_by_us) {
                return Err(StageFailure::new(format!(
                    "volume {} already exists in storage pool '{}' ({}) and this VM's domain \
                     does not use it; remove it, or set libvirt_integration.overwrite_volumes: \
                     true",
                    vol.name,
                    p.name,
                    target.display()
                )));
            }
            if replaced {
                let aside = dir.join(format!(".{}.hyper2kvm-previous", vol.name));
                std::fs::rename(&target, &aside).map_err(|e| {
                    StageFailure::new(format!(
                        "could not set the existing volume {} aside: {e}",
                        target.display()
                    ))
                })?;
                deferred_removals.push(aside.clone());
                undo.push(Undo::VolumeSetAside {
                    volume: target.clone(),
                    aside,
                });
            }
            let how = place_volume(run, p, &vol.output, &target, undo, deferred_removals)?;
            if how == "moved" {
                move_artifact(run, &vol.output, &target);
            }
            if let Some(d) = defined.disks.iter_mut().find(|d| d.disk_id == vol.disk_id) {
                d.path = target.clone();
            }
            result.volumes.push(VolumeResult {
                disk_id: vol.disk_id.clone(),
                name: vol.name.clone(),
                path: target,
                how: how.to_owned(),
                replaced,
            });
        }
        call(run, v.pool_refresh(&p.name))?;
    }

    // The file on disk is what is defined: the volumes' paths, the virtualisation type.
    let xml = crate::libvirt::emit::domain_xml(&defined);
    crate::atomic::write(&domain.path, xml.as_bytes())
        .map_err(|e| StageFailure::new(crate::diag::error_chain(&e)))?;
    result.domain_xml = Some(domain.path.clone());

    if !lp.define {
        result.action = "not_defined".to_owned();
        return Ok(());
    }
    result.action = if existing.is_empty() {
        "defined"
    } else if existing.iter().all(|e| e.ours) {
        "updated"
    } else {
        "replaced"
    }
    .to_owned();
    for e in &existing {
        let saved = save_domain(run, e)?;
        call(run, v.undefine(&e.uuid))?;
        if e.ours {
            // This VM's own earlier definition is kept only until the new one stands.
            deferred_removals.push(saved.xml.clone());
            deferred_removals.extend(saved.nvram.iter().map(|(copy, _)| copy.clone()));
        } else {
            result.replaced.push(ReplacedDomain {
                name: e.name.clone(),
                uuid: e.uuid.clone(),
                saved_xml: saved.xml.clone(),
            });
        }
        undo.push(Undo::Undefined(saved));
    }
    call(run, v.define(&domain.path))?;
    undo.push(Undo::Defined(domain.name.clone()));

    if let Some(name) = &lp.snapshot {
        call(
            run,
            v.snapshot_create(&domain.name, name, SNAPSHOT_DESCRIPTION),
        )?;
        result.snapshot = Some(name.clone());
    }
    if lp.autostart {
        call(run, v.autostart(&domain.name, true))?;
        result.autostart = true;
    }
    if let Some(proof) = &lp.start {
        call(run, v.start(&domain.name))?;
        undo.push(Undo::Started(domain.name.clone()));
        result.started = true;
        let log = plan
            .output_dir
            .join(format!("{}-libvirt-console.log", domain.name));
        let boot = prove_boot(run, v, &domain.name, proof, &log)?;
        let passed = boot.result == BootResult::Passed;
        let message = boot.message.clone();
        result.boot = Some(boot);
        if !passed {
            let failure = if run.cancel.is_cancelled() {
                StageFailure::interrupted()
            } else {
                StageFailure::new(format!(
                    "domain '{}' started but did not boot: {message}",
                    domain.name
                ))
            };
            return Err(failure);
        }
    }
    Ok(())
}

/// KVM when it can run a guest here (the appliance's probe when this run made one, else the
/// same probe now); a remote host's KVM is trusted.
fn virt_type(
    lp: &LibvirtPlan,
    probed: Option<crate::tools::qemu_system::Accel>,
) -> (VirtType, String) {
    use crate::tools::qemu_system::Accel;
    if !lp.local {
        return (
            VirtType::Kvm,
            "a remote host: its KVM is not probed from here".to_owned(),
        );
    }
    match probed {
        Some(Accel::Kvm) => {
            return (
                VirtType::Kvm,
                "the probe the appliance used ran under KVM".to_owned(),
            );
        }
        Some(Accel::Tcg) => {
            return (
                VirtType::Qemu,
                "KVM cannot run a guest here (the probe the appliance used)".to_owned(),
            );
        }
        None => {}
    }
    match crate::tools::Tool::QemuSystem.locate() {
        Ok(qemu) => {
            let p = crate::tools::qemu_system::probe(&qemu);
            let t = match p.accel {
                crate::tools::qemu_system::Accel::Kvm => VirtType::Kvm,
                crate::tools::qemu_system::Accel::Tcg => VirtType::Qemu,
            };
            (t, p.reason)
        }
        Err(_) => (
            VirtType::Kvm,
            "qemu-system-x86_64 is not on PATH here, so KVM was not probed".to_owned(),
        ),
    }
}

fn existing(
    run: &mut Run<'_>,
    v: &Virsh,
    name: &str,
    uuid: &str,
) -> Result<Vec<Existing>, StageFailure> {
    let mut found: Vec<(String, String)> = Vec::new();
    if let Some(u) = query(run, v.domuuid(name))? {
        found.push((name.to_owned(), u.trim().to_owned()));
    }
    if let Some(n) = query(run, v.domname(uuid))?
        && n.trim() != name
    {
        found.push((n.trim().to_owned(), uuid.to_owned()));
    }
    let mut out = Vec::new();
    for (n, u) in found {
        let xml = call(run, v.dumpxml_inactive(&u))?;
        let state = call(run, v.domstate(&u))?;
        out.push(Existing {
            ours: n == name && u == uuid && xml.contains(METADATA_NAMESPACE),
            running: state.trim() != "shut off",
            name: n,
            uuid: u,
            xml,
        });
    }
    Ok(out)
}

fn check_existing(lp: &LibvirtPlan, existing: &[Existing]) -> Result<(), StageFailure> {
    let uri = &lp.virsh.uri;
    if let Some(e) = existing.iter().find(|e| e.running) {
        return Err(StageFailure::new(format!(
            "domain '{}' (uuid {}) is running on {uri}; a running domain is never replaced: \
             shut it down first (virsh --connect {uri} shutdown {})",
            e.name, e.uuid, e.name
        )));
    }
    if lp.replace_domains {
        return Ok(());
    }
    if let Some(e) = existing.iter().find(|e| !e.ours) {
        return Err(StageFailure::new(format!(
            "domain '{}' (uuid {}) already exists on {uri} and is another VM's (hyper2kvm did \
             not define it for this VM); it is never replaced without --overwrite or \
             libvirt_integration.overwrite_domain: true",
            e.name, e.uuid
        )));
    }
    Ok(())
}

/// The pool's directory, from its definition; only directory-backed pools take our files.
fn pool_dir(lp: &LibvirtPlan, p: &PoolPlan, xml: &str) -> Result<PathBuf, StageFailure> {
    let root = crate::libvirt::xml::parse(xml).map_err(|e| {
        StageFailure::new(format!(
            "could not read storage pool '{}' from {}: {e}",
            p.name, lp.virsh.uri
        ))
    })?;
    let kind = root.attr("type").unwrap_or("");
    if !matches!(kind, "dir" | "fs" | "netfs") {
        return Err(StageFailure::new(format!(
            "storage pool '{}' on {} is a '{kind}' pool; hyper2kvm writes volumes only into \
             directory-backed pools (dir, fs, netfs): name another pool in \
             libvirt_integration.import_to_pool",
            p.name, lp.virsh.uri
        )));
    }
    root.child("target")
        .and_then(|t| t.child("path"))
        .and_then(|p| p.text())
        .map(PathBuf::from)
        .ok_or_else(|| {
            StageFailure::new(format!(
                "storage pool '{}' on {} has no <target><path>",
                p.name, lp.virsh.uri
            ))
        })
}

fn ensure_pool(
    run: &mut Run<'_>,
    lp: &LibvirtPlan,
    p: &PoolPlan,
    undo: &mut Vec<Undo>,
) -> Result<(PathBuf, bool), StageFailure> {
    let v = &lp.virsh;
    if let Some(xml) = query(run, v.pool_dumpxml(&p.name))? {
        let dir = pool_dir(lp, p, &xml)?;
        let info = call(run, v.pool_info(&p.name))?;
        let running = info
            .lines()
            .any(|l| l.starts_with("State:") && l.trim_end().ends_with("running"));
        if !running {
            call(run, v.pool_start(&p.name))?;
            undo.push(Undo::PoolStarted(p.name.clone()));
        }
        return Ok((dir, false));
    }
    let dir_was_there = p.path.exists();
    call(run, v.pool_define_dir(&p.name, &p.path))?;
    undo.push(Undo::PoolCreated {
        name: p.name.clone(),
        dir: p.path.clone(),
        dir_was_there,
    });
    call(run, v.pool_build(&p.name))?;
    call(run, v.pool_start(&p.name))?;
    call(run, v.pool_autostart(&p.name))?;
    Ok((p.path.clone(), true))
}

/// Copies (sparse, reflinked where the filesystem can) or moves a converted disk to its volume
/// name, through a `.part` file for a copy.
fn place_volume(
    run: &mut Run<'_>,
    p: &PoolPlan,
    output: &Path,
    target: &Path,
    undo: &mut Vec<Undo>,
    deferred_removals: &mut Vec<PathBuf>,
) -> Result<&'static str, StageFailure> {
    if !p.copy {
        match std::fs::rename(output, target) {
            Ok(()) => {
                undo.push(Undo::VolumeMoved {
                    from: output.to_owned(),
                    to: target.to_owned(),
                });
                return Ok("moved");
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Another filesystem: copy now, remove the output once the stage succeeded.
                deferred_removals.push(output.to_owned());
            }
            Err(e) => {
                return Err(StageFailure::new(format!(
                    "could not move {} to {}: {e}",
                    output.display(),
                    target.display()
                )));
            }
        }
    }
    let part = crate::atomic::part_path(target);
    let cp = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(output)
        .arg(&part);
    let out = run.exec(&cp, None);
    let ok = matches!(&out, Ok(o) if o.record.success());
    if !ok {
        crate::atomic::remove_part(&part);
        return Err(match out {
            Ok(o) => StageFailure::new(o.record.to_string()),
            Err(f) => f,
        });
    }
    crate::atomic::publish(&part, target, false).map_err(|e| {
        crate::atomic::remove_part(&part);
        StageFailure::new(e)
    })?;
    undo.push(Undo::VolumeWritten(target.to_owned()));
    Ok(if p.copy { "copied" } else { "moved" })
}

/// A moved disk's artifact points at its volume.
fn move_artifact(run: &mut Run<'_>, from: &Path, to: &Path) {
    for a in &mut run.artifacts {
        if a.path == from {
            a.path = to.to_owned();
        }
    }
}

/// Saves a domain's definition (and its UEFI variables, when they are a file here) beside the
/// report before it is undefined.
fn save_domain(run: &mut Run<'_>, e: &Existing) -> Result<SavedDomain, StageFailure> {
    let dir = &run.plan.output_dir;
    let xml = dir.join(format!("{}.replaced-{}.xml", e.name, e.uuid));
    crate::atomic::write(&xml, e.xml.as_bytes())
        .map_err(|err| StageFailure::new(crate::diag::error_chain(&err)))?;
    let nvram = crate::libvirt::xml::parse(&e.xml)
        .ok()
        .and_then(|root| {
            let n = root.child("os")?.child("nvram")?;
            n.text()
                .map(str::to_owned)
                .or_else(|| n.child("source")?.attr("file").map(str::to_owned))
        })
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let nvram = match nvram {
        Some(original) => {
            let copy = dir.join(format!("{}.replaced-{}_VARS.fd", e.name, e.uuid));
            std::fs::copy(&original, &copy).map_err(|err| {
                StageFailure::new(format!(
                    "could not save the UEFI variables {} of domain '{}': {err}",
                    original.display(),
                    e.name
                ))
            })?;
            Some((copy, original))
        }
        None => None,
    };
    Ok(SavedDomain {
        name: e.name.clone(),
        uuid: e.uuid.clone(),
        xml,
        nvram,
    })
}

/// Reads the domain's serial console (its pseudo-terminal) until the boot test's patterns
/// decide, the domain stops, or the timeout.
fn prove_boot(
    run: &mut Run<'_>,
    v: &Virsh,
    name: &str,
    proof: &BootProof,
    log: &Path,
) -> Result<LibvirtBoot, StageFailure> {
    let tty = call(run, v.ttyconsole(name))?;
    let tty = PathBuf::from(tty.trim());
    let begun = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&tty)
        .map_err(|e| {
            StageFailure::new(format!(
                "could not open the serial console {} of domain '{name}': {e}",
                tty.display()
            ))
        })?;
    // Raw: no line editing or translation between the guest and the scanner.
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&file) {
        nix::sys::termios::cfmakeraw(&mut t);
        let _ = nix::sys::termios::tcsetattr(&file, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    let mut scanner = Scanner::with_patterns(&proof.success, proof.failure.as_ref());
    let mut console: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_state = Instant::now();
    let verdict: (Reason, Option<String>, String) = 'watch: loop {
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    console.extend_from_slice(&buf[..n]);
                    if console.len() > 2 * CONSOLE_KEEP_BYTES {
                        console.drain(..console.len() - CONSOLE_KEEP_BYTES);
                    }
                    if let Some((reason, line)) = scanner.feed(&buf[..n]) {
                        break 'watch (reason, Some(line), String::new());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // EIO: the other end closed, qemu is gone; the state check says so.
                Err(_) => break,
            }
        }
        if let Some((reason, line)) = scanner.partial() {
            break 'watch (reason, Some(line), String::new());
        }
        if run.cancel.is_cancelled() {
            break 'watch (Reason::Interrupted, None, "interrupted".to_owned());
        }
        if begun.elapsed() >= proof.timeout {
            let text = crate::boot_test::clean(&console);
            let seen = match text.lines().rev().find(|l| !l.trim().is_empty()) {
                Some(l) => format!("the last console line was `{}`", l.trim()),
                None => "the console stayed empty (does the guest use the serial port? its \
                         kernel command line needs console=ttyS0)"
                    .to_owned(),
            };
            break 'watch (
                Reason::Timeout,
                None,
                format!(
                    "no console line matched success_pattern within {} s; {seen}",
                    proof.timeout.as_secs()
                ),
            );
        }
        if last_state.elapsed() >= STATE_POLL {
            last_state = Instant::now();
            let state = call(run, v.domstate(name))?;
            if state.trim() != "running" {
                break 'watch (
                    Reason::QemuExited,
                    None,
                    format!(
                        "the domain stopped before it booted (state: {})",
                        state.trim()
                    ),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let seconds = crate::units::round_to(begun.elapsed().as_secs_f64(), 1);
    let (reason, matched, message) = verdict;
    let result = match reason {
        Reason::SuccessPattern => BootResult::Passed,
        Reason::Interrupted => BootResult::Interrupted,
        _ => BootResult::Failed,
    };
    let message = match (&matched, reason) {
        (Some(line), Reason::SuccessPattern) => {
            format!(
                "the console matched success_pattern after {seconds:.1} s: `{}`",
                line.trim()
            )
        }
        (Some(line), _) => format!(
            "the console matched a failure pattern ({}) after {seconds:.1} s: `{}`",
            reason.name(),
            line.trim()
        ),
        (None, _) => message,
    };
    let text = crate::boot_test::clean(&console);
    let mut tail: Vec<String> = text
        .lines()
        .rev()
        .skip_while(|l| l.trim().is_empty())
        .take(TAIL_LINES)
        .map(str::to_owned)
        .collect();
    tail.reverse();
    let console_log = crate::atomic::write(log, text.as_bytes())
        .ok()
        .map(|()| log.to_owned());
    Ok(LibvirtBoot {
        result,
        reason,
        message,
        matched_line: matched.map(|l| l.trim().to_owned()),
        seconds,
        timeout_seconds: proof.timeout.as_secs(),
        console: tty,
        console_log,
        console_tail: tail,
    })
}

/// Undoes the recorded changes, newest first; returns what was undone (and what could not be).
/// Runs even when the run is being cancelled, so its commands do not watch the cancel token.
fn roll_back(run: &mut Run<'_>, v: &Virsh, undo: Vec<Undo>) -> Vec<String> {
    let mut done = Vec::new();
    let quiet = |run: &mut Run<'_>, cmd: Command| -> Result<(), String> {
        match exec::run(&cmd, Watch::default()) {
            Ok(out) => {
                run.commands.push(out.record.clone());
                if out.record.success() {
                    Ok(())
                } else {
                    Err(virsh::error_text(&out.record.stderr_tail))
                }
            }
            Err(e) => Err(crate::diag::error_chain(&e)),
        }
    };
    for u in undo.into_iter().rev() {
        let (what, outcome) = match u {
            Undo::Started(name) => (
                format!("stopped domain '{name}'"),
                quiet(run, v.destroy(&name)),
            ),
            Undo::Defined(name) => (
                format!("undefined domain '{name}'"),
                quiet(run, v.undefine(&name)),
            ),
            Undo::Undefined(saved) => {
                let mut outcome = quiet(run, v.define(&saved.xml));
                if let (Ok(()), Some((copy, original))) = (&outcome, &saved.nvram) {
                    outcome = std::fs::copy(copy, original)
                        .map(|_| ())
                        .map_err(|e| format!("its UEFI variables: {e}"));
                }
                (
                    format!(
                        "defined domain '{}' (uuid {}) again from {}",
                        saved.name,
                        saved.uuid,
                        saved.xml.display()
                    ),
                    outcome,
                )
            }
            Undo::VolumeWritten(path) => (
                format!("removed volume {}", path.display()),
                std::fs::remove_file(&path).map_err(|e| e.to_string()),
            ),
            Undo::VolumeSetAside { volume, aside } => (
                format!("put the earlier volume {} back", volume.display()),
                std::fs::rename(&aside, &volume).map_err(|e| e.to_string()),
            ),
            Undo::VolumeMoved { from, to } => (
                format!("moved {} back to {}", to.display(), from.display()),
                std::fs::rename(&to, &from).map_err(|e| e.to_string()),
            ),
            Undo::PoolStarted(name) => (
                format!("stopped storage pool '{name}'"),
                quiet(run, v.pool_destroy(&name)),
            ),
            Undo::PoolCreated {
                name,
                dir,
                dir_was_there,
            } => {
                let mut outcome = quiet(run, v.pool_destroy(&name))
                    .and_then(|()| quiet(run, v.pool_undefine(&name)));
                if outcome.is_ok() && !dir_was_there {
                    outcome = std::fs::remove_dir(&dir).map_err(|e| e.to_string());
                }
                (format!("removed storage pool '{name}'"), outcome)
            }
        };
        done.push(match outcome {
            Ok(()) => what,
            Err(e) => format!("could not undo ({what}): {e}"),
        });
    }
    done
}

/// Runs a virsh command that must succeed; returns its stdout.
fn call(run: &mut Run<'_>, cmd: Command) -> Result<String, StageFailure> {
    let out = run.exec(&cmd, None)?;
    if out.record.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(&out.record))
    }
}

/// Runs a lookup; `None` when virsh says the object does not exist.
fn query(run: &mut Run<'_>, cmd: Command) -> Result<Option<String>, StageFailure> {
    let out = run.exec(&cmd, None)?;
    if out.record.success() {
        Ok(virsh::first_line(&out.stdout)
            .map(|_| String::from_utf8_lossy(&out.stdout).into_owned()))
    } else if virsh::is_not_found(&out.record.stderr_tail) {
        Ok(None)
    } else {
        Err(failed(&out.record))
    }
}

/// A virsh command that failed, as the stage reports it: the command and libvirt's own words.
fn failed(record: &exec::CommandRecord) -> StageFailure {
    StageFailure::new(format!(
        "`{}` failed: {}",
        record.command_line(),
        virsh::error_text(&record.stderr_tail)
    ))
}
