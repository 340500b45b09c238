//! The bound on the qemu-img steps that may legitimately run for hours (convert, compare): no
//! wall clock, but a stall window. The step is stopped (its process group killed) when for that
//! long it printed no progress step on stdout and, where it writes a file, the file's size,
//! allocation and modification time stayed the same. A qemu-img stuck on a dead NFS mount, in
//! uninterruptible sleep or resubmitting one read forever prints nothing new and writes nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Run, StageFailure};
use crate::diag::error_chain;
use crate::exec::{self, CancelToken, Status, Watch};

/// How often the watchdog looks, at most; also how late it may pass on a cancellation.
const POLL: Duration = Duration::from_millis(250);

impl Run<'_> {
    /// [`Run::exec`] for a qemu-img step bounded by the stall window (convert, compare);
    /// `output` is the file it writes, if any.
    pub(super) fn exec_progressing(
        &mut self,
        cmd: &exec::Command,
        on_line: Option<&mut dyn FnMut(&str)>,
        output: Option<&Path>,
    ) -> Result<exec::Output, StageFailure> {
        let limits = *self.plan.qemu_img.limits();
        let note = limits.timed_out_note(&cmd.argv());
        let out = run(cmd, self.cancel, on_line, output, limits.stall, &note)
            .map_err(|e| StageFailure::new(error_chain(&e)))?;
        self.commands.push(out.record.clone());
        if out.record.status == Status::Cancelled {
            return Err(StageFailure::interrupted());
        }
        Ok(out)
    }
}

/// Runs `cmd` like [`exec::run`], cancelled by `cancel`, and stopped when it makes no progress
/// for `window`. A run that ends timed out (stalled, or at the command's own time limit) has
/// `note` added to its stderr tail.
pub(super) fn run(
    cmd: &exec::Command,
    cancel: &CancelToken,
    mut on_line: Option<&mut dyn FnMut(&str)>,
    output: Option<&Path>,
    window: Duration,
    note: &str,
) -> Result<exec::Output, exec::ExecError> {
    let local = CancelToken::new();
    let pieces = AtomicU64::new(0);
    let stalled = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut counting = |piece: &str| {
        pieces.fetch_add(1, Ordering::SeqCst);
        if let Some(cb) = on_line.as_mut() {
            cb(piece);
        }
    };
    let (pieces, stalled, local) = (&pieces, &stalled, &local);
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            let poll = POLL.min(window / 4).max(Duration::from_millis(50));
            let progress = || (pieces.load(Ordering::SeqCst), output.and_then(fingerprint));
            let mut mark = (Instant::now(), progress());
            loop {
                match done_rx.recv_timeout(poll) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The command ended (or the sender is gone with it).
                    _ => return,
                }
                if cancel.is_cancelled() {
                    local.cancel();
                    return;
                }
                let now = progress();
                if now != mark.1 {
                    mark = (Instant::now(), now);
                } else if mark.0.elapsed() >= window {
                    stalled.store(true, Ordering::SeqCst);
                    local.cancel();
                    return;
                }
            }
        });
        let out = exec::run(
            cmd,
            Watch {
                cancel: Some(local),
                on_stdout_line: Some(&mut counting),
            },
        );
        let _ = done_tx.send(());
        out
    });
    let mut out = out?;
    if stalled.load(Ordering::SeqCst) && out.record.status == Status::Cancelled {
        out.record.status = Status::TimedOut;
    }
    if out.record.status == Status::TimedOut {
        let tail = &mut out.record.stderr_tail;
        if !tail.is_empty() && !tail.ends_with('\n') {
            tail.push('\n');
        }
        tail.push_str(note);
    }
    Ok(out)
}

/// What changes when a file is written: size, allocated blocks, modification time.
fn fingerprint(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.blocks(), m.mtime(), m.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_command_is_stopped_at_the_window() {
        let cmd = exec::Command::new("/bin/sleep").arg("600");
        let started = Instant::now();
        let out = run(
            &cmd,
            &CancelToken::new(),
            None,
            None,
            Duration::from_millis(500),
            "no progress",
        )
        .expect("runs");
        assert_eq!(out.record.status, Status::TimedOut);
        assert!(out.record.stderr_tail.ends_with("no progress"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn progress_keeps_a_command_alive() {
        // Silent for longer than the window in all, but never for a whole window.
        let cmd = exec::Command::new("/bin/sh").args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do printf '(%d.00/100%%)\\r' $i; sleep 0.4; done",
        ]);
        let out = run(
            &cmd,
            &CancelToken::new(),
            None,
            None,
            Duration::from_millis(2000),
            "no progress",
        )
        .expect("runs");
        assert_eq!(out.record.status, Status::Exited(0));
    }

    #[test]
    fn a_growing_output_is_progress() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("out");
        let script = format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo x >> '{}'; sleep 0.4; done",
            file.display()
        );
        let cmd = exec::Command::new("/bin/sh").args(["-c", &script]);
        let out = run(
            &cmd,
            &CancelToken::new(),
            None,
            Some(&file),
            Duration::from_millis(2000),
            "no progress",
        )
        .expect("runs");
        assert_eq!(out.record.status, Status::Exited(0));
    }
}
