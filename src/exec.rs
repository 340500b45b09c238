//! The only place that starts processes.
//!
//! Every external program (qemu-img, guestfish, qemu-system, cp, the python3 of python hooks,
//! hook scripts) runs through [`run`], or through [`Daemon`] for the one that stays up (the
//! guestfish listener). A child always gets its own process group, so
//! cancelling or timing it out can signal the whole group (grandchildren included) and a Ctrl-C
//! on the terminal reaches us first, not the child. The result of every run is a
//! [`CommandRecord`] (argv, status or signal, duration, stderr tail) that goes into errors and
//! reports alike, so an admin can always re-run what we ran. clippy.toml makes any other use of
//! `std::process::Command` in the crate an error.
//!
//! Every group started here is registered with the reaper ([`crate::reaper`], started by
//! [`start_reaper`]) and unregistered once it is empty, so nothing we started outlives us, even
//! when we are killed with SIGKILL.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;

/// How much of a child's stderr we keep for errors and reports.
const STDERR_TAIL_BYTES: usize = 8 * 1024;
/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often cancellation (a flag set by a signal handler) is looked at while a child runs; the
/// child's exit and its output arrive on a channel and end the wait at once.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long we keep reading a finished command's stdout/stderr. A process that left the group
/// (setsid, a daemon started by a hook script) can hold the pipes open forever; we must not wait
/// for it.
const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// The longest piece of stdout handed to a line watcher: a command that prints without a newline
/// must not make us buffer all of it.
const PIECE_MAX_BYTES: usize = 256 * 1024;

/// A cancellation flag shared between the signal handler and every running command.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// The flag itself, for registering with a signal handler.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A command to run: program, arguments, environment additions, working directory, limits.
#[derive(Clone, Debug)]
pub struct Command {
    program: PathBuf,
    args: Vec<OsString>,
    /// How each argument is shown in logs and records (`None`: as it is).
    shown: Vec<Option<String>>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    timeout: Option<Duration>,
    capture_stdout: bool,
    /// Keep only this many trailing bytes of stdout (a hook may print without end).
    stdout_limit: Option<usize>,
    /// Bytes written to the child's stdin, which is then closed; without them stdin is null.
    stdin: Option<Vec<u8>>,
    /// Kill what the child left running in its process group once it has exited.
    kill_leftovers: bool,
}

impl Command {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            shown: Vec::new(),
            env: Vec::new(),
            cwd: None,
            timeout: None,
            capture_stdout: true,
            stdout_limit: None,
            stdin: None,
            kill_leftovers: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self.shown.push(None);
        self
    }

    /// An argument that logs and records show as `shown` (a long inline program, for example).
    pub fn arg_shown_as(mut self, arg: impl AsRef<OsStr>, shown: impl Into<String>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self.shown.push(Some(shown.into()));
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().to_owned());
            self.shown.push(None);
        }
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Captures only the last `bytes` of stdout.
    pub fn stdout_tail(mut self, bytes: usize) -> Self {
        self.stdout_limit = Some(bytes);
        self
    }

    /// Once the child has exited, SIGKILLs whatever it left behind in its process group (a hook
    /// that started a daemon), so nothing it started outlives it or holds its pipes open.
    pub fn kill_leftovers(mut self) -> Self {
        self.kill_leftovers = true;
        self
    }

    /// Feeds `bytes` to the child's stdin (data that must not travel through argv or a shell).
    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// The argv as text, for reports and messages.
    pub fn argv(&self) -> Vec<String> {
        let program = self.program.to_string_lossy().into_owned();
        let args = self
            .args
            .iter()
            .zip(&self.shown)
            .map(|(a, shown)| match shown {
                Some(s) => s.clone(),
                None => a.to_string_lossy().into_owned(),
            });
        std::iter::once(program).chain(args).collect()
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// A few words for a progress display: the program's name, its first word that is no
    /// option (a subcommand), and the file name of its last argument when that is a path
    /// (`qemu-img check web01.vmdk`).
    pub fn brief(&self) -> String {
        let argv = self.argv();
        let name = |s: &str| {
            Path::new(s)
                .file_name()
                .map_or_else(|| s.to_owned(), |n| n.to_string_lossy().into_owned())
        };
        let mut words = vec![name(&argv[0])];
        let rest = &argv[1..];
        if let Some(sub) = rest.first().filter(|a| !a.starts_with('-')) {
            words.push(sub.clone());
        }
        if let Some(last) = rest
            .last()
            .filter(|a| !a.starts_with('-') && rest.len() > 1)
        {
            // A path, or the `file.filename=` of a json: or option string.
            let path = last.rsplit("filename").next().unwrap_or(last);
            let path = path.trim_start_matches(['"', ':', '=']);
            let path = path.split([',', '"', '}']).next().unwrap_or(path);
            if path.contains('/') {
                words.push(name(path));
            }
        }
        words.join(" ")
    }
}

impl fmt::Display for Command {
    /// Shell-quoted, so the line can be pasted into a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote_argv(&self.argv()))
    }
}

/// Quotes an argv for display, POSIX-shell style: words made only of safe characters stay
/// bare, anything else is single-quoted.
pub fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|word| crate::diag::shell_word(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exit status {code}"),
            Status::Signaled(sig) => {
                let name = Signal::try_from(*sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "killed by signal {sig} ({name})")
            }
            Status::TimedOut => f.write_str("timed out"),
            Status::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// What happened when a command ran: the part of a run that reports keep.
#[derive(Clone, Debug, Serialize)]
pub struct CommandRecord {
    pub argv: Vec<String>,
    pub status: Status,
    pub duration_seconds: f64,
    pub stderr_tail: String,
}

impl CommandRecord {
    pub fn success(&self) -> bool {
        self.status == Status::Exited(0)
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.status {
            Status::Exited(code) => Some(code),
            _ => None,
        }
    }

    pub fn command_line(&self) -> String {
        quote_argv(&self.argv)
    }
}

impl fmt::Display for CommandRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ended with {}", self.command_line(), self.status)?;
        let tail = self.stderr_tail.trim();
        if !tail.is_empty() {
            write!(f, ": {tail}")?;
        }
        Ok(())
    }
}

/// A finished run: its record and captured stdout.
#[derive(Debug)]
pub struct Output {
    pub record: CommandRecord,
    pub stdout: Vec<u8>,
    /// How many bytes the command wrote to stdout and to stderr in all; `stdout` and the
    /// record's `stderr_tail` keep only their ends.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` was not found on PATH; install the Debian package `{package}`")]
    ToolMissing {
        program: &'static str,
        package: &'static str,
    },
    #[error("could not start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("could not wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
}

/// What a caller may watch while the command runs.
#[derive(Default)]
pub struct Watch<'a, 'b> {
    /// Cancels the command (process group gets SIGTERM, then SIGKILL).
    pub cancel: Option<&'a CancelToken>,
    /// Receives stdout in pieces split at `\n` and `\r` (qemu-img -p uses `\r`).
    pub on_stdout_line: Option<&'b mut dyn FnMut(&str)>,
}

/// Runs a command to completion and returns its record whatever the exit status; only a failure
/// to start or wait is an error. Callers decide what a non-zero exit means.
pub fn run(cmd: &Command, watch: Watch<'_, '_>) -> Result<Output, ExecError> {
    let argv = cmd.argv();
    let command_line = quote_argv(&argv);
    tracing::info!(command = %command_line, "running");

    #[expect(
        clippy::disallowed_types,
        reason = "this is the one place a command becomes a process (clippy.toml)"
    )]
    let mut proc = std::process::Command::new(&cmd.program);
    proc.args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        // Last, so no command's own environment can drop it (see `crate::reaper`).
        .envs(crate::reaper::child_env())
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &cmd.cwd {
        proc.current_dir(dir);
    }

    let started = Instant::now();
    let mut child = proc.spawn().map_err(|source| ExecError::Spawn {
        command: command_line.clone(),
        source,
    })?;

    if let (Some(bytes), Some(mut pipe)) = (cmd.stdin.clone(), child.stdin.take()) {
        // Its own thread: a child that does not read would otherwise block us before we can
        // time it out. Dropping the pipe afterwards gives the child EOF.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    crate::reaper::register(pgid.as_raw());
    // Everything a run waits for arrives on one channel, so the end of a command is noticed the
    // moment it happens: no polling interval sits between a child's exit and ours.
    let (tx, rx) = mpsc::channel::<Event>();
    let stderr = child.stderr.take().expect("stderr was piped");
    let stderr_tx = tx.clone();
    thread::spawn(move || {
        let (tail, total) = read_tail(stderr, STDERR_TAIL_BYTES);
        let _ = stderr_tx.send(Event::StderrDone(tail, total));
    });
    let stdout = child.stdout.take().expect("stdout was piped");
    let (capture, limit) = (cmd.capture_stdout, cmd.stdout_limit);
    // Pieces are only cut and sent when someone watches them.
    let watched = watch.on_stdout_line.is_some();
    let stdout_tx = tx.clone();
    thread::spawn(move || {
        let (captured, total) = read_stdout(stdout, capture, limit, watched.then_some(&stdout_tx));
        let _ = stdout_tx.send(Event::StdoutDone(captured, total));
    });
    thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait()));
    });

    let Watch {
        cancel,
        on_stdout_line,
    } = watch;
    let mut collect = Collect {
        stdout: None,
        stderr: None,
        on_line: on_stdout_line,
    };
    let status = supervise(&rx, &mut collect, cmd.timeout, cancel, started, pgid);
    forget_if_empty(pgid);
    let status = status.map_err(|source| ExecError::Wait {
        command: command_line.clone(),
        source,
    })?;
    if cmd.kill_leftovers {
        // The leader is reaped; anything still in its group was left behind by it.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    // The pipes reach EOF when the last process holding them exits; normally that is the child
    // just reaped. Wait a little for stragglers, never forever.
    let drain_deadline = Instant::now() + PIPE_DRAIN;
    while !collect.done() {
        match rx.recv_timeout(drain_deadline.saturating_duration_since(Instant::now())) {
            Ok(event) => collect.take(event),
            Err(_) => break,
        }
    }
    let Collect { stdout, stderr, .. } = collect;
    let held_open = stdout.is_none() || stderr.is_none();
    let (stdout, stdout_bytes) = stdout.unwrap_or_default();
    let (stderr, stderr_bytes) = stderr.unwrap_or_default();
    let mut stderr_tail = String::from_utf8_lossy(&stderr).into_owned();
    if held_open {
        tracing::warn!(command = %command_line, "output still held open after exit");
        stderr_tail.push_str(
            "\n[hyper2kvm: stopped reading output: a process that left the command's process \
             group still holds its stdout or stderr open]",
        );
    }

    let record = CommandRecord {
        argv,
        status,
        duration_seconds: crate::units::seconds(started.elapsed()),
        stderr_tail,
    };
    tracing::info!(
        command = %command_line,
        status = %record.status,
        seconds = record.duration_seconds,
        "finished"
    );
    Ok(Output {
        record,
        stdout,
        stdout_bytes,
        stderr_bytes,
    })
}

/// What a running command's helper threads report.
enum Event {
    /// A `\n`/`\r`-terminated piece of stdout.
    Piece(Vec<u8>),
    /// Stdout reached EOF; what was captured, and how many bytes there were in all.
    StdoutDone(Vec<u8>, u64),
    /// Stderr reached EOF; its tail, and how many bytes there were in all.
    StderrDone(Vec<u8>, u64),
    /// The child was reaped.
    Exited(io::Result<ExitStatus>),
}

/// What a run keeps of its child's output while waiting for it.
struct Collect<'c> {
    stdout: Option<(Vec<u8>, u64)>,
    stderr: Option<(Vec<u8>, u64)>,
    on_line: Option<&'c mut dyn FnMut(&str)>,
}

impl Collect<'_> {
    fn take(&mut self, event: Event) {
        match event {
            Event::Piece(piece) => {
                if let Some(cb) = self.on_line.as_mut() {
                    cb(&String::from_utf8_lossy(&piece));
                }
            }
            Event::StdoutDone(bytes, total) => self.stdout = Some((bytes, total)),
            Event::StderrDone(bytes, total) => self.stderr = Some((bytes, total)),
            // Only the waiter sends it, once, and `supervise` consumes it.
            Event::Exited(_) => {}
        }
    }

    fn done(&self) -> bool {
        self.stdout.is_some() && self.stderr.is_some()
    }
}

/// Waits for the child's exit, collecting output meanwhile; times it out or cancels it
/// meanwhile. Cancellation is a flag set by a signal handler, so it is looked at every
/// [`POLL_INTERVAL`]; the exit itself ends the wait at once.
fn supervise(
    events: &mpsc::Receiver<Event>,
    collect: &mut Collect<'_>,
    timeout: Option<Duration>,
    cancel: Option<&CancelToken>,
    started: Instant,
    pgid: Pid,
) -> io::Result<Status> {
    loop {
        let wait = timeout.map_or(POLL_INTERVAL, |t| {
            POLL_INTERVAL.min(t.saturating_sub(started.elapsed()))
        });
        match events.recv_timeout(wait) {
            Ok(Event::Exited(status)) => return status.map(exit_status),
            Ok(event) => collect.take(event),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(waiter_gone()),
        }
        let stop = if cancel.is_some_and(CancelToken::is_cancelled) {
            Some(Status::Cancelled)
        } else if timeout.is_some_and(|t| started.elapsed() >= t) {
            Some(Status::TimedOut)
        } else {
            None
        };
        if let Some(status) = stop {
            kill_group(events, collect, pgid)?;
            return Ok(status);
        }
    }
}

/// Tells the reaper a group is gone once nothing of it is left. A group that outlives its leader
/// (a hook's background child) stays registered, so it still dies with us; the reaper forgets it
/// by itself once it empties.
fn forget_if_empty(pgid: Pid) {
    if killpg(pgid, None).is_err() {
        crate::reaper::unregister(pgid.as_raw());
    }
}

/// Starts the reaper (see [`crate::reaper`]): this binary again, with the hidden argument, in a
/// process group of its own, reading the registrations from a pipe whose write end only we hold.
/// Called once, before anything else is started.
pub fn start_reaper() -> io::Result<()> {
    // Close-on-exec from the start: a child that inherited the write end would keep the pipe
    // open after our death, and the reaper would wait for it.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let token = crate::reaper::new_token();
    #[expect(
        clippy::disallowed_types,
        reason = "this is the one place a command becomes a process (clippy.toml)"
    )]
    let mut proc = std::process::Command::new("/proc/self/exe");
    proc.arg(crate::reaper::ARG)
        .arg(&token)
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // Never waited for: it lives exactly as long as we do, and init reaps it after us.
    let _reaper = proc.spawn()?;
    crate::reaper::install(std::fs::File::from(write), token);
    Ok(())
}

fn exit_status(status: ExitStatus) -> Status {
    match (status.code(), status.signal()) {
        (Some(code), _) => Status::Exited(code),
        (None, Some(sig)) => Status::Signaled(sig),
        (None, None) => Status::Exited(-1),
    }
}

fn waiter_gone() -> io::Error {
    io::Error::other("the thread waiting for the child ended without its exit status")
}

/// SIGTERM to the whole group, SIGKILL after a grace period; returns once the child is reaped.
fn kill_group(
    events: &mpsc::Receiver<Event>,
    collect: &mut Collect<'_>,
    pgid: Pid,
) -> io::Result<()> {
    let _ = killpg(pgid, Signal::SIGTERM);
    let mut grace_ends = Some(Instant::now() + KILL_GRACE);
    loop {
        let event = match grace_ends {
            Some(at) => match events.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    grace_ends = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(waiter_gone()),
            },
            None => events.recv().map_err(|_| waiter_gone())?,
        };
        match event {
            Event::Exited(status) => {
                status?;
                // The leader is gone; make sure no straggler in its group survives it.
                let _ = killpg(pgid, Signal::SIGKILL);
                return Ok(());
            }
            other => collect.take(other),
        }
    }
}

/// The last `keep` bytes of `r`, and how many bytes it held in all.
fn read_tail(mut r: impl Read, keep: usize) -> (Vec<u8>, u64) {
    let mut tail = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    (tail, total)
}

/// Reads stdout, captures it (or its last `limit` bytes) when asked, and, when `pieces` is
/// given, sends each `\n`/`\r`-terminated piece on (at most [`PIECE_MAX_BYTES`] each). Returns
/// what was captured and how many bytes there were in all.
fn read_stdout(
    mut r: impl Read,
    capture: bool,
    limit: Option<usize>,
    pieces: Option<&mpsc::Sender<Event>>,
) -> (Vec<u8>, u64) {
    let mut captured = Vec::new();
    let mut pending = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                if capture {
                    captured.extend_from_slice(&buf[..n]);
                    if let Some(keep) = limit
                        && captured.len() > 2 * keep
                    {
                        captured.drain(..captured.len() - keep);
                    }
                }
                let Some(pieces) = pieces else { continue };
                for &b in &buf[..n] {
                    if b == b'\n' || b == b'\r' {
                        if !pending.is_empty() {
                            let _ = pieces.send(Event::Piece(std::mem::take(&mut pending)));
                        }
                    } else {
                        pending.push(b);
                        if pending.len() >= PIECE_MAX_BYTES {
                            let _ = pieces.send(Event::Piece(std::mem::take(&mut pending)));
                        }
                    }
                }
            }
        }
    }
    if let Some(pieces) = pieces
        && !pending.is_empty()
    {
        let _ = pieces.send(Event::Piece(pending));
    }
    if let Some(keep) = limit
        && captured.len() > keep
    {
        captured.drain(..captured.len() - keep);
    }
    (captured, total)
}

/// A background service started through a command that prints one line and leaves a daemon
/// behind in its process group (`guestfish --listen`). The group is killed when the handle is
/// dropped, so no daemon outlives the run that started it.
///
/// The daemon's stderr goes to a file rather than a pipe: what a daemon reports about a request
/// (guestfish prints a remote command's error on the server's stderr, not the client's) is in
/// the file by the time the request returns, so [`Daemon::new_stderr`] reads it without a race.
#[derive(Debug)]
pub struct Daemon {
    pgid: Pid,
    record: CommandRecord,
    stderr_log: PathBuf,
    stderr_seen: u64,
}

impl Daemon {
    /// Starts `cmd` and returns the handle and the first line it printed on stdout.
    ///
    /// The daemon's stderr is written to `stderr_log` (created or truncated).
    pub fn start(
        cmd: &Command,
        first_line_timeout: Duration,
        stderr_log: &Path,
    ) -> Result<(Daemon, String), ExecError> {
        use std::io::{BufRead, BufReader};
        let argv = cmd.argv();
        let command_line = quote_argv(&argv);
        tracing::info!(command = %command_line, "starting");
        let log = std::fs::File::create(stderr_log).map_err(|source| ExecError::Spawn {
            command: format!("{command_line} (stderr to {})", stderr_log.display()),
            source,
        })?;
        #[expect(
            clippy::disallowed_types,
            reason = "this is the one place a daemon becomes a process (clippy.toml)"
        )]
        let mut proc = std::process::Command::new(&cmd.program);
        proc.args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .envs(crate::reaper::child_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0);
        if let Some(dir) = &cmd.cwd {
            proc.current_dir(dir);
        }
        let started = Instant::now();
        let mut child = proc.spawn().map_err(|source| ExecError::Spawn {
            command: command_line.clone(),
            source,
        })?;
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        crate::reaper::register(pgid.as_raw());
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // The daemon keeps the pipes open for its whole life: read them on detached threads.
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx.recv_timeout(first_line_timeout).unwrap_or_default();
        if line.is_empty() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        // The foreground process exits once the daemon is ready; reap it.
        let status = child.wait().map(exit_status).unwrap_or(Status::Exited(-1));
        let stderr_tail = if line.is_empty() {
            std::fs::File::open(stderr_log)
                .map(|f| read_tail(f, STDERR_TAIL_BYTES).0)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let record = CommandRecord {
            argv,
            status: if line.is_empty() && status == Status::Exited(0) {
                Status::TimedOut
            } else {
                status
            },
            duration_seconds: crate::units::seconds(started.elapsed()),
            stderr_tail: String::from_utf8_lossy(&stderr_tail).into_owned(),
        };
        let stderr_seen = std::fs::metadata(stderr_log).map_or(0, |m| m.len());
        Ok((
            Daemon {
                pgid,
                record,
                stderr_log: stderr_log.to_owned(),
                stderr_seen,
            },
            line.trim().to_owned(),
        ))
    }

    /// What the daemon wrote on stderr since the last call (lossy UTF-8).
    pub fn new_stderr(&mut self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.stderr_log) else {
            return String::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.stderr_seen)).is_err() || f.read_to_end(&mut buf).is_err() {
            return String::new();
        }
        self.stderr_seen += buf.len() as u64;
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// How many bytes the daemon has written to its stderr log so far.
    pub fn stderr_len(&self) -> u64 {
        std::fs::metadata(&self.stderr_log).map_or(0, |m| m.len())
    }

    /// CPU time (user + system) used so far by the processes alive in the daemon's group, from
    /// `/proc`; what tells a busy daemon (or a child it started, such as a qemu) from an idle
    /// one.
    pub fn group_cpu(&self) -> Duration {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as f64;
        let mut total = 0u64;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Duration::ZERO;
        };
        for entry in entries.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state ppid pgrp ... utime(12) stime(13).
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let pgrp = fields.get(2).and_then(|f| f.parse::<i32>().ok());
            if pgrp != Some(self.pgid.as_raw()) {
                continue;
            }
            let field = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total += field(11) + field(12);
        }
        Duration::from_secs_f64(total as f64 / ticks)
    }

    /// How far [`Daemon::new_stderr`] has read the stderr log.
    pub fn stderr_seen(&self) -> u64 {
        self.stderr_seen
    }

    /// The stderr log from byte `start` on, at most its last `max` bytes.
    pub fn stderr_from(&self, start: u64, max: u64) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.stderr_log) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let from = start.max(len.saturating_sub(max));
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err() || f.take(max).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        buf
    }

    /// How the start went (exit status of the foreground process, duration, stderr).
    pub fn record(&self) -> &CommandRecord {
        &self.record
    }

    /// SIGTERM to the daemon's group, then SIGKILL after the grace period.
    pub fn stop(&self) {
        if killpg(self.pgid, Signal::SIGTERM).is_err() {
            forget_if_empty(self.pgid);
            return;
        }
        let deadline = Instant::now() + KILL_GRACE;
        while Instant::now() < deadline {
            // Signal 0 only checks whether anything in the group is still alive.
            if killpg(self.pgid, None).is_err() {
                forget_if_empty(self.pgid);
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        forget_if_empty(self.pgid);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_exit_code() {
        let cmd = Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run(&cmd, Watch::default()).expect("runs");
        assert_eq!(out.record.status, Status::Exited(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(out.record.stderr_tail.trim(), "err");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("grandchild-alive");
        let script = format!("(sleep 3; touch {}) & sleep 600", marker.to_string_lossy());
        let cmd = Command::new("/bin/sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(300));
        let started = Instant::now();
        let out = run(&cmd, Watch::default()).expect("runs");
        assert_eq!(out.record.status, Status::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "the grandchild survived the timeout");
    }

    #[test]
    fn cancel_stops_a_running_command() {
        let token = CancelToken::new();
        let t2 = token.clone();
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            t2.cancel();
        });
        let cmd = Command::new("/bin/sleep").arg("600");
        let out = run(
            &cmd,
            Watch {
                cancel: Some(&token),
                ..Watch::default()
            },
        )
        .expect("runs");
        canceller.join().expect("joins");
        assert_eq!(out.record.status, Status::Cancelled);
    }

    #[test]
    fn stdout_pieces_split_on_carriage_returns() {
        let cmd =
            Command::new("/bin/sh").args(["-c", "printf '  (1.00/100%%)\\r  (50.00/100%%)\\r'"]);
        let mut seen = Vec::new();
        let mut cb = |s: &str| seen.push(s.trim().to_owned());
        run(
            &cmd,
            Watch {
                on_stdout_line: Some(&mut cb),
                ..Watch::default()
            },
        )
        .expect("runs");
        assert_eq!(seen, ["(1.00/100%)", "(50.00/100%)"]);
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&Command::new("/nonexistent/tool"), Watch::default()).unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }

    #[test]
    fn daemon_group_dies_with_its_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("alive");
        let script = format!(
            "(while true; do touch {}; sleep 0.1; done) & echo ready",
            marker.to_string_lossy()
        );
        let cmd = Command::new("/bin/sh").args(["-c", &script]);
        let (daemon, line) =
            Daemon::start(&cmd, Duration::from_secs(5), &dir.path().join("stderr"))
                .expect("starts");
        assert_eq!(line, "ready");
        thread::sleep(Duration::from_millis(300));
        assert!(marker.exists());
        drop(daemon);
        std::fs::remove_file(&marker).expect("rm");
        thread::sleep(Duration::from_millis(400));
        assert!(!marker.exists(), "the daemon outlived its handle");
    }

    #[test]
    fn daemon_group_cpu_counts_its_busy_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A child that spins for a while, then the daemon's first line.
        let cmd = Command::new("/bin/sh").args([
            "-c",
            "(i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 60) & echo ready; sleep 60",
        ]);
        let (daemon, line) =
            Daemon::start(&cmd, Duration::from_secs(5), &dir.path().join("stderr"))
                .expect("starts");
        assert_eq!(line, "ready");
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.group_cpu() < Duration::from_millis(50) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(daemon.group_cpu() >= Duration::from_millis(50));
        daemon.stop();
        assert_eq!(
            daemon.group_cpu(),
            Duration::ZERO,
            "nothing of the group is left"
        );
    }

    #[test]
    fn daemon_stderr_is_read_as_it_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("go");
        let script = format!(
            "(while [ ! -e {} ]; do sleep 0.05; done; echo oops >&2; sleep 5) & echo ready",
            flag.to_string_lossy()
        );
        let cmd = Command::new("/bin/sh").args(["-c", &script]);
        let (mut daemon, _) =
            Daemon::start(&cmd, Duration::from_secs(5), &dir.path().join("stderr"))
                .expect("starts");
        assert_eq!(daemon.new_stderr(), "");
        std::fs::write(&flag, "").expect("flag");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = String::new();
        while got.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            got = daemon.new_stderr();
        }
        assert_eq!(got, "oops\n");
        assert_eq!(daemon.new_stderr(), "", "each line is returned once");
    }

    #[test]
    fn stdin_bytes_reach_the_child() {
        let cmd = Command::new("/bin/cat").stdin_bytes(b"{\"a\": 1}".to_vec());
        let out = run(&cmd, Watch::default()).expect("runs");
        assert_eq!(out.stdout, b"{\"a\": 1}");
    }

    #[test]
    fn stdout_tail_keeps_the_end() {
        let cmd = Command::new("/bin/sh")
            .args(["-c", "seq 1 100000"])
            .stdout_tail(16);
        let out = run(&cmd, Watch::default()).expect("runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "98\n99999\n100000\n");
        assert_eq!(
            out.stdout_bytes, 588_895,
            "every byte is counted, not only the tail"
        );
    }

    #[test]
    fn leftovers_in_the_group_are_killed_once_the_child_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 600 & echo $! > {}", pidfile.to_string_lossy());
        let cmd = Command::new("/bin/sh")
            .args(["-c", &script])
            .kill_leftovers();
        let started = Instant::now();
        let out = run(&cmd, Watch::default()).expect("runs");
        assert_eq!(out.record.status, Status::Exited(0));
        // The killed leftover closed the pipes: no wait for them to be released.
        assert!(started.elapsed() < PIPE_DRAIN, "{:?}", started.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("pid");
        // SIGKILL is delivered asynchronously: give it a moment to land.
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("gone")
                .to_owned()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !["Z", "X", "gone"].contains(&state().as_str()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            ["Z", "X", "gone"].contains(&state().as_str()),
            "sleep is {}",
            state()
        );
    }

    #[test]
    #[cfg_attr(missing_tool = "setsid", ignore = "needs setsid (util-linux)")]
    fn a_process_that_left_the_group_does_not_hang_us() {
        // build.rs ignores this test where setsid is missing, except under CI, where it fails.
        assert!(which::which("setsid").is_ok(), "setsid is not on PATH");
        // The daemon keeps our stderr open after the child exits.
        let cmd = Command::new("/bin/sh").args(["-c", "setsid sleep 30 & echo done"]);
        let started = Instant::now();
        let out = run(&cmd, Watch::default()).expect("runs");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.record.status, Status::Exited(0));
        assert!(out.record.stderr_tail.contains("stopped reading output"));
    }

    #[test]
    fn shown_arguments_replace_their_text_in_records() {
        let cmd = Command::new("/bin/echo")
            .arg("a")
            .arg_shown_as("very long program text", "<program>");
        assert_eq!(cmd.argv(), ["/bin/echo", "a", "<program>"]);
        let out = run(&cmd, Watch::default()).expect("runs");
        assert_eq!(out.stdout, b"a very long program text\n");
        assert_eq!(out.record.argv, ["/bin/echo", "a", "<program>"]);
    }

    #[test]
    fn display_quotes_arguments() {
        let cmd =
            Command::new("qemu-img").args(["info", "--output=json", "my disk.vmdk", "it's", ""]);
        assert_eq!(
            cmd.to_string(),
            r"qemu-img info --output=json 'my disk.vmdk' 'it'\''s' ''"
        );
    }
}
