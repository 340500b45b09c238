//! The boot test (`pipeline.validate.boot_test`): boot each converted VM once and read its
//! serial console.
//!
//! A conversion that exits 0 and a qcow2 that `qemu-img check` likes prove little: a guest whose
//! grub.cfg still says `root=/dev/sda1` converts cleanly and then waits forever for a disk that is
//! `/dev/vda1` on virtio. So the outputs are booted with `qemu-system-x86_64` the way the
//! emitted libvirt domain runs them (q35, virtio-blk disks in boot order, BIOS or OVMF from
//! `vm.firmware`), with `-snapshot` (writes go to a throw-away overlay; the output never
//! changes), no network, and the serial console written to a file that a watcher reads while
//! the guest boots. The test passes when a console line matches `success_pattern`, and fails on
//! a kernel panic, an emergency or initramfs shell, `failure_pattern`, qemu exiting, or the
//! timeout. The login prompt is printed without a newline, so the unfinished last line is
//! matched too.
//!
//! Everything is decided when planning ([`plan`]: qemu, KVM or TCG from the probe in
//! [`crate::tools::qemu_system`], OVMF files, compiled patterns); [`run`] only executes. qemu runs through
//! [`crate::exec`] in its own process group, which is killed whatever ends the test: a match, the
//! timeout, qemu's exit, or cancellation (SIGINT/SIGTERM).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use crate::exec::{self, CancelToken, Command, CommandRecord, ExecError, Status, Watch};
use crate::manifest::boot_test::{BootTestSettings, check_pattern};
use crate::manifest::{Firmware, Vm};
use crate::tools::Tool;
use crate::tools::ovmf;
use crate::tools::qemu_system::{self, Accel, BootFirmware, BootVm, BootVmDisk, MACHINE};

/// Console lines kept in the report.
pub const TAIL_LINES: usize = 100;

/// A kernel that gave up.
const PANIC_PATTERN: &str = r"Kernel panic - not syncing";
/// Firmware that found nothing to boot: SeaBIOS after every device failed, OVMF's boot manager
/// (OVMF starts its internal shell only when every boot option failed).
const NO_BOOT_PATTERN: &str =
    r"No bootable device|No bootable option or device was found|UEFI Interactive Shell";
/// Shells a boot falls into when it cannot mount its root or reach its target: initramfs-tools,
/// dracut, systemd emergency and rescue modes.
const EMERGENCY_PATTERN: &str = r"Dropping to a shell|Gave up waiting for root|You are in emergency mode|Entering emergency mode|Give root password for maintenance|Cannot open access to console, the root account is locked|Reached target .*Emergency Mode|You are in rescue mode|dracut-initqueue.*[Tt]imeout";

/// How often the console file is read.
const POLL: Duration = Duration::from_millis(200);
/// How much of the console is kept for the tail and the log file.
const CONSOLE_KEEP_BYTES: u64 = 4 << 20;
/// The longest unfinished line matched; a guest that never prints a newline keeps its end.
const LINE_KEEP_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BootTestError {
    #[error(transparent)]
    Tool(#[from] ExecError),
    #[error(
        "vm.firmware is uefi, so the boot test needs OVMF, but no OVMF_CODE*.fd with its \
         OVMF_VARS*.fd template was found in {searched}; install the Debian package `ovmf`"
    )]
    OvmfMissing { searched: String },
    #[error("pipeline.validate.boot_test.{field} {message}")]
    Pattern {
        field: &'static str,
        message: String,
    },
}

impl BootTestError {
    /// Something missing on this host rather than wrong in the manifest.
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            BootTestError::Tool(_) | BootTestError::OvmfMissing { .. }
        )
    }
}

/// The firmware the test boots with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirmwarePlan {
    /// SeaBIOS, qemu's default.
    Bios,
    /// OVMF: read-only code and a template copied to a scratch variable store for each run.
    Uefi {
        code: PathBuf,
        vars_template: PathBuf,
    },
}

impl FirmwarePlan {
    pub fn name(&self) -> &'static str {
        match self {
            FirmwarePlan::Bios => Firmware::Bios.name(),
            FirmwarePlan::Uefi { .. } => Firmware::Uefi.name(),
        }
    }
}

/// One disk attached to the test VM.
#[derive(Clone, Debug)]
pub struct BootDisk {
    pub id: String,
    pub path: PathBuf,
    /// qemu block driver of the output (`qcow2`, `raw`, `vdi`).
    pub format: &'static str,
}

/// Every decision about one boot test.
#[derive(Clone, Debug)]
pub struct BootTestPlan {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub accel_reason: String,
    pub firmware: FirmwarePlan,
    pub timeout: Duration,
    pub success: Regex,
    pub failure: Option<Regex>,
    pub memory_mb: u32,
    pub cpus: u32,
    /// In boot order.
    pub disks: Vec<BootDisk>,
    /// Where the whole console (control sequences removed) is written after the run.
    pub console_log: PathBuf,
}

/// What planning needs to know.
pub struct PlanInput<'a> {
    pub settings: &'a BootTestSettings,
    pub vm: &'a Vm,
    /// The converted disks, in boot order.
    pub disks: Vec<BootDisk>,
    pub console_log: PathBuf,
    /// The accelerator already probed for this machine (libguestfs's), if any.
    pub accel: Option<Accel>,
    /// False in a dry run: `accel` is then the one a run would try first, not probed.
    pub accel_probed: bool,
}

/// Plans the boot test: finds qemu and (for UEFI) OVMF, decides KVM or TCG, compiles the
/// patterns. Things the admin should know go to `notes`.
pub fn plan(input: PlanInput<'_>, notes: &mut Vec<String>) -> Result<BootTestPlan, BootTestError> {
    let s = input.settings;
    let qemu = Tool::QemuSystem.locate()?;
    let firmware = match input.vm.firmware {
        Firmware::Uefi => {
            let dirs = ovmf::dirs(std::env::var_os(ovmf::DIR_ENV).map(PathBuf::from));
            let (code, vars_template) =
                ovmf::find(&dirs).ok_or_else(|| BootTestError::OvmfMissing {
                    searched: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            if input.vm.secureboot {
                notes.push(
                    "vm.secureboot is true, but the boot test boots OVMF without Secure Boot"
                        .to_owned(),
                );
            }
            FirmwarePlan::Uefi {
                code,
                vars_template,
            }
        }
        Firmware::Bios => FirmwarePlan::Bios,
        Firmware::Unknown => {
            notes.push("vm.firmware is unknown; the boot test boots with BIOS".to_owned());
            FirmwarePlan::Bios
        }
    };
    let (accel, accel_reason) = match input.accel {
        Some(a) if !input.accel_probed => (
            a,
            "not probed (a dry run starts no qemu-system); a run probes KVM first".to_owned(),
        ),
        Some(a) => (a, "the same probe as the libguestfs appliance".to_owned()),
        None => {
            let p = qemu_system::probe(&qemu);
            (p.accel, p.reason)
        }
    };
    let (success, failure) = compile_patterns(s)?;
    Ok(BootTestPlan {
        qemu,
        accel,
        accel_reason,
        firmware,
        timeout: Duration::from_secs(s.timeout.max(1)),
        success,
        failure,
        memory_mb: s.memory_mb,
        cpus: s.cpus,
        disks: input.disks,
        console_log: input.console_log,
    })
}

/// The success and failure patterns of the boot test settings, compiled (also what a start
/// under libvirt is proven with).
pub fn compile_patterns(s: &BootTestSettings) -> Result<(Regex, Option<Regex>), BootTestError> {
    let compile = |field: &'static str, pattern: &str| {
        check_pattern(pattern).map_err(|message| BootTestError::Pattern { field, message })?;
        Regex::new(pattern).map_err(|e| BootTestError::Pattern {
            field,
            message: e.to_string(),
        })
    };
    Ok((
        compile("success_pattern", &s.success_pattern)?,
        s.failure_pattern
            .as_deref()
            .map(|p| compile("failure_pattern", p))
            .transpose()?,
    ))
}

impl BootTestPlan {
    /// The qemu command; `console` receives the serial port, `vars` is the UEFI variable store.
    pub fn command(&self, console: &Path, vars: Option<&Path>) -> Command {
        let vars = vars.map_or_else(
            || "<copy of the OVMF_VARS template>".to_owned(),
            qemu_system::vars_option,
        );
        BootVm {
            qemu: &self.qemu,
            accel: self.accel,
            firmware: match &self.firmware {
                FirmwarePlan::Bios => BootFirmware::Bios,
                FirmwarePlan::Uefi { code, .. } => BootFirmware::Uefi { code, vars: &vars },
            },
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            disks: self
                .disks
                .iter()
                .map(|d| BootVmDisk {
                    format: d.format,
                    path: &d.path,
                })
                .collect(),
            console,
        }
        .command()
    }

    /// Lines for `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let console = Path::new("<scratch dir>/console.log");
        vec![
            format!(
                "boot test ({}, {}, {} MiB, {} vCPU, timeout {} s; passes on /{}/):",
                Accel::name(self.accel),
                self.firmware.name(),
                self.memory_mb,
                self.cpus,
                self.timeout.as_secs(),
                self.success.as_str()
            ),
            format!("  $ {}", self.command(console, None)),
            format!("  console log: {}", self.console_log.display()),
        ]
    }
}

/// How the test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootResult {
    Passed,
    Failed,
    Interrupted,
}

impl BootResult {
    /// As the report spells it.
    pub fn name(self) -> &'static str {
        match self {
            BootResult::Passed => "passed",
            BootResult::Failed => "failed",
            BootResult::Interrupted => "interrupted",
        }
    }
}

/// Why it ended that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    SuccessPattern,
    KernelPanic,
    EmergencyShell,
    NoBootableDevice,
    FailurePattern,
    Timeout,
    QemuExited,
    Interrupted,
}

impl Reason {
    /// As the report spells it.
    pub fn name(self) -> &'static str {
        match self {
            Reason::SuccessPattern => "success_pattern",
            Reason::KernelPanic => "kernel_panic",
            Reason::EmergencyShell => "emergency_shell",
            Reason::NoBootableDevice => "no_bootable_device",
            Reason::FailurePattern => "failure_pattern",
            Reason::Timeout => "timeout",
            Reason::QemuExited => "qemu_exited",
            Reason::Interrupted => "interrupted",
        }
    }
}

/// What the report keeps about one boot test.
#[derive(Clone, Debug, Serialize)]
pub struct BootTestOutcome {
    pub result: BootResult,
    pub reason: Reason,
    /// One sentence for people.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_line: Option<String>,
    /// Seconds from qemu's start to the success match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_pass_seconds: Option<f64>,
    /// Seconds from qemu's start to the decision (the match, the timeout, qemu's exit).
    pub seconds: f64,
    pub started_at: String,
    pub accel: Accel,
    pub accel_reason: String,
    pub firmware: &'static str,
    pub machine: &'static str,
    pub timeout_seconds: u64,
    pub command_line: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_log: Option<PathBuf>,
    /// The last [`TAIL_LINES`] console lines, control sequences removed.
    pub console_tail: Vec<String>,
}

/// A run: the outcome and qemu's command record (for the stage's command list).
#[derive(Debug)]
pub struct BootTestRun {
    pub outcome: BootTestOutcome,
    pub record: Option<CommandRecord>,
}

#[derive(Clone, Debug)]
enum Verdict {
    Matched {
        reason: Reason,
        line: String,
        at: Duration,
    },
    Interrupted,
}

/// Boots the planned VM once. Only a failure to prepare or start qemu is an `Err`; a guest that
/// does not boot is an outcome with `result: failed`.
pub fn run(plan: &BootTestPlan, cancel: &CancelToken) -> Result<BootTestRun, String> {
    let started_at = crate::clock::now_local();
    let scratch = tempfile::Builder::new()
        .prefix("hyper2kvm-boot-test-")
        .tempdir()
        .map_err(|e| format!("could not create a scratch directory: {e}"))?;
    let console = scratch.path().join("console.log");
    let vars = match &plan.firmware {
        FirmwarePlan::Uefi { vars_template, .. } => {
            let v = scratch.path().join("OVMF_VARS.fd");
            std::fs::copy(vars_template, &v).map_err(|e| {
                format!(
                    "could not copy the UEFI variable store {}: {e}",
                    vars_template.display()
                )
            })?;
            Some(v)
        }
        FirmwarePlan::Bios => None,
    };
    // -snapshot keeps its overlay in TMPDIR: inside the scratch directory, removed with it.
    let cmd = plan
        .command(&console, vars.as_deref())
        .env("TMPDIR", scratch.path())
        .timeout(plan.timeout);
    let command_line = cmd.to_string();

    let stop = CancelToken::new();
    let finished = AtomicBool::new(false);
    let begun = Instant::now();
    let (result, verdict) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch(&console, plan, cancel, &stop, &finished, begun));
        let result = exec::run(
            &cmd,
            Watch {
                cancel: Some(&stop),
                on_stdout_line: None,
            },
        );
        finished.store(true, Ordering::SeqCst);
        // The watcher only reads a file; it ends within one poll of `finished`.
        (result, watcher.join().ok().flatten())
    });
    let elapsed = begun.elapsed();
    let out = result.map_err(|e| crate::diag::error_chain(&e))?;
    let record = out.record;

    let text = read_console(&console);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut tail: Vec<String> = lines
        .iter()
        .rev()
        .skip_while(|l| l.trim().is_empty())
        .take(TAIL_LINES)
        .cloned()
        .collect();
    tail.reverse();
    let console_log = match crate::atomic::write(&plan.console_log, text.as_bytes()) {
        Ok(()) => Some(plan.console_log.clone()),
        Err(e) => {
            tracing::warn!("{}", crate::diag::error_chain(&e));
            None
        }
    };

    let secs = |d: Duration| crate::units::round_to(d.as_secs_f64(), 1);
    let (result, reason, message, matched_line, at) = match verdict {
        Some(Verdict::Interrupted) => (
            BootResult::Interrupted,
            Reason::Interrupted,
            "interrupted".to_owned(),
            None,
            elapsed,
        ),
        Some(Verdict::Matched { reason, line, at }) => {
            let what = match reason {
                Reason::SuccessPattern => "the console matched success_pattern",
                Reason::KernelPanic => "the guest kernel panicked",
                Reason::EmergencyShell => "the guest dropped to an emergency shell",
                Reason::NoBootableDevice => "the firmware found nothing to boot",
                _ => "the console matched failure_pattern",
            };
            let result = if reason == Reason::SuccessPattern {
                BootResult::Passed
            } else {
                BootResult::Failed
            };
            let message = format!("{what} after {:.1} s: `{}`", secs(at), line.trim());
            (result, reason, message, Some(line), at)
        }
        None if record.status == Status::TimedOut => {
            let last = lines.iter().rev().find(|l| !l.trim().is_empty());
            let seen = match last {
                Some(l) => format!("the last console line was `{}`", l.trim()),
                None => "the console stayed empty (does the guest use the serial port? its \
                         kernel command line needs console=ttyS0)"
                    .to_owned(),
            };
            (
                BootResult::Failed,
                Reason::Timeout,
                format!(
                    "no console line matched success_pattern within {} s; {seen}",
                    plan.timeout.as_secs()
                ),
                None,
                elapsed,
            )
        }
        None => (
            BootResult::Failed,
            Reason::QemuExited,
            format!("qemu ended before the guest booted: {record}"),
            None,
            elapsed,
        ),
    };
    Ok(BootTestRun {
        outcome: BootTestOutcome {
            result,
            reason,
            message,
            matched_line: matched_line.map(|l| l.trim().to_owned()),
            time_to_pass_seconds: (result == BootResult::Passed).then(|| secs(at)),
            seconds: secs(at),
            started_at,
            accel: plan.accel,
            accel_reason: plan.accel_reason.clone(),
            firmware: plan.firmware.name(),
            machine: MACHINE,
            timeout_seconds: plan.timeout.as_secs(),
            command_line,
            console_log,
            console_tail: tail,
        },
        record: Some(record),
    })
}

/// Reads the console file as it grows and decides; stops qemu (through `stop`) once it has.
fn watch(
    console: &Path,
    plan: &BootTestPlan,
    cancel: &CancelToken,
    stop: &CancelToken,
    finished: &AtomicBool,
    begun: Instant,
) -> Option<Verdict> {
    let mut scanner = Scanner::new(plan);
    let mut file: Option<std::fs::File> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read `finished` first: once it is set, one more read sees everything qemu wrote.
        let last_round = finished.load(Ordering::SeqCst);
        if file.is_none() {
            file = std::fs::File::open(console).ok();
        }
        if let Some(f) = file.as_mut() {
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some((reason, line)) = scanner.feed(&buf[..n]) {
                            stop.cancel();
                            return Some(Verdict::Matched {
                                reason,
                                line,
                                at: begun.elapsed(),
                            });
                        }
                    }
                }
            }
            if let Some((reason, line)) = scanner.partial() {
                stop.cancel();
                return Some(Verdict::Matched {
                    reason,
                    line,
                    at: begun.elapsed(),
                });
            }
        }
        if cancel.is_cancelled() {
            stop.cancel();
            return Some(Verdict::Interrupted);
        }
        if last_round {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Splits console bytes into clean lines and matches them, failure patterns first.
pub struct Scanner<'a> {
    success: &'a Regex,
    failure: Option<&'a Regex>,
    panic: Regex,
    emergency: Regex,
    no_boot: Regex,
    pending: Vec<u8>,
    /// The unfinished line as last matched, so it is not matched again unchanged.
    last_partial: String,
}

impl<'a> Scanner<'a> {
    fn new(plan: &'a BootTestPlan) -> Self {
        Self::with_patterns(&plan.success, plan.failure.as_ref())
    }

    /// A scanner for these patterns (and the built-in failure patterns).
    pub fn with_patterns(success: &'a Regex, failure: Option<&'a Regex>) -> Self {
        Self {
            success,
            failure,
            panic: Regex::new(PANIC_PATTERN).expect("a constant pattern"),
            emergency: Regex::new(EMERGENCY_PATTERN).expect("a constant pattern"),
            no_boot: Regex::new(NO_BOOT_PATTERN).expect("a constant pattern"),
            pending: Vec::new(),
            last_partial: String::new(),
        }
    }

    /// Takes console bytes; the first line that decides, with why.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<(Reason, String)> {
        for &b in bytes {
            if b == b'\n' {
                let line = clean(&std::mem::take(&mut self.pending));
                self.last_partial.clear();
                if let Some(reason) = self.classify(&line) {
                    return Some((reason, line));
                }
            } else {
                self.pending.push(b);
                if self.pending.len() > 2 * LINE_KEEP_BYTES {
                    self.pending.drain(..self.pending.len() - LINE_KEEP_BYTES);
                }
            }
        }
        None
    }

    /// The line still being written (a login prompt waits without a newline).
    pub fn partial(&mut self) -> Option<(Reason, String)> {
        let line = clean(&self.pending);
        if line.trim().is_empty() || line == self.last_partial {
            return None;
        }
        self.last_partial = line.clone();
        self.classify(&line).map(|r| (r, line))
    }

    fn classify(&self, line: &str) -> Option<Reason> {
        if self.panic.is_match(line) {
            Some(Reason::KernelPanic)
        } else if self.emergency.is_match(line) {
            Some(Reason::EmergencyShell)
        } else if self.no_boot.is_match(line) {
            Some(Reason::NoBootableDevice)
        } else if self.failure.is_some_and(|f| f.is_match(line)) {
            Some(Reason::FailurePattern)
        } else if self.success.is_match(line) {
            Some(Reason::SuccessPattern)
        } else {
            None
        }
    }
}

/// Console bytes as text without terminal control: ANSI escape sequences, carriage returns and
/// other control characters (but tabs) are removed.
pub fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: ESC [ parameters... final byte in @..~
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC etc. are not printed by boot consoles; drop the one following character.
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\t' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The console as clean text (its last [`CONSOLE_KEEP_BYTES`]).
fn read_console(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > CONSOLE_KEEP_BYTES {
        let _ = f.seek(SeekFrom::Start(len - CONSOLE_KEEP_BYTES));
    }
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    clean(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::boot_test::DEFAULT_SUCCESS_PATTERN;

    fn test_plan(success: &str, failure: Option<&str>) -> BootTestPlan {
        BootTestPlan {
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            accel: Accel::Tcg,
            accel_reason: "test".to_owned(),
            firmware: FirmwarePlan::Bios,
            timeout: Duration::from_secs(300),
            success: Regex::new(success).expect("regex"),
            failure: failure.map(|f| Regex::new(f).expect("regex")),
            memory_mb: 1024,
            cpus: 1,
            disks: vec![
                BootDisk {
                    id: "boot".to_owned(),
                    path: PathBuf::from("/out/boot,1.qcow2"),
                    format: "qcow2",
                },
                BootDisk {
                    id: "data".to_owned(),
                    path: PathBuf::from("/out/data.raw"),
                    format: "raw",
                },
            ],
            console_log: PathBuf::from("/out/vm.boot-test-console.log"),
        }
    }

    #[test]
    fn failures_win_over_success_and_partial_lines_match() {
        let plan = test_plan(DEFAULT_SUCCESS_PATTERN, Some("OOPS"));
        let mut s = Scanner::new(&plan);
        assert_eq!(
            s.feed(b"Begin: Running /scripts/local-block ... done.\r\n"),
            None
        );
        let (r, line) = s
            .feed(b"ALERT!  /dev/sda1 does not exist.  Dropping to a shell!\r\n")
            .expect("decides");
        assert_eq!(r, Reason::EmergencyShell);
        assert_eq!(
            line,
            "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!"
        );

        let mut s = Scanner::new(&plan);
        assert!(s.feed(b"\x1b[0;32m  OK  \x1b[0m] Started x\r\n").is_none());
        assert!(s.feed(b"\r\nh2k-debian12 log").is_none());
        assert_eq!(s.partial(), None);
        assert!(s.feed(b"in: ").is_none());
        assert_eq!(
            s.partial(),
            Some((Reason::SuccessPattern, "h2k-debian12 login: ".to_owned()))
        );

        let mut s = Scanner::new(&plan);
        assert_eq!(
            s.feed(b"[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
                .map(|(r, _)| r),
            Some(Reason::KernelPanic)
        );
        let mut s = Scanner::new(&plan);
        assert_eq!(
            s.feed(b"No bootable device.\r").map(|(r, _)| r),
            None,
            "a carriage return does not end a line"
        );
        assert_eq!(s.partial().map(|(r, _)| r), Some(Reason::NoBootableDevice));
        let mut s = Scanner::new(&plan);
        assert_eq!(
            s.feed(b"OOPS something\n").map(|(r, _)| r),
            Some(Reason::FailurePattern)
        );
    }

    #[test]
    fn clean_removes_terminal_control() {
        assert_eq!(
            clean(b"[\x1b[0;32m  OK  \x1b[0m] Reached\r\n\x07x\ty"),
            "[  OK  ] Reached\nx\ty"
        );
    }

    #[test]
    fn command_boots_virtio_disks_in_order_on_a_snapshot() {
        let plan = test_plan("x", None);
        let argv = plan
            .command(Path::new("/tmp/s/console.log"), None)
            .argv()
            .join(" ");
        assert!(
            argv.contains("-machine q35,graphics=off -accel tcg -cpu max"),
            "{argv}"
        );
        assert!(argv.contains("-snapshot"), "{argv}");
        assert!(argv.contains("-nic none"), "{argv}");
        assert!(
            argv.contains(
                "-drive if=none,id=disk0,format=qcow2,file=/out/boot,,1.qcow2 -device virtio-blk-pci,drive=disk0,bootindex=1"
            ),
            "{argv}"
        );
        assert!(
            argv.contains("virtio-blk-pci,drive=disk1,bootindex=2"),
            "{argv}"
        );
        assert!(!argv.contains("pflash"), "{argv}");

        let mut uefi = test_plan("x", None);
        uefi.firmware = FirmwarePlan::Uefi {
            code: PathBuf::from("/fw/OVMF_CODE_4M.fd"),
            vars_template: PathBuf::from("/fw/OVMF_VARS_4M.fd"),
        };
        let argv = uefi
            .command(Path::new("/c"), Some(Path::new("/s/vars.fd")))
            .argv()
            .join(" ");
        assert!(
            argv.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.fd"),
            "{argv}"
        );
        assert!(
            argv.contains("if=pflash,format=raw,unit=1,file=/s/vars.fd"),
            "{argv}"
        );
    }
}
