//! Progress display. Workers send [`Event`]s; one display thread owns the output.
//!
//! | mode  | where  | what |
//! |-------|--------|------|
//! | bars  | stderr | a line per running VM: a spinner, the stage's elapsed time and its current sub-step, or a byte bar naming the disk with rate and ETA; a batch line with elapsed, running/done/failed counts, bytes and a byte-based ETA |
//! | lines | stderr | one timestamped line per event (cron, CI, a pipe), byte progress in 10 % steps |
//! | json  | stdout | one JSON object per event (`schemas/events.schema.json`), byte progress in 1 % steps |
//! | none  |        | nothing |
//!
//! Which one is used is decided by [`resolve_mode`], a pure function of the requested mode and
//! whether stderr is a terminal. In every mode a VM that fails says so when it fails: its stage,
//! its first error and where its report is.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::Serialize;

use crate::events::{Activity, Event, EventSink, Failure, VmStatus};
use crate::stage::Step;
use crate::units::human_bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    /// Live status lines (a spinner or a byte bar per VM, and the batch) on stderr.
    Bars,
    /// One timestamped line per event on stderr (logs, cron, CI).
    Lines,
    /// One JSON object per event on stdout (schema: --print-schema events); the summary then
    /// goes to stderr.
    Json,
    /// No progress output.
    None,
}

/// How log lines are written (stderr and `--log-file`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `LEVEL vm{id=web01}:stage{name=fix}: message`.
    #[default]
    Text,
    /// One JSON object per line, with the VM and stage as span fields.
    Json,
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

/// What the whole run will do, for the batch line and the stream's first event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub vms: usize,
    /// Source bytes of every VM that runs.
    pub bytes: u64,
    /// The longest VM id, in characters: the bars' name column is this wide (at least as wide
    /// as "batch", at most [`NAME_WIDTH`]).
    pub widest_id: usize,
}

/// The running display; [`Display::finish`] waits until every event has been shown.
pub struct Display {
    sink: EventSink,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    /// Starts the display thread.
    pub fn start(requested: ProgressMode, totals: Totals) -> Self {
        let mode = resolve_mode(requested, std::io::stderr().is_terminal());
        if mode == ProgressMode::None {
            return Self {
                sink: EventSink::discard(),
                thread: None,
            };
        }
        let (sink, rx) = EventSink::channel();
        let thread = std::thread::spawn(move || match mode {
            ProgressMode::Bars => bars(rx, totals),
            ProgressMode::Json => json(rx, totals, &mut std::io::stdout()),
            _ => lines(
                rx,
                totals,
                &mut std::io::stderr(),
                crate::clock::now_utc_seconds,
            ),
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

/// The live line of a VM that ended: `FAILED in convert: <why> (report: <path>)`, on one line
/// (the first line of the error, cut at 300 characters; the report has all of it).
pub fn finished_line(status: VmStatus, failure: Option<&Failure>, report: Option<&Path>) -> String {
    let mut text = status_word(status).to_owned();
    if let Some(f) = failure {
        let first = f.message.lines().next().unwrap_or_default();
        let message = crate::diag::excerpt_n(first, 300);
        text.push_str(&format!(" in {}: {message}", f.stage));
    }
    if status != VmStatus::Succeeded
        && let Some(r) = report
    {
        text.push_str(&format!(" (report: {})", r.display()));
    }
    text
}

/// `1m42s`, `42s`, `1h05m`.
pub fn compact_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The time left at the rate seen so far: `elapsed × remaining / done`; none before any byte
/// is done, or once all are.
pub fn eta(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 || done >= total {
        return None;
    }
    let secs = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
    Some(Duration::from_secs_f64(secs.min(1e9)))
}

/// Counts and bytes of the whole run, kept by every display.
#[derive(Default)]
struct Tally {
    totals: Totals,
    started: Option<Instant>,
    running: usize,
    succeeded: usize,
    failed: usize,
    interrupted: usize,
    /// Per running VM: each disk's id, source bytes and the fraction converted.
    vms: HashMap<String, Vec<(String, u64, f64)>>,
    /// Bytes of the VMs that ended.
    finished_bytes: u64,
}

impl Tally {
    fn new(totals: Totals) -> Self {
        Self {
            totals,
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn see(&mut self, event: &Event) {
        match event {
            Event::VmStarted { vm, disks } => {
                self.running += 1;
                let disks = disks.iter().map(|(id, b)| (id.clone(), *b, 0.0)).collect();
                self.vms.insert(vm.clone(), disks);
            }
            Event::Progress {
                vm,
                disk,
                activity: Activity::Convert,
                done,
                total,
            } => {
                if let Some(d) = self
                    .vms
                    .get_mut(vm)
                    .and_then(|ds| ds.iter_mut().find(|d| &d.0 == disk))
                {
                    d.2 = (*done as f64 / (*total).max(1) as f64).clamp(0.0, 1.0);
                }
            }
            Event::VmFinished { vm, status, .. } => {
                self.running = self.running.saturating_sub(1);
                match status {
                    VmStatus::Succeeded => self.succeeded += 1,
                    VmStatus::Failed => self.failed += 1,
                    VmStatus::Interrupted => self.interrupted += 1,
                }
                if let Some(disks) = self.vms.remove(vm) {
                    self.finished_bytes += disks.iter().map(|d| d.1).sum::<u64>();
                }
            }
            _ => {}
        }
    }

    fn done_bytes(&self) -> u64 {
        let running: f64 = self
            .vms
            .values()
            .flatten()
            .map(|(_, bytes, fraction)| *bytes as f64 * fraction)
            .sum();
        self.finished_bytes + running as u64
    }

    /// `running 2 · done 5 · failed 1 · of 10  1.2 GiB/40.0 GiB  eta 8m00s`
    fn line(&self) -> String {
        let done = self.succeeded + self.failed + self.interrupted;
        let mut text = format!(
            "running {} · done {done} · failed {} · of {}",
            self.running, self.failed, self.totals.vms
        );
        if self.interrupted > 0 {
            text.push_str(&format!(" · interrupted {}", self.interrupted));
        }
        let bytes = self.done_bytes();
        text.push_str(&format!(
            "  {}/{}",
            human_bytes(bytes),
            human_bytes(self.totals.bytes)
        ));
        if let Some(left) = eta(self.elapsed(), bytes, self.totals.bytes) {
            text.push_str(&format!("  eta {}", compact_duration(left)));
        }
        text
    }

    /// "disk 2/3 web01-data" for a disk of a running VM.
    fn disk_label(&self, vm: &str, disk: &str) -> String {
        let disks = self.vms.get(vm).map(Vec::as_slice).unwrap_or_default();
        match disks.iter().position(|d| d.0 == disk) {
            Some(i) => format!("disk {}/{} {disk}", i + 1, disks.len()),
            None => format!("disk {disk}"),
        }
    }
}

/// One line per event, byte progress in 10 % steps; `now` stamps each line.
fn lines(rx: Receiver<Event>, totals: Totals, out: &mut dyn Write, now: fn() -> String) {
    let mut tally = Tally::new(totals);
    let mut last_step: HashMap<(String, String), u64> = HashMap::new();
    for event in rx {
        let label = match &event {
            Event::Progress { vm, disk, .. } => tally.disk_label(vm, disk),
            _ => String::new(),
        };
        tally.see(&event);
        let line = match event {
            Event::VmStarted { vm, disks } => {
                let bytes: u64 = disks.iter().map(|d| d.1).sum();
                format!(
                    "[{vm}] started: {} disk{}, {}",
                    disks.len(),
                    if disks.len() == 1 { "" } else { "s" },
                    human_bytes(bytes)
                )
            }
            Event::StepStarted { vm, step } => format!("[{vm}] {step}: started"),
            Event::Substep { vm, step, text } => format!("[{vm}] {step}: {text}"),
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
                format!(
                    "[{vm}] {activity} {label}: {}% ({}/{})",
                    step * 10,
                    human_bytes(done),
                    human_bytes(total)
                )
            }
            Event::Warning { vm, message, .. } => format!("[{vm}] warning: {message}"),
            Event::GuestChanges { vm, changes } => {
                format!("[{vm}] fix: {changes} change(s) in the guest")
            }
            Event::VmFinished {
                vm,
                status,
                failure,
                report,
            } => {
                last_step.retain(|(v, _), _| *v != vm);
                let mut line = format!(
                    "[{vm}] {}",
                    finished_line(status, failure.as_ref(), report.as_deref())
                );
                if totals.vms > 1 {
                    line.push_str(&format!("\n{} batch: {}", now(), tally.line()));
                }
                line
            }
        };
        let _ = writeln!(out, "{} {line}", now());
    }
}

/// One event of the `--progress json` stream (`schemas/events.schema.json`).
#[derive(Serialize, Default)]
struct JsonEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    run: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    vm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vms_total: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disks: Option<Vec<JsonDisk<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<JsonCounts>,
}

#[derive(Serialize)]
struct JsonDisk<'a> {
    id: &'a str,
    bytes: u64,
}

#[derive(Serialize)]
struct JsonCounts {
    succeeded: usize,
    failed: usize,
    interrupted: usize,
}

/// A run's id in its event stream: the process and the moment it started.
fn run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}-{millis}", std::process::id())
}

/// One JSON object per line; byte progress in 1 % steps. The first event is `run_started`
/// and the last `run_finished`.
fn json(rx: Receiver<Event>, totals: Totals, out: &mut dyn Write) {
    let run = run_id();
    let mut tally = Tally::new(totals);
    let mut last_pct: HashMap<(String, String, &'static str), u64> = HashMap::new();
    let mut emit = |e: JsonEvent<'_>| {
        if let Ok(text) = serde_json::to_string(&e) {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    };
    let base = |kind| JsonEvent {
        kind,
        time: crate::clock::now_utc_millis(),
        run: &run,
        ..JsonEvent::default()
    };
    emit(JsonEvent {
        vms_total: Some(totals.vms),
        bytes_total: Some(totals.bytes),
        ..base("run_started")
    });
    for event in rx {
        tally.see(&event);
        let e = match &event {
            Event::VmStarted { vm, disks } => JsonEvent {
                vm: Some(vm),
                bytes_total: Some(disks.iter().map(|d| d.1).sum()),
                disks: Some(
                    disks
                        .iter()
                        .map(|(id, bytes)| JsonDisk { id, bytes: *bytes })
                        .collect(),
                ),
                ..base("vm_started")
            },
            Event::StepStarted { vm, step } => JsonEvent {
                vm: Some(vm),
                stage: Some(step.stage_name()),
                step: Some(step.step_name()),
                ..base("step_started")
            },
            Event::Substep { vm, step, text } => JsonEvent {
                vm: Some(vm),
                stage: Some(step.stage_name()),
                step: Some(step.step_name()),
                message: Some(text),
                ..base("substep")
            },
            Event::StepFinished { vm, step, success } => JsonEvent {
                vm: Some(vm),
                stage: Some(step.stage_name()),
                step: Some(step.step_name()),
                status: Some(if *success { "succeeded" } else { "failed" }),
                ..base("step_finished")
            },
            Event::Progress {
                vm,
                disk,
                activity,
                done,
                total,
            } => {
                let pct = (done * 100).checked_div(*total).unwrap_or(0);
                let key = (vm.clone(), disk.clone(), activity.name());
                if last_pct.get(&key) == Some(&pct) {
                    continue;
                }
                last_pct.insert(key, pct);
                JsonEvent {
                    vm: Some(vm),
                    disk: Some(disk),
                    activity: Some(activity.name()),
                    bytes_done: Some(*done),
                    bytes_total: Some(*total),
                    ..base("progress")
                }
            }
            Event::Warning {
                vm,
                origin,
                message,
            } => JsonEvent {
                vm: Some(vm),
                stage: Some(origin),
                code: Some(format!("{origin}_warning")),
                message: Some(message),
                ..base("warning")
            },
            Event::GuestChanges { vm, changes } => JsonEvent {
                vm: Some(vm),
                stage: Some(crate::stage::Stage::Fix.name()),
                changes: Some(*changes),
                ..base("guest_changes")
            },
            Event::VmFinished {
                vm,
                status,
                failure,
                report,
            } => {
                last_pct.retain(|(v, _, _), _| v != vm);
                JsonEvent {
                    vm: Some(vm),
                    status: Some(status.name()),
                    stage: failure.as_ref().map(|f| f.stage.as_str()),
                    code: match (status, failure) {
                        (VmStatus::Succeeded, _) => None,
                        (_, Some(f)) => Some(f.code(*status)),
                        (VmStatus::Interrupted, None) => Some("interrupted".to_owned()),
                        (VmStatus::Failed, None) => Some("plan_failed".to_owned()),
                    },
                    message: failure.as_ref().map(|f| f.message.as_str()),
                    report: report.as_deref(),
                    ..base("vm_finished")
                }
            }
        };
        emit(e);
    }
    emit(JsonEvent {
        bytes_done: Some(tally.done_bytes()),
        bytes_total: Some(totals.bytes),
        vms_total: Some(totals.vms),
        counts: Some(JsonCounts {
            succeeded: tally.succeeded,
            failed: tally.failed,
            interrupted: tally.interrupted,
        }),
        status: Some(if tally.interrupted > 0 {
            "interrupted"
        } else if tally.failed > 0 {
            "failed"
        } else {
            "succeeded"
        }),
        ..base("run_finished")
    });
}

/// The most VM names get on the bars; longer ones are cut with an ellipsis.
pub const NAME_WIDTH: usize = 14;

fn name_column(vm: &str, width: usize) -> String {
    let width = width.clamp("batch".len(), NAME_WIDTH);
    format!("{:<width$}", truncate(vm, width))
}

/// `text` cut to `width` characters, the last one an ellipsis when cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The terminal's width in columns (80 when stderr is no terminal), asked again at each
/// update so that a resized window is followed.
fn term_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(80, |(_, cols)| usize::from(cols))
}

/// The room a byte bar leaves for its label (`convert disk 2/2 web01-data`): the width less
/// the name column and the widest the other parts get, ` [` + a bar of 3 + `] ` +
/// `999.9 MiB/` + the total + ` 999.9 MiB/s eta 59m59s`.
fn label_room(width: usize, name_width: usize, total: u64) -> usize {
    let fixed = 2 + 3 + 2 + 10 + human_bytes(total).len() + 1 + 11 + 5 + 6;
    width.saturating_sub(name_width + 1 + 1 + fixed).max(8)
}

fn with_compact_elapsed(style: ProgressStyle) -> ProgressStyle {
    style.with_key(
        "elapsed_compact",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&compact_duration(state.elapsed()));
        },
    )
}

fn spinner_style() -> ProgressStyle {
    with_compact_elapsed(
        ProgressStyle::with_template("{prefix} {spinner} {elapsed_compact:>6} {wide_msg}")
            .expect("static template"),
    )
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} {msg} [{wide_bar}] {done}/{total} {rate} eta {eta_compact}",
    )
    .expect("static template")
    .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&human_bytes(s.pos()));
    })
    .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&human_bytes(s.len().unwrap_or(0)));
    })
    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&format!("{}/s", human_bytes(s.per_sec() as u64)));
    })
    .with_key(
        "eta_compact",
        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&compact_duration(s.eta()));
        },
    )
    .progress_chars("=> ")
}

/// Prints `text` above the bars, wrapped by us into lines narrower than the terminal: a line
/// the terminal wraps itself is one line to the bars' bookkeeping but several on the screen,
/// and the bars then redraw (and at the end clear) the wrong rows.
fn print_above(multi: &MultiProgress, text: &str) {
    for line in wrap(text, term_width().saturating_sub(1).max(20)) {
        let _ = multi.println(line);
    }
}

/// `text` in lines of at most `width` characters, broken at the last space that fits (inside
/// a word only when it is longer than a line, so paths stay whole where they can);
/// continuation lines are indented by two.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest: Vec<char> = text.chars().collect();
    let mut indent = "";
    while indent.len() + rest.len() > width {
        let room = width - indent.len();
        let cut = rest[..room]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|&i| i > 0)
            .map_or(room, |i| i + 1);
        let head: String = rest[..cut].iter().collect();
        lines.push(format!("{indent}{}", head.trim_end()));
        rest.drain(..cut);
        indent = "  ";
    }
    lines.push(format!("{indent}{}", rest.iter().collect::<String>()));
    lines
}

/// What one VM's line shows now.
struct VmLine {
    bar: ProgressBar,
    step: Option<Step>,
    bytes: bool,
}

/// While the bars are drawn, the terminal echoes control characters as themselves, not as
/// `^C`: indicatif parks the cursor at the right edge of its last line, so a two-character
/// echo of the Ctrl-C that stops the run would start a row of its own, and the bars, one row
/// off, would leave their top line on the screen when they clear. Restored on drop.
struct QuietControlEcho {
    saved: Option<nix::sys::termios::Termios>,
}

impl QuietControlEcho {
    fn new() -> Self {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stderr = std::io::stderr();
        let Ok(saved) = tcgetattr(&stderr) else {
            return Self { saved: None };
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHOCTL);
        let changed = tcsetattr(&stderr, SetArg::TCSANOW, &quiet).is_ok();
        Self {
            saved: changed.then_some(saved),
        }
    }
}

impl Drop for QuietControlEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stderr(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn bars(rx: Receiver<Event>, totals: Totals) {
    let name_width = totals.widest_id.clamp("batch".len(), NAME_WIDTH);
    let _echo = QuietControlEcho::new();
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut tally = Tally::new(totals);
    let overall = (totals.vms > 1).then(|| {
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(with_compact_elapsed(
            ProgressStyle::with_template("{prefix} {spinner} {elapsed_compact:>6} {wide_msg}")
                .expect("static template"),
        ));
        bar.set_prefix(name_column("batch", name_width));
        bar.set_message(tally.line());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut running: HashMap<String, VmLine> = HashMap::new();
    loop {
        let event = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(o) = &overall {
                    o.set_message(tally.line());
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let label = match &event {
            Event::Progress { vm, disk, .. } => tally.disk_label(vm, disk),
            _ => String::new(),
        };
        tally.see(&event);
        match event {
            Event::VmStarted { vm, .. } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(spinner_style());
                bar.set_prefix(name_column(&vm, name_width));
                bar.set_message("starting");
                bar.enable_steady_tick(Duration::from_millis(120));
                running.insert(
                    vm,
                    VmLine {
                        bar,
                        step: None,
                        bytes: false,
                    },
                );
            }
            Event::StepStarted { vm, step } => {
                if let Some(line) = running.get_mut(&vm) {
                    line.step = Some(step);
                    line.bytes = false;
                    line.bar.set_style(spinner_style());
                    line.bar.reset();
                    line.bar.set_message(step.label());
                }
            }
            Event::Substep { vm, step, text } => {
                if let Some(line) = running.get_mut(&vm)
                    && !line.bytes
                {
                    line.bar.set_message(format!("{step}  {text}"));
                }
            }
            Event::StepFinished { .. } | Event::GuestChanges { .. } => {}
            Event::Progress {
                vm,
                activity,
                done,
                total,
                ..
            } => {
                if let Some(line) = running.get_mut(&vm) {
                    let room = label_room(term_width(), name_width, total);
                    let text = truncate(&format!("{} {label}", activity.name()), room);
                    // Length, position and label first, the style last: the first frame of a
                    // byte bar shows its own disk and sizes, not the spinner's last step.
                    if !line.bytes {
                        line.bar.reset();
                    }
                    line.bar.set_length(total);
                    line.bar.set_position(done);
                    line.bar.set_message(text);
                    if !line.bytes {
                        line.bytes = true;
                        line.bar.set_style(bytes_style());
                    }
                }
            }
            Event::Warning { vm, message, .. } => {
                print_above(&multi, &format!("[{vm}] warning: {message}"));
            }
            Event::VmFinished {
                vm,
                status,
                failure,
                report,
            } => {
                if let Some(line) = running.remove(&vm) {
                    line.bar.finish_and_clear();
                }
                if status != VmStatus::Succeeded || overall.is_none() {
                    let text = finished_line(status, failure.as_ref(), report.as_deref());
                    print_above(&multi, &format!("[{vm}] {text}"));
                }
            }
        }
        if let Some(o) = &overall {
            o.set_message(tally.line());
        }
    }
    // Whatever is still drawn goes (an interrupted run's VMs included), so the screen is left
    // with the printed lines only.
    for (_, line) in running.drain() {
        line.bar.finish_and_clear();
    }
    if let Some(o) = overall {
        o.finish_and_clear();
    }
    let _ = multi.clear();
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
        assert_eq!(resolve_mode(ProgressMode::Json, true), ProgressMode::Json);
        assert_eq!(resolve_mode(ProgressMode::None, true), ProgressMode::None);
    }

    #[test]
    fn lines_above_the_bars_are_wrapped_narrower_than_the_terminal() {
        let text = "[web01] FAILED in convert: qemu-img convert exited with 1 (report: /srv/out/web01/report.json)";
        let lines = wrap(text, 40);
        assert!(lines.iter().all(|l| l.chars().count() <= 40), "{lines:?}");
        assert_eq!(lines[0], "[web01] FAILED in convert: qemu-img");
        assert!(lines[1..].iter().all(|l| l.starts_with("  ")));
        assert_eq!(
            lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "),
            text
        );
        assert_eq!(wrap("short", 40), ["short"]);
        let word = "x".repeat(50);
        assert_eq!(wrap(&word, 20).len(), 3);
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(compact_duration(Duration::from_secs(42)), "42s");
        assert_eq!(compact_duration(Duration::from_secs(102)), "1m42s");
        assert_eq!(compact_duration(Duration::from_secs(3900)), "1h05m");
    }

    #[test]
    fn the_estimate_follows_bytes_not_vms() {
        assert_eq!(eta(Duration::from_secs(10), 0, 100), None);
        assert_eq!(
            eta(Duration::from_secs(10), 25, 100),
            Some(Duration::from_secs(30))
        );
        assert_eq!(eta(Duration::from_secs(10), 100, 100), None);
    }

    fn started(vm: &str, disks: &[(&str, u64)]) -> Event {
        Event::VmStarted {
            vm: vm.to_owned(),
            disks: disks.iter().map(|(d, b)| ((*d).to_owned(), *b)).collect(),
        }
    }

    #[test]
    fn the_batch_line_counts_bytes_of_running_and_ended_vms() {
        let mut t = Tally::new(Totals {
            vms: 3,
            bytes: 4 << 30,
            widest_id: 1,
        });
        t.see(&started("a", &[("a-0", 1 << 30), ("a-1", 1 << 30)]));
        t.see(&started("b", &[("b-0", 2 << 30)]));
        t.see(&Event::Progress {
            vm: "a".into(),
            disk: "a-1".into(),
            activity: Activity::Convert,
            done: 50,
            total: 100,
        });
        assert_eq!(t.done_bytes(), 512 << 20);
        assert_eq!(t.disk_label("a", "a-1"), "disk 2/2 a-1");
        t.see(&Event::VmFinished {
            vm: "b".into(),
            status: VmStatus::Failed,
            failure: None,
            report: None,
        });
        assert_eq!(t.done_bytes(), (2 << 30) + (512 << 20));
        let line = t.line();
        assert!(
            line.starts_with("running 1 · done 1 · failed 1 · of 3  2.5 GiB/4.0 GiB"),
            "{line}"
        );
    }

    #[test]
    fn a_failure_names_its_stage_reason_and_report() {
        let f = Failure {
            stage: "convert".into(),
            message: "disk web01-disk0: conversion failed\nmore".into(),
        };
        assert_eq!(
            finished_line(
                VmStatus::Failed,
                Some(&f),
                Some(Path::new("/out/web01/report.json")),
            ),
            "FAILED in convert: disk web01-disk0: conversion failed (report: \
             /out/web01/report.json)"
        );
        assert_eq!(
            finished_line(VmStatus::Succeeded, None, Some(Path::new("/r"))),
            "succeeded"
        );
    }

    #[test]
    fn lines_are_stamped_and_the_stream_is_json() {
        let (sink, rx) = EventSink::channel();
        sink.send(started("web01", &[("web01-disk0", 1000)]));
        sink.send(Event::Substep {
            vm: "web01".into(),
            step: Step::Stage(crate::stage::Stage::Fix),
            text: "update-initramfs -u".into(),
        });
        sink.send(Event::VmFinished {
            vm: "web01".into(),
            status: VmStatus::Failed,
            failure: Some(Failure {
                stage: "fix".into(),
                message: "no OS".into(),
            }),
            report: None,
        });
        drop(sink);
        let mut out = Vec::new();
        lines(
            rx,
            Totals {
                vms: 1,
                bytes: 1000,
                widest_id: 1,
            },
            &mut out,
            || "T".to_owned(),
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "T [web01] started: 1 disk, 1000 B\nT [web01] fix: update-initramfs -u\n\
             T [web01] FAILED in fix: no OS\n"
        );

        let (sink, rx) = EventSink::channel();
        sink.send(started("web01", &[("web01-disk0", 1000)]));
        drop(sink);
        let mut out = Vec::new();
        json(
            rx,
            Totals {
                vms: 1,
                bytes: 1000,
                widest_id: 1,
            },
            &mut out,
        );
        let kinds: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["type"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(kinds, ["run_started", "vm_started", "run_finished"]);
    }
}
