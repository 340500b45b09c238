//! A libguestfs appliance for one stage of one VM, driven through `guestfish --listen`.
//!
//! One appliance launch costs about ten seconds under TCG, so each stage launches exactly one
//! and then talks to it command by command (`guestfish --remote`), reading files, letting the
//! pure transforms decide, and writing back, all in the same launch. Every remote command goes
//! through `exec` and is recorded. Commands are sent with guestfish's `-` prefix, which keeps the
//! server alive when a command fails; failure is then read from the exit status and stderr, where
//! after the launch any message but a libguestfs warning, trace or debug line is a failure. Every
//! command after the launch has a time limit, as the launch has its watchdog.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::exec::{self, CancelToken, Command, CommandRecord, Daemon, ExecError, Status, Watch};
use crate::tools::Tool;
use crate::tools::qemu_system::Accel;

/// How long the listener may take to say it is ready (it does not launch the appliance yet).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// A single remote command after the launch. Generous: guest-side tools are slow under TCG
/// (an initramfs rebuild of the test guest takes 2 to 3 minutes on 2 cores, a real one with
/// many modules and a package manager's scripts far longer).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Overrides the per-command timeout, in seconds.
pub const COMMAND_TIMEOUT_ENV: &str = "HYPER2KVM_APPLIANCE_COMMAND_TIMEOUT";
/// The longest an appliance may take to boot (`run`), however busy it keeps its qemu. A launch
/// takes about 10 s under TCG on an idle 2-core host, 90 s with three at once and the test suite
/// beside them, 2-3 s with KVM; libguestfs's own limit is 20 minutes.
const LAUNCH_TIMEOUT_TCG: Duration = Duration::from_secs(600);
const LAUNCH_TIMEOUT_KVM: Duration = Duration::from_secs(180);
/// Overrides the launch timeout, in seconds (a slow host).
pub const LAUNCH_TIMEOUT_ENV: &str = "HYPER2KVM_APPLIANCE_LAUNCH_TIMEOUT";
/// A launch has hung when for this long its console printed nothing and its qemu used almost no
/// CPU: the hangs seen here left qemu idle, while a slow launch on a loaded host keeps printing
/// and computing. Caught well before the launch timeout.
const LAUNCH_STALL: Duration = Duration::from_secs(60);
/// Overrides the stall window, in seconds (the tests that make a launch hang).
pub const LAUNCH_STALL_ENV: &str = "HYPER2KVM_APPLIANCE_STALL_SECONDS";
/// Below this share of one core over the stall window, qemu counts as idle.
const IDLE_CPU_SHARE: f64 = 0.05;
/// How often a launch is looked at.
const LAUNCH_POLL: Duration = Duration::from_secs(1);
/// How much of a hung launch's console is quoted in the error.
const CONSOLE_TAIL_LINES: usize = 12;
/// The most of a console log that is kept (its end).
const CONSOLE_KEEP_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("guestfish did not start: {0}")]
    Start(String),
    #[error("libguestfs: `{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("interrupted")]
    Cancelled,
    /// A command after the launch did not return within the command timeout; the listener and
    /// its appliance were killed.
    #[error(
        "libguestfs: `{command}` did not finish within {seconds} s (the per-command timeout, \
         {COMMAND_TIMEOUT_ENV}); the guestfish listener and its appliance were killed{}",
        console_log.as_ref().map(|p| format!("; its console log is in {}", p.display())).unwrap_or_default()
    )]
    CommandTimedOut {
        command: String,
        seconds: u64,
        console_log: Option<PathBuf>,
    },
    /// A command was asked of an appliance already killed by an earlier timeout (whose message
    /// this is, so a caller that passed over that error still reports it).
    #[error("{0}")]
    Stopped(String),
    #[error("could not use a scratch file for {what}")]
    Scratch {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Both launches (the first and the one retry) hung.
    #[error(
        "the libguestfs appliance did not start, twice (the second time: {why}); each hung \
         launch was killed; {}last lines of its console:\n{console_tail}",
        console_log.as_ref().map(|p| format!("its debug console log is in {}; ", p.display())).unwrap_or_default()
    )]
    LaunchHung {
        /// What the last attempt did.
        why: String,
        console_log: Option<PathBuf>,
        console_tail: String,
    },
}

impl GuestError {
    /// Whether the session cannot go on after this error (interrupted, or its appliance killed
    /// at a command timeout): callers that tolerate a failed command must pass these on.
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            GuestError::Cancelled | GuestError::CommandTimedOut { .. } | GuestError::Stopped(_)
        )
    }
}

/// What every session needs to know about this machine.
#[derive(Clone, Debug)]
pub struct GuestEnv {
    pub guestfish: PathBuf,
    pub accel: Accel,
    /// How long one appliance launch may take at most.
    pub launch_timeout: Duration,
    /// How long a launch may sit idle (no console output, qemu idle) before it counts as hung.
    pub launch_stall: Duration,
    /// How long one command after the launch may take.
    pub command_timeout: Duration,
}

impl GuestEnv {
    /// Finds guestfish; `accel` comes from the KVM probe.
    pub fn locate(accel: Accel) -> Result<Self, ExecError> {
        Ok(Self::new(Tool::Guestfish.locate()?, accel))
    }

    /// The limits are the defaults unless [`LAUNCH_TIMEOUT_ENV`], [`LAUNCH_STALL_ENV`] or
    /// [`COMMAND_TIMEOUT_ENV`] set them.
    pub fn new(guestfish: PathBuf, accel: Accel) -> Self {
        let seconds = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
        };
        Self {
            guestfish,
            accel,
            launch_timeout: seconds(LAUNCH_TIMEOUT_ENV).unwrap_or(match accel {
                Accel::Tcg => LAUNCH_TIMEOUT_TCG,
                Accel::Kvm => LAUNCH_TIMEOUT_KVM,
            }),
            launch_stall: seconds(LAUNCH_STALL_ENV).unwrap_or(LAUNCH_STALL),
            command_timeout: seconds(COMMAND_TIMEOUT_ENV).unwrap_or(COMMAND_TIMEOUT),
        }
    }

    fn command(&self) -> Command {
        let cmd = Command::new(&self.guestfish).env("LIBGUESTFS_BACKEND", "direct");
        match self.accel {
            Accel::Tcg => cmd.env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"),
            Accel::Kvm => cmd,
        }
    }
}

/// vCPUs for the appliance: one per host core, at most 4 (libguestfs's default is one).
/// Rebuilding an initramfs, the slowest repair, compresses with a thread per CPU, and under TCG
/// each vCPU is a host thread of its own. virt-v2v starts its appliance the same way (`-smp 2`
/// on a 2-core host). On 2 cores the test guest's `update-initramfs -u` took 128 and 164 s with
/// 2 vCPUs against 180 and 168 s with one, in two alternating pairs; such TCG runs vary by tens
/// of seconds with the host's load.
fn appliance_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// How a remote command's stderr (the client's and the server's) is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strictness {
    /// Verbose output is off: any message other than a libguestfs warning, trace or debug line
    /// is a failure. A `-`-prefixed command that guestfish rejects (a usage error such as
    /// `error: incorrect number of arguments`, an unknown command, a bad parameter) prints its
    /// message and still exits 0, and a message is all there is to go by.
    AnyMessage,
    /// Verbose output was on (the launch): the appliance's console shares the stream, so only
    /// libguestfs's own error lines count.
    ErrorsOnly,
}

/// Whether a line on a remote command's stderr says that the command failed. libguestfs
/// prefixes what is not an error (`libguestfs: warning:`, `trace:` with LIBGUESTFS_TRACE,
/// debug lines with LIBGUESTFS_DEBUG); everything else guestfish prints there is about a
/// failure.
fn is_failure_line(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !is_console_noise(line)
}

/// libguestfs's lines that do not report an error.
fn is_console_noise(line: &str) -> bool {
    line.starts_with("libguestfs: ") && !line.starts_with("libguestfs: error:")
}

/// Whether a failed remote command is guestfish's client finding the server alive (it checks
/// the pid first) but its socket missing or not yet listening.
fn not_listening_yet(message: &str) -> bool {
    message.contains("looks like the server is not running")
        && (message.contains("No such file or directory") || message.contains("Connection refused"))
}

/// A disk to attach to the appliance.
#[derive(Clone, Debug)]
pub struct Drive {
    pub path: PathBuf,
    /// qemu block driver (`qcow2`, `vmdk`, `vpc`, ...).
    pub format: String,
    pub readonly: bool,
}

/// One running appliance.
pub struct Session<'a> {
    env: &'a GuestEnv,
    daemon: Daemon,
    pid: String,
    cancel: &'a CancelToken,
    scratch: tempfile::TempDir,
    records: Vec<CommandRecord>,
    notes: Vec<String>,
    /// Where the console is kept when a command times out.
    console_log: Option<PathBuf>,
    /// Set once a timed-out command had the listener and its appliance killed: its error.
    stopped: Option<String>,
    /// Told, in a few words, about each call that does real work in the guest.
    observer: Option<Observer<'a>>,
}

/// What [`Session::observe`] takes.
pub type Observer<'a> = Box<dyn FnMut(String) + Send + Sync + 'a>;

/// How a progress display names a call, for the calls that take noticeable time; the many
/// quick reads and checks are not worth a line.
fn call_brief(name: &str, rest: &[String]) -> Option<String> {
    let first = rest.first().map(String::as_str).unwrap_or_default();
    let text = match name {
        "command" | "sh" | "command-lines" | "sh-lines" => first.to_owned(),
        "inspect-os" => "inspecting the guest's operating system".to_owned(),
        "mount-ro" | "mount" => format!("mounting {}", rest.get(1).map_or(first, String::as_str)),
        "checksum" => format!(
            "{first} checksum of {}",
            rest.get(1).map_or("", String::as_str)
        ),
        "upload" => format!("writing {}", rest.get(1).map_or("", String::as_str)),
        "sync" => "flushing the guest's filesystems".to_owned(),
        _ => return None,
    };
    Some(crate::diag::excerpt_n(&text, 80))
}

/// How one launch attempt ended, when it did not give a running appliance.
enum Attempt {
    /// `run` stalled (console silent, qemu idle) or did not return within the launch timeout;
    /// the listener and its qemu were killed.
    Hung {
        /// What happened, in a few words.
        why: String,
        records: Vec<CommandRecord>,
        /// The attempt's debug console (the listener's stderr while it launched).
        console: Vec<u8>,
    },
    Failed(GuestError),
}

impl<'a> Session<'a> {
    /// Starts the listener, attaches the drives and launches the appliance.
    ///
    /// A launch that stalls (its console silent and its qemu idle for the stall window) or does
    /// not finish within the launch timeout is killed (listener, appliance qemu and all) and
    /// tried once more, with one vCPU: the hangs seen here had qemu idle with two vCPUs under
    /// TCG. The hung attempt's debug console is written to `console_log` (when given) and its
    /// end quoted in the error or in the note the session then carries
    /// (see [`Session::take_notes`]).
    pub fn launch(
        env: &'a GuestEnv,
        drives: &[Drive],
        cancel: &'a CancelToken,
        console_log: Option<&Path>,
    ) -> Result<Self, GuestError> {
        let first = match Self::attempt(env, drives, cancel, appliance_cpus()) {
            Ok(mut session) => {
                session.console_log = console_log.map(Path::to_owned);
                return Ok(session);
            }
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Hung {
                why,
                records,
                console,
            }) => (why, records, console),
        };
        let (why, records, console) = first;
        let kept = console_log.and_then(|path| keep_console(path, &console).then_some(path));
        match Self::attempt(env, drives, cancel, 1) {
            Ok(mut session) => {
                session.console_log = console_log.map(Path::to_owned);
                session.records.splice(0..0, records);
                session.notes.push(format!(
                    "{why} and was killed; it started on the second try, with 1 vCPU{}",
                    kept.map(|p| format!(" (console log of the hung launch: {})", p.display()))
                        .unwrap_or_default()
                ));
                Ok(session)
            }
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::Hung { why, console, .. }) => {
                let kept =
                    console_log.and_then(|path| keep_console(path, &console).then_some(path));
                Err(GuestError::LaunchHung {
                    why,
                    console_log: kept.map(Path::to_owned),
                    console_tail: console_tail(&console),
                })
            }
        }
    }

    /// One launch: listener, vCPUs, drives, `run` (bounded by the launch timeout).
    fn attempt(
        env: &'a GuestEnv,
        drives: &[Drive],
        cancel: &'a CancelToken,
        cpus: usize,
    ) -> Result<Self, Attempt> {
        let scratch = tempfile::Builder::new()
            .prefix("hyper2kvm-guest-")
            .tempdir()
            .map_err(|source| {
                Attempt::Failed(GuestError::Scratch {
                    what: "the guest session".to_owned(),
                    source,
                })
            })?;
        let (daemon, line) = Daemon::start(
            &env.command().arg("--listen"),
            LISTEN_TIMEOUT,
            &scratch.path().join("guestfish-server.stderr"),
        )
        .map_err(|e| Attempt::Failed(e.into()))?;
        let pid = line
            .strip_prefix("GUESTFISH_PID=")
            .and_then(|rest| rest.split(';').next())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
            .ok_or_else(|| Attempt::Failed(GuestError::Start(daemon.record().to_string())))?;
        let mut session = Session {
            env,
            records: vec![daemon.record().clone()],
            daemon,
            pid,
            cancel,
            scratch,
            notes: Vec::new(),
            console_log: None,
            stopped: None,
            observer: None,
        };
        session
            .first_call(&["set-smp".to_owned(), cpus.to_string()])
            .map_err(Attempt::Failed)?;
        for d in drives {
            let mut args = vec![
                "add-drive".to_owned(),
                d.path.display().to_string(),
                format!("format:{}", d.format),
            ];
            if d.readonly {
                args.push("readonly:true".to_owned());
            }
            session.call_owned(&args).map_err(Attempt::Failed)?;
        }
        session.run_appliance()?;
        Ok(session)
    }

    /// `run`, with the appliance's debug console captured (verbose on for the launch only) and
    /// the launch timeout as its limit.
    fn run_appliance(&mut self) -> Result<(), Attempt> {
        self.call(&["set-verbose", "true"])
            .map_err(Attempt::Failed)?;
        // The console so far belongs to no command: only what `run` adds is read below.
        let _ = self.daemon.new_stderr();
        let console_start = self.daemon.stderr_seen();
        let cmd = self
            .env
            .command()
            .arg(format!("--remote={}", self.pid))
            .arg("--")
            .arg("-run")
            .timeout(self.env.launch_timeout);
        let (out, stalled) = self.run_watched(&cmd);
        let mut record = out.map_err(|e| Attempt::Failed(e.into()))?.record;
        let hung = match (&record.status, stalled) {
            (Status::Cancelled, Some(idle)) => Some(format!(
                "the libguestfs appliance hung (for {} s its console printed nothing and its \
                 qemu was idle)",
                idle.as_secs()
            )),
            (Status::TimedOut, _) => Some(format!(
                "the libguestfs appliance did not start within {} s",
                self.env.launch_timeout.as_secs()
            )),
            _ => None,
        };
        if let Some(why) = hung {
            // The listener is stuck inside the launch: kill it and its qemu, then read the
            // console it printed up to then.
            self.daemon.stop();
            let console = self.daemon.stderr_from(console_start, CONSOLE_KEEP_BYTES);
            record.status = Status::TimedOut;
            record.stderr_tail = format!(
                "{why}; last lines of its console:\n{}",
                console_tail(&console)
            );
            self.records.push(record);
            return Err(Attempt::Hung {
                why,
                records: std::mem::take(&mut self.records),
                console,
            });
        }
        // Verbose output is the console, not errors: keep only what libguestfs reports as one.
        let errors: Vec<String> = self
            .daemon
            .new_stderr()
            .lines()
            .filter(|l| l.starts_with("libguestfs: error:") || l.starts_with("guestfish: "))
            .map(str::to_owned)
            .collect();
        for line in &errors {
            if !record.stderr_tail.is_empty() && !record.stderr_tail.ends_with('\n') {
                record.stderr_tail.push('\n');
            }
            record.stderr_tail.push_str(line);
        }
        self.records.push(record.clone());
        if record.status == Status::Cancelled {
            return Err(Attempt::Failed(GuestError::Cancelled));
        }
        if !record.success() || !errors.is_empty() {
            let message = errors
                .iter()
                .map(|l| l.trim_start_matches("libguestfs: error: "))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Attempt::Failed(GuestError::Command {
                command: "run".to_owned(),
                message: if message.is_empty() {
                    record.to_string()
                } else {
                    message
                },
            }));
        }
        // Console lines of the launch may still arrive with this call: only errors count.
        self.call_with(
            &["set-verbose".to_owned(), "false".to_owned()],
            Strictness::ErrorsOnly,
        )
        .map_err(Attempt::Failed)?;
        Ok(())
    }

    /// Runs `cmd` (the `run` request) while watching the launch: when the console has printed
    /// nothing and the listener's process group (its qemu) has used under
    /// [`IDLE_CPU_SHARE`] of a core for the stall window, the request is cancelled and the
    /// window returned. The run's own cancellation passes through.
    fn run_watched(
        &self,
        cmd: &exec::Command,
    ) -> (Result<exec::Output, ExecError>, Option<Duration>) {
        let local = CancelToken::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        let stall = self.env.launch_stall;
        std::thread::scope(|s| {
            let watchdog = s.spawn(|| {
                let mut mark = (
                    Instant::now(),
                    self.daemon.stderr_len(),
                    self.daemon.group_cpu(),
                );
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(LAUNCH_POLL);
                    if self.cancel.is_cancelled() {
                        local.cancel();
                        return None;
                    }
                    let (len, cpu) = (self.daemon.stderr_len(), self.daemon.group_cpu());
                    let busy = cpu.saturating_sub(mark.2).as_secs_f64()
                        > IDLE_CPU_SHARE * mark.0.elapsed().as_secs_f64();
                    if len != mark.1 || busy {
                        mark = (Instant::now(), len, cpu);
                    } else if mark.0.elapsed() >= stall {
                        local.cancel();
                        return Some(stall);
                    }
                }
                None
            });
            let out = exec::run(
                cmd,
                Watch {
                    cancel: Some(&local),
                    ..Watch::default()
                },
            );
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            let stalled = watchdog.join().unwrap_or(None);
            (out, stalled)
        })
    }

    /// What the session noticed that the admin should know (a launch that had to be retried).
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// The first command, sent as soon as the listener printed its pid. guestfish prints it
    /// from the parent right after fork, before the child has bound its socket (its source calls
    /// this "a small but unavoidable race"), so a connection can find no socket yet, or one not
    /// yet listening. Such a command never reached the server: it is sent again, within the
    /// listener's start-up time; the attempts that did not connect leave no record.
    fn first_call(&mut self, args: &[String]) -> Result<String, GuestError> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.call_owned(args) {
                Err(GuestError::Command { message, .. })
                    if not_listening_yet(&message) && Instant::now() < deadline =>
                {
                    self.records.pop();
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Every command this session ran, for the report.
    /// Tells `observer` about each call that does real work (see [`call_brief`]).
    pub fn observe(&mut self, observer: Observer<'a>) {
        self.observer = Some(observer);
    }

    pub fn take_records(&mut self) -> Vec<CommandRecord> {
        std::mem::take(&mut self.records)
    }

    /// Runs one guestfish command and returns its stdout.
    pub fn call(&mut self, args: &[&str]) -> Result<String, GuestError> {
        let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.call_owned(&owned)
    }

    fn call_owned(&mut self, args: &[String]) -> Result<String, GuestError> {
        self.call_with(args, Strictness::AnyMessage)
    }

    fn call_with(&mut self, args: &[String], strictness: Strictness) -> Result<String, GuestError> {
        let Some((name, rest)) = args.split_first() else {
            return Ok(String::new());
        };
        if self.cancel.is_cancelled() {
            return Err(GuestError::Cancelled);
        }
        if let Some(why) = &self.stopped {
            return Err(GuestError::Stopped(why.clone()));
        }
        if let Some(observe) = &mut self.observer
            && let Some(text) = call_brief(name, rest)
        {
            observe(text);
        }
        let cmd = self
            .env
            .command()
            .arg(format!("--remote={}", self.pid))
            .arg("--")
            .arg(format!("-{name}"))
            .args(rest)
            .timeout(self.env.command_timeout);
        let out = exec::run(
            &cmd,
            Watch {
                cancel: Some(self.cancel),
                ..Watch::default()
            },
        )?;
        let mut record = out.record;
        // A '-'-prefixed remote command that fails exits 0 and its error lands on the server's
        // stderr, so that is where failures are found.
        let server = self.daemon.new_stderr();
        if !server.trim().is_empty() {
            if !record.stderr_tail.is_empty() && !record.stderr_tail.ends_with('\n') {
                record.stderr_tail.push('\n');
            }
            record.stderr_tail.push_str(&server);
        }
        if record.status == Status::TimedOut {
            return Err(self.command_timed_out(record, args));
        }
        self.records.push(record.clone());
        if record.status == Status::Cancelled {
            return Err(GuestError::Cancelled);
        }
        let stderr = record.stderr_tail.trim();
        let failed = !record.success()
            || match strictness {
                Strictness::AnyMessage => stderr.lines().any(is_failure_line),
                Strictness::ErrorsOnly => {
                    stderr.contains("libguestfs: error:") || stderr.contains("guestfish: ")
                }
            };
        if failed {
            let message = stderr
                .lines()
                .map(str::trim)
                // mount(8)'s pointer to the appliance's kernel log, which the user cannot read.
                .filter(|l| !l.is_empty() && !l.starts_with("dmesg(1) may have more information"))
                .filter(|l| !is_console_noise(l))
                .map(|l| l.trim_start_matches("libguestfs: error: "))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(GuestError::Command {
                command: args.join(" "),
                message: if message.is_empty() {
                    record.status.to_string()
                } else {
                    message
                },
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The client of a command gave up at the command timeout, and the listener is still inside
    /// the command: kill it and its appliance, and keep what it printed (the launch's debug
    /// console, and every message since) in the console log.
    fn command_timed_out(&mut self, mut record: CommandRecord, args: &[String]) -> GuestError {
        self.daemon.stop();
        let seconds = self.env.command_timeout.as_secs();
        let console = self.daemon.stderr_from(0, CONSOLE_KEEP_BYTES);
        let kept = self
            .console_log
            .clone()
            .filter(|path| keep_console(path, &console));
        let note = format!(
            "no answer within {seconds} s; the guestfish listener and its appliance were killed"
        );
        if !record.stderr_tail.is_empty() && !record.stderr_tail.ends_with('\n') {
            record.stderr_tail.push('\n');
        }
        record.stderr_tail.push_str(&note);
        self.records.push(record);
        let e = GuestError::CommandTimedOut {
            command: args.join(" "),
            seconds,
            console_log: kept,
        };
        self.stopped = Some(e.to_string());
        e
    }

    /// Output lines of a command, without empty ones.
    pub fn lines(&mut self, args: &[&str]) -> Result<Vec<String>, GuestError> {
        Ok(self
            .call(args)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn boolean(&mut self, args: &[&str]) -> Result<bool, GuestError> {
        Ok(self.call(args)?.trim() == "true")
    }

    pub fn is_file(&mut self, path: &str) -> Result<bool, GuestError> {
        self.boolean(&["is-file", path, "followsymlinks:true"])
    }

    pub fn is_dir(&mut self, path: &str) -> Result<bool, GuestError> {
        self.boolean(&["is-dir", path, "followsymlinks:true"])
    }

    /// Whether `path` is a symbolic link, dangling or not.
    pub fn is_symlink(&mut self, path: &str) -> Result<bool, GuestError> {
        self.boolean(&["is-symlink", path])
    }

    pub fn exists(&mut self, path: &str) -> Result<bool, GuestError> {
        self.boolean(&["exists", path])
    }

    /// A text file's content, or `None` when it does not exist (or is not a regular file).
    pub fn read(&mut self, path: &str) -> Result<Option<String>, GuestError> {
        if !self.is_file(path)? {
            return Ok(None);
        }
        let local = self.scratch.path().join("download");
        let local_str = local.display().to_string();
        self.call(&["download", path, &local_str])?;
        let bytes = std::fs::read(&local).map_err(|source| GuestError::Scratch {
            what: path.to_owned(),
            source,
        })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Replaces a guest file's content, keeping its owner and mode (upload rewrites the data of
    /// the existing inode).
    pub fn write(&mut self, path: &str, content: &str) -> Result<(), GuestError> {
        let local = self.scratch.path().join("upload");
        std::fs::write(&local, content).map_err(|source| GuestError::Scratch {
            what: path.to_owned(),
            source,
        })?;
        let local_str = local.display().to_string();
        self.call(&["upload", &local_str, path])?;
        Ok(())
    }

    /// Entry names of a directory (empty when it does not exist).
    pub fn ls(&mut self, dir: &str) -> Result<Vec<String>, GuestError> {
        if !self.is_dir(dir)? {
            return Ok(Vec::new());
        }
        self.lines(&["ls", dir])
    }

    /// Runs a program inside the guest (chroot of the mounted root) and returns its output.
    pub fn run_in_guest(&mut self, argv: &[String]) -> Result<String, GuestError> {
        // guestfish reads a string list as one space-separated word list.
        let joined = argv.join(" ");
        self.call(&["command", &joined])
    }

    /// Flushes and detaches everything, then stops the appliance. The records come back
    /// whatever happened; the result says whether every write reached the disk.
    pub fn finish(mut self) -> (Vec<CommandRecord>, Result<(), GuestError>) {
        if let Some(why) = self.stopped.clone() {
            return (self.take_records(), Err(GuestError::Stopped(why)));
        }
        let result = self
            .call(&["sync"])
            .and_then(|_| self.call(&["umount-all"]))
            .and_then(|_| self.call(&["shutdown"]))
            .map(|_| ());
        let _ = self.call(&["exit"]);
        self.daemon.stop();
        (self.take_records(), result)
    }

    /// The scratch directory this session may use for host-side files.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }
}

/// Writes a hung launch's console to `path` (atomically); whether it was kept.
fn keep_console(path: &Path, console: &[u8]) -> bool {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| crate::atomic::write(path, console).map_err(|e| e.to_string()));
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "could not keep the appliance console in {}: {e}",
                path.display()
            );
            false
        }
    }
}

/// The last lines of a console, indented, for an error message.
fn console_tail(console: &[u8]) -> String {
    let text = String::from_utf8_lossy(console);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "    (the console is empty)".to_owned();
    }
    lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..]
        .iter()
        .map(|l| format!("    {}", l.chars().take(200).collect::<String>()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_error_names_its_cause_once() {
        let e = GuestError::Scratch {
            what: "/etc/fstab".to_owned(),
            source: std::io::Error::other("No space left on device"),
        };
        assert_eq!(
            crate::diag::error_chain(&e),
            "could not use a scratch file for /etc/fstab: No space left on device"
        );
    }

    #[test]
    fn a_console_tail_is_its_last_lines_indented() {
        let console: String = (1..=20).map(|i| format!("line {i}\n\n")).collect();
        let tail = console_tail(console.as_bytes());
        assert_eq!(tail.lines().count(), CONSOLE_TAIL_LINES);
        assert!(tail.starts_with("    line 9\n"), "{tail}");
        assert!(tail.ends_with("    line 20"), "{tail}");
        assert_eq!(console_tail(b""), "    (the console is empty)");
    }

    #[test]
    fn any_message_but_libguestfs_notices_is_a_failure() {
        // As guestfish 1.5x printed them for `-cp -p a b`, `-nosuchcmd`, `-set-smp x`.
        for line in [
            "error: incorrect number of arguments",
            "usage: cp src dest",
            "nosuchcmd: unknown command",
            "set-smp: smp: invalid integer parameter (xstrtoll returned 4)",
            "guestfish: 'maybe': invalid boolean value, use 'true' or 'false'",
            "libguestfs: error: is_file: call launch before using this function",
        ] {
            assert!(is_failure_line(line), "{line}");
        }
        for line in [
            "",
            "  ",
            "libguestfs: warning: something odd",
            "libguestfs: trace: is_file \"/etc/fstab\"",
        ] {
            assert!(!is_failure_line(line), "{line}");
        }
    }

    #[test]
    fn only_a_socket_not_yet_there_is_retried() {
        // As the first command failed when it raced the listener's child.
        assert!(not_listening_yet(
            "/tmp/.guestfish-0/socket-11471: No such file or directory; guestfish: remote: \
             looks like the server is not running"
        ));
        assert!(not_listening_yet(
            "/tmp/.guestfish-0/socket-11471: Connection refused; guestfish: remote: looks like \
             the server is not running"
        ));
        // The server's pid is gone: it died, and waiting will not bring it back.
        assert!(!not_listening_yet(
            "guestfish: remote: looks like the server is not running"
        ));
        // A command that reached the server and failed there.
        assert!(!not_listening_yet("set-smp: No such file or directory"));
    }
}
