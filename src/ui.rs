//! Progress display. Workers send [`Event`]s; one display thread owns the terminal.
//!
//! On a terminal the display is an indicatif multi-bar (an overall bar for batches, one bar per
//! running VM with its stage and byte progress); elsewhere (cron, CI, a pipe) it is one plain
//! line per event so logs stay readable. Which one is used is decided by [`resolve_mode`], a pure
//! function of the requested mode and whether stderr is a terminal.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, EventSink, VmStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    /// Progress bars (overall and per VM) on stderr.
    Bars,
    /// One plain line per event on stderr (logs, cron, CI).
    Lines,
    /// No progress output.
    None,
}

/// The display actually used for a requested mode.
///
/// | requested | stderr is a terminal | result |
/// |-----------|----------------------|--------|
/// | auto      | yes                  | bars   |
/// | auto      | no                   | lines  |
/// | bars      | yes                  | bars   |
/// | bars      | no                   | lines (bars draw nothing off a terminal, so warnings, failures and the summary would be lost) |
/// | other     | either               | as requested |
pub fn resolve_mode(requested: ProgressMode, stderr_is_terminal: bool) -> ProgressMode {
    match (requested, stderr_is_terminal) {
        (ProgressMode::Auto | ProgressMode::Bars, true) => ProgressMode::Bars,
        (ProgressMode::Auto | ProgressMode::Bars, false) => ProgressMode::Lines,
        (other, _) => other,
    }
}

/// The running display; [`Display::finish`] waits until every event has been shown.
pub struct Display {
    sink: EventSink,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    /// Starts the display thread. `total_vms` sizes the overall bar (shown when more than one).
    pub fn start(requested: ProgressMode, total_vms: usize) -> Self {
        let mode = resolve_mode(requested, std::io::stderr().is_terminal());
        if mode == ProgressMode::None {
            return Self {
                sink: EventSink::discard(),
                thread: None,
            };
        }
        let (sink, rx) = EventSink::channel();
        let thread = std::thread::spawn(move || match mode {
            ProgressMode::Bars => bars(rx, total_vms),
            _ => lines(rx),
        });
        Self {
            sink,
            thread: Some(thread),
        }
    }

    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    pub fn finish(mut self) {
        self.sink = EventSink::discard();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status_word(status: VmStatus) -> &'static str {
    match status {
        VmStatus::Succeeded => "succeeded",
        VmStatus::Failed => "FAILED",
        VmStatus::Interrupted => "interrupted",
    }
}

/// One line per event, progress in 10 % steps.
fn lines(rx: Receiver<Event>) {
    let mut last_step: HashMap<(String, String), u64> = HashMap::new();
    let mut err = std::io::stderr();
    for event in rx {
        let line = match event {
            Event::VmStarted { vm } => format!("[{vm}] started"),
            Event::StepStarted { vm, step } => format!("[{vm}] {step}: started"),
            Event::StepFinished { vm, step, success } => {
                format!("[{vm}] {step}: {}", if success { "done" } else { "failed" })
            }
            Event::Progress {
                vm,
                disk,
                activity,
                done,
                total,
            } => {
                let step = (done * 10).checked_div(total).unwrap_or(0);
                let activity = activity.name();
                let key = (vm.clone(), format!("{activity} {disk}"));
                if step == 0 || last_step.get(&key) == Some(&step) {
                    continue;
                }
                last_step.insert(key, step);
                format!("[{vm}] {activity} {disk}: {}%", step * 10)
            }
            Event::Warning { vm, message } => format!("[{vm}] warning: {message}"),
            Event::GuestChanges { vm, changes } => {
                format!("[{vm}] fix: {changes} change(s) in the guest")
            }
            Event::VmFinished { vm, status } => {
                last_step.retain(|(v, _), _| *v != vm);
                format!("[{vm}] {}", status_word(status))
            }
        };
        let _ = writeln!(err, "{line}");
    }
}

fn bars(rx: Receiver<Event>, total_vms: usize) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let overall = (total_vms > 1).then(|| {
        let bar = multi.add(ProgressBar::new(total_vms as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} VMs  eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix("batch");
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let vm_style = ProgressStyle::with_template(
        "{prefix:>12} {msg:<18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .expect("static template")
    .progress_chars("=> ");
    let mut running: HashMap<String, ProgressBar> = HashMap::new();
    for event in rx {
        match event {
            Event::VmStarted { vm } => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(vm_style.clone());
                bar.set_prefix(vm.clone());
                running.insert(vm, bar);
            }
            Event::StepStarted { vm, step } => {
                if let Some(bar) = running.get(&vm) {
                    bar.set_message(step.label());
                    bar.set_position(0);
                    bar.set_length(0);
                }
            }
            Event::StepFinished { .. } | Event::GuestChanges { .. } => {}
            Event::Progress {
                vm, done, total, ..
            } => {
                if let Some(bar) = running.get(&vm) {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            }
            Event::Warning { vm, message } => {
                let _ = multi.println(format!("[{vm}] warning: {message}"));
            }
            Event::VmFinished { vm, status } => {
                if let Some(bar) = running.remove(&vm) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                if status != VmStatus::Succeeded || overall.is_none() {
                    let _ = multi.println(format!("[{vm}] {}", status_word(status)));
                }
                if let Some(o) = &overall {
                    o.inc(1);
                }
            }
        }
    }
    if let Some(o) = overall {
        o.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_terminal() {
        assert_eq!(resolve_mode(ProgressMode::Auto, true), ProgressMode::Bars);
        assert_eq!(resolve_mode(ProgressMode::Auto, false), ProgressMode::Lines);
        assert_eq!(resolve_mode(ProgressMode::Bars, true), ProgressMode::Bars);
        assert_eq!(resolve_mode(ProgressMode::Bars, false), ProgressMode::Lines);
        assert_eq!(resolve_mode(ProgressMode::None, true), ProgressMode::None);
    }
}
