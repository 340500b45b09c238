//! The guard that outlives a run: whatever kills hyper2kvm, the processes it started die too.
//!
//! Every child runs in its own process group (see [`crate::exec`]), so neither a signal to our
//! group nor the kernel's parent-death signal reaches it, and `PR_SET_PDEATHSIG` would fire
//! when the spawning *thread* ends, not the process, and never reaches grandchildren. Instead,
//! at startup [`crate::exec::start_reaper`] starts a second copy of the binary ([`ARG`]) in a
//! process group of its own, with the read end of a pipe as its stdin. As we start and finish
//! process groups we write `+<pgid>` and `-<pgid>` lines to the pipe ([`register`],
//! [`unregister`]). The reaper ([`serve`]) ignores SIGINT, SIGTERM and SIGHUP and only reads.
//! When the pipe reaches end of file, hyper2kvm is gone, however it ended (SIGKILL included,
//! since the kernel closes a dead process's descriptors), and the reaper sends SIGTERM to every
//! group still registered, SIGKILL to whatever is left after a grace period, and exits.
//!
//! A group is registered only once `spawn` has returned, so a SIGKILL in the instant between the
//! child's creation and its registration, or a child that leaves its group (`setsid`, a daemon),
//! would escape the groups alone. Every child therefore also carries this run's token in its
//! environment ([`RUN_VAR`], inherited by everything it starts), and at end of file the reaper
//! ends every process whose environment holds the token as well. End of file cannot come before
//! such a child is visible: a child being spawned holds a copy of the pipe's write end until its
//! `exec` closes it (close-on-exec), and from its `exec` on its environment holds the token.
//!
//! The write end is the process's one piece of global state: the reaper watches the whole
//! process, and every spawn, wherever it happens, has to reach it. A process without a reaper
//! (the library's unit tests) simply registers nothing.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::unistd::Pid;

/// The hidden first argument that makes the binary a reaper; the second is the run's token.
pub const ARG: &str = "--internal-process-reaper";

/// The environment variable that carries the run's token into every process we start.
pub const RUN_VAR: &str = "HYPER2KVM_RUN_TOKEN";

/// How long groups get between SIGTERM and SIGKILL once hyper2kvm is gone.
const GRACE: Duration = Duration::from_secs(2);
/// How often the reaper forgets groups that have emptied without being unregistered (a hook's
/// background child that ended later), so a process group id the kernel hands out again later
/// is never signalled.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

static CHANNEL: OnceLock<Mutex<File>> = OnceLock::new();
static TOKEN: OnceLock<String> = OnceLock::new();

/// A token no other run has: our pid, and the time to the nanosecond.
pub fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// Makes `writer` (the pipe to a reaper started with `token`) the place registrations go.
pub fn install(writer: File, token: String) {
    if CHANNEL.set(Mutex::new(writer)).is_ok() {
        let _ = TOKEN.set(token);
    }
}

/// The `(name, value)` every child's environment gets, when a reaper watches this process.
pub fn child_env() -> Option<(&'static str, &'static str)> {
    TOKEN.get().map(|t| (RUN_VAR, t.as_str()))
}

/// Whether a reaper watches this process.
pub fn installed() -> bool {
    CHANNEL.get().is_some()
}

/// Tells the reaper about a process group we just started.
pub fn register(pgid: i32) {
    send('+', pgid);
}

/// Tells the reaper a group is gone (its last member has exited).
pub fn unregister(pgid: i32) {
    send('-', pgid);
}

fn send(op: char, pgid: i32) {
    let Some(channel) = CHANNEL.get() else {
        return;
    };
    // One write per line: a line this short reaches the pipe whole.
    let line = format!("{op}{pgid}\n");
    if let Ok(mut pipe) = channel.lock()
        && let Err(e) = pipe.write_all(line.as_bytes())
    {
        tracing::warn!("the process reaper is gone ({e}); processes started now may outlive us");
    }
}

/// One line of the protocol.
fn parse(line: &str) -> Option<(bool, i32)> {
    let line = line.trim();
    let (add, rest) = match line.as_bytes().first()? {
        b'+' => (true, &line[1..]),
        b'-' => (false, &line[1..]),
        _ => return None,
    };
    // Group 0 and 1 would mean our own group and init's: never accepted.
    let pgid: i32 = rest.parse().ok().filter(|p| *p > 1)?;
    Some((add, pgid))
}

/// Whether any process of the group is still there.
fn alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// The processes other than ourselves whose environment holds `RUN_VAR=token`.
fn carrying(token: &str) -> Vec<i32> {
    let needle = format!("{RUN_VAR}={token}");
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 1 && pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

/// The reaper's whole life: reads registrations from `input` until end of file, then ends every
/// group still registered and every process carrying `token` (when there is one). Returns the
/// exit code.
pub fn serve(input: impl Read + Send + 'static, token: Option<&str>) -> u8 {
    // Blocked rather than handled: a terminal's Ctrl-C, a second SIGTERM sent to hyper2kvm and
    // its helpers, or the terminal hanging up must not stop the one process that cleans up.
    let mut blocked = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        blocked.add(sig);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None);

    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(input);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line.clone()).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the sender is the end-of-file signal.
    });

    let mut groups = BTreeSet::new();
    let mut pruned = Instant::now();
    loop {
        match rx.recv_timeout(PRUNE_EVERY) {
            Ok(line) => match parse(&line) {
                Some((true, pgid)) => {
                    groups.insert(pgid);
                }
                Some((false, pgid)) => {
                    groups.remove(&pgid);
                }
                None => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            groups.retain(|&g| alive(g));
            pruned = Instant::now();
        }
    }
    end_all(&groups, token);
    0
}

/// SIGTERM to every group and every process carrying `token`, SIGKILL to what is still there
/// after [`GRACE`] (carriers looked for again: one may have started another meanwhile).
fn end_all(groups: &BTreeSet<i32>, token: Option<&str>) {
    let carriers = || token.map(carrying).unwrap_or_default();
    let mut left: Vec<i32> = groups.iter().copied().filter(|&g| alive(g)).collect();
    for &g in &left {
        let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
    }
    let mut stragglers = carriers();
    for &p in &stragglers {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while !(left.is_empty() && stragglers.is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left.retain(|&g| alive(g));
        stragglers = carriers();
    }
    for &g in &left {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
    for p in carriers() {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_refuse_dangerous_groups() {
        assert_eq!(parse("+123\n"), Some((true, 123)));
        assert_eq!(parse("-123"), Some((false, 123)));
        assert_eq!(parse("+0"), None);
        assert_eq!(parse("+1"), None);
        assert_eq!(parse("+-5"), None);
        assert_eq!(parse("123"), None);
        assert_eq!(parse(""), None);
    }

    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                rest.split_whitespace()
                    .next()
                    .map(|st| st != "Z" && st != "X")
            })
            .unwrap_or(false)
    }

    /// The spawn window: a process carrying the token that was never registered (hyper2kvm killed
    /// between its creation and its registration) is ended at end of file all the same, and one
    /// carrying another run's token is left alone.
    #[test]
    fn an_unregistered_carrier_of_the_token_is_ended() {
        #[expect(clippy::disallowed_types, reason = "a test of the reaper itself")]
        let spawn = |token: &str| {
            std::process::Command::new("sleep")
                .arg("600")
                .env(RUN_VAR, token)
                .spawn()
                .expect("sleep")
        };
        let token = new_token();
        let mut ours = spawn(&token);
        let mut other = spawn("another-run");
        let ours_pid = i32::try_from(ours.id()).expect("pid");
        let other_pid = i32::try_from(other.id()).expect("pid");
        // Its environment is the token's from its exec on; wait for the exec to be visible.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !carrying(&token).contains(&ours_pid) {
            assert!(Instant::now() < deadline, "the carrier never showed up");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(serve(std::io::empty(), Some(&token)), 0);
        let status = ours.wait().expect("wait");
        assert!(!status.success(), "{status}");
        assert!(running(other_pid), "another run's process was ended");
        let _ = other.kill();
        let _ = other.wait();
        assert!(!running(ours_pid));
    }
}
