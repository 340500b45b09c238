//! Hooks: the admin's own code (a script, a python function, an HTTP call) run at seven points
//! of a VM's pipeline: back up before fix, tell the CMDB after convert, page someone on failure.
//!
//! The `hooks` section is parsed and checked with the manifest ([`crate::manifest::hooks`]);
//! planning ([`plan`])
//! turns it into [`HooksPlan`]: script paths resolved, python modules imported once in a child to
//! prove they load, `${NAME}` header references read from the environment, and the template
//! variables that do not change during the run filled in. The pipeline then calls
//! [`run_stage`] at each hook stage; every hook's outcome (attempts, status, output tails, error)
//! is a return value that goes into the report. Scripts and python run through [`crate::exec`]
//! (own process group, timeout kills the group, cancellation); HTTP calls run on a worker thread
//! so a cancelled run does not wait for a slow server. A failing hook fails the VM at that point,
//! unless it has `continue_on_error: true`, which turns the failure into a report warning.

pub mod http;
pub mod python;
pub mod script;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::diag::Problem;
use crate::exec::{CancelToken, ExecError, Status};
pub use crate::stage::HookStage;
use crate::stage::Stage;
use crate::tools::Tool;

use crate::manifest::hooks::redact;
use crate::manifest::hooks::template::{Context, Var};
use crate::manifest::hooks::{Action, HookSet, HookType, RetryPolicy};

/// Which pipeline stages will run, as planned.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnabledStages {
    pub fix: bool,
    pub convert: bool,
    pub validate: bool,
}

impl EnabledStages {
    fn fires(self, stage: HookStage) -> bool {
        match stage.pipeline_stage() {
            Stage::Fix => self.fix,
            Stage::Convert => self.convert,
            Stage::Validate => self.validate,
            Stage::Load | Stage::Inspect | Stage::Domain | Stage::Libvirt => true,
        }
    }
}

/// What planning knows about the VM that templates may use.
#[derive(Clone, Debug)]
pub struct VmFacts<'a> {
    pub manifest_path: &'a Path,
    pub manifest_dir: &'a Path,
    pub vm_name: &'a str,
    pub vm_id: &'a str,
    pub batch_id: Option<&'a str>,
    /// The boot disk's source, as the manifest names it.
    pub boot_source: Option<&'a Path>,
    /// Where convert writes the boot disk (none when convert is off).
    pub boot_output: Option<&'a Path>,
    /// The file fix repairs the boot disk in: its overlay when converting, the source when
    /// repairing in place (none when fix is off).
    pub boot_fixed: Option<&'a Path>,
    pub output_directory: &'a Path,
    pub output_format: &'a str,
    pub stages: EnabledStages,
}

/// Every hook of a VM, ready to run.
#[derive(Clone, Debug, Default)]
pub struct HooksPlan {
    /// In stage order, then in the order the manifest lists them.
    pub hooks: Vec<PlannedHook>,
    /// The variables that do not change during the run (all but stage and the timestamps).
    pub context: Context,
}

#[derive(Clone, Debug)]
pub struct PlannedHook {
    pub stage: HookStage,
    pub index: usize,
    pub action: PlannedAction,
    /// Per attempt.
    pub timeout: Duration,
    pub continue_on_error: bool,
    pub retry: RetryPolicy,
    /// Whether its pipeline stage is enabled, i.e. whether it will fire at all.
    pub fires: bool,
}

#[derive(Clone, Debug)]
pub enum PlannedAction {
    Script(script::ScriptPlan),
    Python(python::PythonPlan),
    Http(http::HttpPlan),
}

impl PlannedHook {
    /// `pre_convert[0]`: how messages and the report refer to the hook.
    pub fn id(&self) -> String {
        format!("{}[{}]", self.stage.name(), self.index)
    }

    pub fn type_name(&self) -> &'static str {
        let kind = match self.action {
            PlannedAction::Script(_) => HookType::Script,
            PlannedAction::Python(_) => HookType::Python,
            PlannedAction::Http(_) => HookType::Http,
        };
        kind.name()
    }

    /// What the hook runs: the script, `module.function`, or `METHOD url` (as written, with its
    /// credentials and query values redacted).
    pub fn target(&self) -> String {
        match &self.action {
            PlannedAction::Script(s) => s.program.display().to_string(),
            PlannedAction::Python(p) => format!("{}.{}", p.module, p.function),
            PlannedAction::Http(h) => {
                format!("{} {}", h.method.name(), redact::url(h.url.source()))
            }
        }
    }
}

impl HooksPlan {
    pub fn has(&self, stage: HookStage) -> bool {
        self.hooks.iter().any(|h| h.stage == stage && h.fires)
    }

    /// One line per hook, for `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        self.hooks
            .iter()
            .map(|h| {
                let what = match &h.action {
                    PlannedAction::Script(s) => {
                        let mut argv = vec![s.program.display().to_string()];
                        argv.extend(s.args.iter().map(|a| a.source().to_owned()));
                        let mut what = format!("script {}", crate::exec::quote_argv(&argv));
                        // Names only: an env value may be a password.
                        if !s.env.is_empty() {
                            let names: Vec<&str> = s.env.iter().map(|(n, _)| n.as_str()).collect();
                            what.push_str(&format!(" (env: {})", names.join(", ")));
                        }
                        what
                    }
                    PlannedAction::Python(p) => {
                        format!("python {}.{}(**args)", p.module, p.function)
                    }
                    PlannedAction::Http(x) => {
                        let names: Vec<&str> = x.headers.iter().map(|(n, _)| n.as_str()).collect();
                        let url = redact::url(x.url.source());
                        if names.is_empty() {
                            format!("http {} {url}", x.method.name())
                        } else {
                            format!(
                                "http {} {url} (headers: {})",
                                x.method.name(),
                                names.join(", ")
                            )
                        }
                    }
                };
                let mut line = format!(
                    "hook {}: {what}, timeout {}s",
                    h.id(),
                    h.timeout.as_secs_f64()
                );
                if h.retry.max_retries > 0 {
                    line.push_str(&format!(", up to {} retries", h.retry.max_retries));
                }
                if h.continue_on_error {
                    line.push_str(", continue on error");
                }
                if !h.fires {
                    line.push_str(" (will not run: its pipeline stage is not enabled)");
                }
                line
            })
            .collect()
    }
}

/// Plans every hook of `set`. Problems go to `problems` with their field paths; hooks whose
/// pipeline stage is disabled are still checked, and a note says they will not run. Fails only
/// when python hooks exist and python3 does not.
pub fn plan(
    set: &HookSet,
    vm: &VmFacts<'_>,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<String>,
) -> Result<HooksPlan, ExecError> {
    let mut out = HooksPlan {
        hooks: Vec::new(),
        context: static_context(vm),
    };
    let has_python = set
        .stages
        .values()
        .flatten()
        .any(|h| matches!(h.action, Action::Python(_)));
    // Resolved once for the whole VM, so every python hook runs the same interpreter.
    let python3 = if has_python {
        Some(Tool::Python3.locate())
    } else {
        None
    };
    let mut tool_error = None;
    let mut local = crate::diag::Problems::default();
    for (stage, hooks) in &set.stages {
        let fires = vm.stages.fires(*stage);
        if !fires && !hooks.is_empty() {
            notes.push(format!(
                "hooks.{}: {} hook{} will not run because pipeline.{} is not enabled",
                stage.name(),
                hooks.len(),
                if hooks.len() == 1 { "" } else { "s" },
                stage.pipeline_stage().name()
            ));
        }
        for (index, hook) in hooks.iter().enumerate() {
            let path = format!("hooks.{}[{index}]", stage.name());
            let timeout =
                Duration::try_from_secs_f64(hook.timeout).unwrap_or(Duration::from_secs(300));
            let action = match &hook.action {
                Action::Script(s) => {
                    script::plan(s, vm.manifest_dir, &path, &mut local).map(PlannedAction::Script)
                }
                Action::Python(p) => match &python3 {
                    Some(Ok(py)) => {
                        python::plan(p, py, vm.manifest_dir, timeout, &path, &mut local)
                            .map(PlannedAction::Python)
                    }
                    Some(Err(_)) | None => {
                        tool_error = Some(ExecError::ToolMissing {
                            program: Tool::Python3.program(),
                            package: Tool::Python3.package(),
                        });
                        None
                    }
                },
                Action::Http(h) => http::plan(h, &path, &mut local).map(PlannedAction::Http),
            };
            if let Some(action) = action {
                out.hooks.push(PlannedHook {
                    stage: *stage,
                    index,
                    action,
                    timeout,
                    continue_on_error: hook.continue_on_error,
                    retry: hook.retry.clone(),
                    fires,
                });
            }
        }
    }
    problems.extend(local.0);
    match tool_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn static_context(vm: &VmFacts<'_>) -> Context {
    let text = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let file_name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut c = Context::default();
    c.set(Var::VmName, vm.vm_name);
    c.set(Var::VmId, vm.vm_id);
    c.set(Var::BatchId, vm.batch_id.unwrap_or_default());
    c.set(Var::ManifestPath, vm.manifest_path.display().to_string());
    c.set(Var::SourcePath, text(vm.boot_source));
    c.set(Var::SourceDir, text(vm.boot_source.and_then(Path::parent)));
    c.set(Var::SourceFilename, file_name(vm.boot_source));
    c.set(Var::FixedPath, text(vm.boot_fixed));
    c.set(Var::OutputPath, text(vm.boot_output));
    c.set(Var::OutputDir, text(vm.boot_output.and_then(Path::parent)));
    c.set(Var::OutputFilename, file_name(vm.boot_output));
    c.set(
        Var::OutputDirectory,
        vm.output_directory.display().to_string(),
    );
    c.set(Var::OutputFormat, vm.output_format);
    c.set(Var::User, current_user());
    // The real host name: upstream reads $HOSTNAME, which shells rarely export.
    c.set(
        Var::Hostname,
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned()),
    );
    c.set(
        Var::Pwd,
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
    );
    c
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The variables of one firing: the plan's plus the stage and the time.
fn fire_context(base: &Context, stage: HookStage) -> Context {
    let mut c = base.clone();
    c.set(Var::Stage, stage.name());
    c.set(Var::Timestamp, crate::clock::now_unix().to_string());
    c.set(Var::TimestampIso, crate::clock::now_utc_seconds());
    c
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// Failed in a way another attempt may fix (non-zero exit, non-2xx answer, an exception).
    Failed,
    TimedOut,
    Cancelled,
    /// Cannot succeed by trying again (the program cannot start, a value is not a valid header).
    Broken,
}

/// One attempt at running a hook.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub verdict: Verdict,
    pub error: Option<String>,
    pub argv: Option<Vec<String>>,
    pub exit_status: Option<Status>,
    pub request: Option<http::RequestRecord>,
    pub http_status: Option<u16>,
    pub output: Option<String>,
    pub stdout_tail: Option<String>,
    pub stderr_tail: Option<String>,
    /// Bytes printed before the tails, which were not kept.
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
    pub body_tail: Option<String>,
}

impl Attempt {
    pub fn new(verdict: Verdict) -> Self {
        Self {
            verdict,
            error: None,
            argv: None,
            exit_status: None,
            request: None,
            http_status: None,
            output: None,
            stdout_tail: None,
            stderr_tail: None,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            body_tail: None,
        }
    }

    pub fn failed(verdict: Verdict, error: impl Into<String>) -> Self {
        let mut a = Self::new(verdict);
        a.error = Some(error.into());
        a
    }
}

/// How much of a hook's output the report keeps.
pub const OUTPUT_TAIL_BYTES: usize = 4 * 1024;

/// How many of `total` bytes of output did not make it into the kept `tail`.
pub(crate) fn dropped(total: u64, tail: &str) -> u64 {
    total.saturating_sub(tail.len() as u64)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The last `keep` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, keep: usize) -> String {
    if text.len() <= keep {
        return text.to_owned();
    }
    let mut start = text.len() - keep;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// What one hook did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct HookOutcome {
    pub stage: HookStage,
    pub index: usize,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub target: String,
    pub success: bool,
    pub continue_on_error: bool,
    pub attempts: u32,
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<http::RequestRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_tail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// What the hook printed before `stdout_tail` and `stderr_tail`, in bytes: only the tails are
    /// kept, whatever a hook prints.
    #[serde(skip_serializing_if = "is_zero")]
    pub stdout_dropped_bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub stderr_dropped_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_tail: Option<String>,
    pub error: Option<String>,
    /// Stopped by cancellation (Ctrl-C, SIGTERM), not by its own failure.
    #[serde(skip)]
    pub interrupted: bool,
}

/// Why a hook stage stopped the VM.
#[derive(Clone, Debug)]
pub struct HookFailure {
    pub message: String,
    pub interrupted: bool,
}

/// What the hooks of one stage did.
#[derive(Clone, Debug, Default)]
pub struct StageHooks {
    pub outcomes: Vec<HookOutcome>,
    /// Failures of `continue_on_error` hooks.
    pub warnings: Vec<String>,
    /// Set when a hook failed without `continue_on_error`, or the run was cancelled.
    pub failure: Option<HookFailure>,
}

/// Runs the hooks of `stage` in order; the first failing hook without `continue_on_error`
/// stops the stage (later hooks of the stage do not run).
pub fn run_stage(plan: &HooksPlan, stage: HookStage, cancel: &CancelToken) -> StageHooks {
    let mut out = StageHooks::default();
    for hook in plan.hooks.iter().filter(|h| h.stage == stage && h.fires) {
        if cancel.is_cancelled() {
            out.failure = Some(HookFailure {
                message: format!("interrupted before hook {} ran", hook.id()),
                interrupted: true,
            });
            break;
        }
        let outcome = run_hook(hook, &plan.context, cancel);
        let (failed, cancelled) = (!outcome.success, outcome.interrupted);
        let message = format!(
            "hook {} ({} {}) failed after {} attempt{}: {}",
            hook.id(),
            outcome.kind,
            outcome.target,
            outcome.attempts,
            if outcome.attempts == 1 { "" } else { "s" },
            outcome.error.as_deref().unwrap_or("unknown error")
        );
        out.outcomes.push(outcome);
        if !failed {
            continue;
        }
        if cancelled {
            out.failure = Some(HookFailure {
                message,
                interrupted: true,
            });
            break;
        }
        if hook.continue_on_error {
            out.warnings.push(format!(
                "{message}; continuing because continue_on_error is true"
            ));
        } else {
            out.failure = Some(HookFailure {
                message,
                interrupted: false,
            });
            break;
        }
    }
    out
}

fn run_hook(hook: &PlannedHook, base: &Context, cancel: &CancelToken) -> HookOutcome {
    let started = Instant::now();
    let mut attempts = 0u32;
    let last = loop {
        attempts += 1;
        let ctx = fire_context(base, hook.stage);
        tracing::info!(hook = %hook.id(), target = %hook.target(), attempt = attempts, "running hook");
        let mut attempt = match &hook.action {
            PlannedAction::Script(s) => script::attempt(s, hook.timeout, &ctx, cancel),
            PlannedAction::Python(p) => python::attempt(p, hook.timeout, &ctx, cancel),
            PlannedAction::Http(h) => http::attempt(h, hook.timeout, &ctx, cancel),
        };
        let retryable = match attempt.verdict {
            Verdict::Succeeded | Verdict::Cancelled | Verdict::Broken => false,
            Verdict::Failed => true,
            Verdict::TimedOut => hook.retry.retry_on_timeout,
        };
        if attempt.verdict == Verdict::Succeeded {
            tracing::info!(hook = %hook.id(), attempt = attempts, "hook succeeded");
        } else {
            // Info, not warn: the outcome reaches the user once, as the VM's error or warning.
            tracing::info!(
                hook = %hook.id(),
                attempt = attempts,
                error = attempt.error.as_deref().unwrap_or(""),
                "hook failed"
            );
        }
        if !retryable || attempts > hook.retry.max_retries {
            break attempt;
        }
        let delay = hook.retry.delay_before_retry(attempts);
        tracing::info!(hook = %hook.id(), seconds = delay.as_secs_f64(), "retrying hook");
        if !sleep_unless_cancelled(delay, cancel) {
            attempt.verdict = Verdict::Cancelled;
            let error = attempt.error.take().unwrap_or_default();
            attempt.error = Some(format!("{error}; interrupted while waiting to retry"));
            break attempt;
        }
    };
    HookOutcome {
        stage: hook.stage,
        index: hook.index,
        kind: hook.type_name(),
        target: hook.target(),
        success: last.verdict == Verdict::Succeeded,
        continue_on_error: hook.continue_on_error,
        attempts,
        duration_seconds: crate::units::seconds_since(started),
        argv: last.argv,
        exit_status: last.exit_status,
        request: last.request,
        http_status: last.http_status,
        output: last.output,
        stdout_tail: last.stdout_tail,
        stderr_tail: last.stderr_tail,
        stdout_dropped_bytes: last.stdout_dropped_bytes,
        stderr_dropped_bytes: last.stderr_dropped_bytes,
        body_tail: last.body_tail,
        error: last.error,
        interrupted: last.verdict == Verdict::Cancelled,
    }
}

/// Sleeps `d` in short steps; false when cancelled meanwhile.
fn sleep_unless_cancelled(d: Duration, cancel: &CancelToken) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(25)));
    }
}

/// A path written in the manifest, resolved against its directory.
pub(crate) fn resolve(dir: &Path, written: &str) -> PathBuf {
    crate::config::resolve_relative(dir, written)
}
