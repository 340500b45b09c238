//! Python hooks: `module.function(**args)` called in a child `python3`, so a timeout or Ctrl-C
//! can kill it (upstream runs it in-process, where a hung hook cannot be stopped).
//!
//! The child runs a fixed program ([`RUNNER`]); the module, function and rendered arguments reach
//! it as JSON on stdin, never spliced into code. Modules are searched in the manifest's directory,
//! then PYTHONPATH, then the interpreter's own paths; never in the current directory. Everything
//! the hook prints goes to stderr, so stdout carries only the runner's one-line JSON answer, read
//! as soon as its line arrives: a child the function left behind (killed with the process group
//! once python3 exits, unless it called `setsid`) cannot hold the answer back.
//! Planning runs the same program twice per hook: once to locate the module without executing it
//! (so, as root, its file can be checked like a script's), then once to import it and check that
//! the function exists and accepts the hook's argument names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Attempt, OUTPUT_TAIL_BYTES, Verdict, tail};
use crate::diag::Problems;
use crate::exec::{self, CancelToken, Status, Watch};
use crate::manifest::hooks::PythonSpec;
use crate::manifest::hooks::template::{Context, JsonTemplate};
use crate::manifest::hooks::trust;

#[derive(Clone, Debug)]
pub struct PythonPlan {
    pub python3: PathBuf,
    pub module: String,
    pub function: String,
    /// Searched first for the module: the manifest's directory.
    pub module_dir: PathBuf,
    pub args: JsonTemplate,
}

/// Planning probes get at most this long (or the hook's own timeout, when shorter, but never
/// less than `PROBE_FLOOR`: starting python3 alone can take seconds on a loaded host, and a
/// hook's timeout bounds its call, not the interpreter's start).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_FLOOR: Duration = Duration::from_secs(15);

/// The program the child python3 runs. Modes: `locate` finds the module's file without running
/// it; `check` imports it and binds the argument names to the function's signature; `call`
/// calls the function and interprets its result as upstream does.
pub const RUNNER: &str = r#"
import sys
# Never import from the current directory: only the manifest's directory and PYTHONPATH.
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import importlib, importlib.machinery, importlib.util, inspect, json, os, traceback
req = json.load(sys.stdin)
sys.path.insert(0, req["module_dir"])
answer = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
def reply(**kw):
    json.dump(kw, answer, default=str)
    # The newline lets hyper2kvm read the answer before the pipe closes: a child the hook left
    # behind may hold it open.
    answer.write("\n")
    answer.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
def tail(text, keep=4000):
    return text[-keep:]
def summary(exc):
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    if isinstance(exc, SyntaxError) and exc.filename:
        return "%s (%s, line %s)" % (last, exc.filename, exc.lineno)
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        return "%s (%s, line %s)" % (last, frames[-1].filename, frames[-1].lineno)
    return last
name, mode = req["module"], req["mode"]
if mode == "locate":
    spec, search = None, None
    parts = name.split(".")
    for i in range(len(parts)):
        full = ".".join(parts[: i + 1])
        try:
            if search is None:
                spec = importlib.util.find_spec(full)
            else:
                spec = importlib.machinery.PathFinder.find_spec(full, search)
        except Exception as e:
            reply(ok=False, error=summary(e))
        if spec is None:
            reply(ok=False, error="no module named %r" % full)
        search = spec.submodule_search_locations
        if i + 1 < len(parts) and search is None:
            reply(ok=False, error="%r is not a package" % full)
    reply(ok=True, origin=spec.origin if spec.has_location else None)
try:
    module = importlib.import_module(name)
except BaseException as e:
    if mode == "check":
        reply(ok=False, error="module %r does not import: %s" % (name, summary(e)))
    reply(ok=False, error=tail("module %r does not import:\n%s" % (name, traceback.format_exc())))
fn = getattr(module, req["function"], None)
if not callable(fn):
    import difflib
    names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
    close = difflib.get_close_matches(req["function"], names, 1)
    hint = " (did you mean %r?)" % close[0] if close else ""
    reply(ok=False, error="module %r has no function %r%s" % (name, req["function"], hint))
if mode == "check":
    try:
        inspect.signature(fn).bind(**{k: None for k in req["args"]})
    except TypeError as e:
        reply(ok=False, error="%s.%s cannot take the hook's args: %s" % (name, req["function"], e))
    except ValueError:
        pass
    reply(ok=True)
try:
    result = fn(**req["args"])
except BaseException:
    reply(ok=False, error=tail(traceback.format_exc()))
if isinstance(result, bool):
    success, output = result, str(result)
elif isinstance(result, dict):
    success, output = bool(result.get("success", True)), result.get("output", "")
else:
    success, output = True, "" if result is None else str(result)
reply(ok=True, success=success, output=tail("" if output is None else str(output)))
"#;

/// What the runner prints on stdout.
#[derive(Debug, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    output: Option<String>,
}

fn runner(
    python3: &Path,
    request: &Value,
    module: &str,
    function: &str,
    timeout: Duration,
) -> exec::Command {
    // Module and function are also argv words only so `ps` shows which hook is running.
    exec::Command::new(python3)
        .args(["-B", "-c"])
        .arg_shown_as(RUNNER, "<hyper2kvm python hook runner>")
        .args([module, function])
        .stdin_bytes(serde_json::to_vec(request).unwrap_or_default())
        .timeout(timeout)
        .stdout_tail(64 * 1024)
        .kill_leftovers()
}

/// How a run of the runner ended.
enum Reply {
    Answer(Answer),
    /// It ran but gave no answer (crashed, timed out, cancelled): why.
    NoAnswer(String),
    /// python3 could not be started: why.
    NotStarted(String),
}

fn ask(
    cmd: &exec::Command,
    timeout: Duration,
    cancel: Option<&CancelToken>,
) -> (Option<(exec::CommandRecord, u64)>, Reply) {
    // The answer is one line; it is taken as it arrives, so a process that left the hook's
    // process group and still holds stdout open cannot hide it.
    let mut answer_line = String::new();
    let mut on_line = |piece: &str| answer_line = piece.to_owned();
    let out = match exec::run(
        cmd,
        Watch {
            cancel,
            on_stdout_line: Some(&mut on_line),
        },
    ) {
        Ok(out) => out,
        Err(e) => return (None, Reply::NotStarted(crate::diag::error_chain(&e))),
    };
    let answer = serde_json::from_slice::<Answer>(&out.stdout)
        .or_else(|_| serde_json::from_str::<Answer>(&answer_line));
    let reply = match &out.record.status {
        Status::Exited(0) => match answer {
            Ok(a) => Reply::Answer(a),
            Err(_) => Reply::NoAnswer(format!(
                "python3 gave no answer (did the hook close the runner's stdout?): {}",
                tail(out.record.stderr_tail.trim(), 2000)
            )),
        },
        Status::TimedOut => Reply::NoAnswer(format!(
            "timed out after {}s; python3 was killed",
            timeout.as_secs_f64()
        )),
        Status::Cancelled => Reply::NoAnswer("cancelled; python3 was killed".to_owned()),
        other => Reply::NoAnswer(format!(
            "python3 ended with {other}: {}",
            tail(out.record.stderr_tail.trim(), 2000)
        )),
    };
    (Some((out.record, out.stderr_bytes)), reply)
}

pub fn plan(
    spec: &PythonSpec,
    python3: &Path,
    dir: &Path,
    timeout: Duration,
    path: &str,
    problems: &mut Problems,
) -> Option<PythonPlan> {
    let probe_timeout = timeout.max(PROBE_FLOOR).min(PROBE_TIMEOUT);
    let arg_names: Vec<&str> = spec.args.keys();
    let request = |mode: &str| {
        json!({"mode": mode, "module_dir": dir, "module": spec.module,
               "function": spec.function, "args": arg_names})
    };
    let module_path = format!("{path}.module");
    let (_, located) = ask(
        &runner(
            python3,
            &request("locate"),
            &spec.module,
            &spec.function,
            probe_timeout,
        ),
        probe_timeout,
        None,
    );
    match located {
        Reply::NoAnswer(e) | Reply::NotStarted(e) => {
            problems.push(
                &module_path,
                format!("cannot look for python module '{}': {e}", spec.module),
            );
            return None;
        }
        Reply::Answer(a) if !a.ok => {
            problems.push(
                &module_path,
                format!(
                    "python module '{}' not found in {} (the manifest's directory), PYTHONPATH \
                     or python3's installed packages: {}",
                    spec.module,
                    dir.display(),
                    a.error.unwrap_or_default()
                ),
            );
            return None;
        }
        Reply::Answer(a) => {
            if let Some(origin) = a.origin
                && let Err(message) = trust::check(
                    Path::new(&origin),
                    "python module",
                    trust::running_as_root(),
                )
            {
                problems.push(&module_path, message);
                return None;
            }
        }
    }
    let (_, checked) = ask(
        &runner(
            python3,
            &request("check"),
            &spec.module,
            &spec.function,
            probe_timeout,
        ),
        probe_timeout,
        None,
    );
    match checked {
        Reply::NoAnswer(e) | Reply::NotStarted(e) => {
            problems.push(
                &module_path,
                format!("cannot import python module '{}': {e}", spec.module),
            );
            None
        }
        Reply::Answer(a) if !a.ok => {
            let error = a.error.unwrap_or_default();
            let field = if error.contains("does not import") {
                "module"
            } else {
                "function"
            };
            problems.push(&format!("{path}.{field}"), error);
            None
        }
        Reply::Answer(_) => Some(PythonPlan {
            python3: python3.to_owned(),
            module: spec.module.clone(),
            function: spec.function.clone(),
            module_dir: dir.to_owned(),
            args: spec.args.clone(),
        }),
    }
}

/// One call of the function.
pub fn attempt(
    plan: &PythonPlan,
    timeout: Duration,
    ctx: &Context,
    cancel: &CancelToken,
) -> Attempt {
    let request = json!({"mode": "call", "module_dir": plan.module_dir, "module": plan.module,
                         "function": plan.function, "args": plan.args.render(ctx)});
    let cmd = runner(
        &plan.python3,
        &request,
        &plan.module,
        &plan.function,
        timeout,
    );
    let (ran, reply) = ask(&cmd, timeout, Some(cancel));
    let status = ran.as_ref().map(|(r, _)| r.status.clone());
    let mut a = match reply {
        Reply::NotStarted(e) => Attempt::failed(Verdict::Broken, e),
        Reply::NoAnswer(e) => Attempt::failed(
            match status {
                Some(Status::TimedOut) => Verdict::TimedOut,
                Some(Status::Cancelled) => Verdict::Cancelled,
                _ => Verdict::Failed,
            },
            e,
        ),
        Reply::Answer(answer) if !answer.ok => {
            Attempt::failed(Verdict::Failed, answer.error.unwrap_or_default())
        }
        Reply::Answer(answer) => {
            let output = answer.output.unwrap_or_default();
            if answer.success.unwrap_or(true) {
                let mut a = Attempt::new(Verdict::Succeeded);
                a.output = Some(output);
                a
            } else {
                let mut a = Attempt::failed(
                    Verdict::Failed,
                    if output.is_empty() {
                        "the function reported failure".to_owned()
                    } else {
                        format!("the function reported failure: {output}")
                    },
                );
                a.output = Some(output);
                a
            }
        }
    };
    let Some((record, stderr_bytes)) = ran else {
        a.argv = Some(cmd.argv());
        return a;
    };
    a.argv = Some(record.argv);
    a.exit_status = Some(record.status);
    let stderr = tail(&record.stderr_tail, OUTPUT_TAIL_BYTES);
    a.stderr_dropped_bytes = super::dropped(stderr_bytes, &stderr);
    a.stderr_tail = Some(stderr);
    a
}
