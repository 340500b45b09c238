//! Script hooks: an executable file run directly (never through a shell) with templated
//! arguments, environment and working directory.
//!
//! Each rendered argument is one argv element, so a VM named `a; rm -rf /` reaches the script as
//! that one argument and nothing else. The file is checked when the manifest is loaded (present,
//! a regular file, executable, and as root not writable by others: see
//! [`crate::manifest::hooks::trust`]) and
//! runs through [`crate::exec`] in its own process group, so a timeout or Ctrl-C takes down
//! everything it started, and whatever it leaves running when it exits is killed. Only the tails
//! of its stdout and stderr are kept; the report counts the bytes dropped before them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Attempt, OUTPUT_TAIL_BYTES, Verdict, tail};
use crate::diag::Problems;
use crate::exec::{self, CancelToken, Status, Watch};
use crate::manifest::hooks::ScriptSpec;
use crate::manifest::hooks::template::{Context, Template};
use crate::manifest::hooks::trust::check_script;

#[derive(Clone, Debug)]
pub struct ScriptPlan {
    /// The script with symlinks resolved: the file that was checked is the file that runs.
    pub program: PathBuf,
    pub args: Vec<Template>,
    pub env: Vec<(String, Template)>,
    pub working_directory: Option<Template>,
    /// The manifest's directory, for a relative working directory.
    pub base_dir: PathBuf,
}

pub fn plan(
    spec: &ScriptSpec,
    dir: &Path,
    path: &str,
    problems: &mut Problems,
) -> Option<ScriptPlan> {
    let written = super::resolve(dir, &spec.path);
    // Loading checked the file; it may have changed since, and this is the last look before a run.
    if let Err(message) = check_script(&written) {
        problems.push(&format!("{path}.path"), message);
        return None;
    }
    let program = match std::fs::canonicalize(&written) {
        Ok(p) => p,
        Err(e) => {
            problems.push(
                &format!("{path}.path"),
                format!("cannot resolve script {}: {e}", written.display()),
            );
            return None;
        }
    };
    Some(ScriptPlan {
        program,
        args: spec.args.clone(),
        env: spec.env.clone(),
        working_directory: spec.working_directory.clone(),
        base_dir: dir.to_owned(),
    })
}

/// One run of the script.
pub fn attempt(
    plan: &ScriptPlan,
    timeout: Duration,
    ctx: &Context,
    cancel: &CancelToken,
) -> Attempt {
    let mut cmd = exec::Command::new(&plan.program)
        .args(plan.args.iter().map(|a| a.render(ctx)))
        .timeout(timeout)
        .stdout_tail(OUTPUT_TAIL_BYTES)
        .kill_leftovers();
    for (name, value) in &plan.env {
        cmd = cmd.env(name, value.render(ctx));
    }
    if let Some(wd) = &plan.working_directory {
        let dir = super::resolve(&plan.base_dir, &wd.render(ctx));
        if !dir.is_dir() {
            let mut a = Attempt::failed(
                Verdict::Broken,
                format!("working directory {} does not exist", dir.display()),
            );
            a.argv = Some(cmd.argv());
            return a;
        }
        cmd = cmd.current_dir(dir);
    }
    let out = match exec::run(
        &cmd,
        Watch {
            cancel: Some(cancel),
            ..Watch::default()
        },
    ) {
        Ok(out) => out,
        Err(e) => {
            let mut a = Attempt::failed(Verdict::Broken, crate::diag::error_chain(&e));
            a.argv = Some(cmd.argv());
            return a;
        }
    };
    let record = out.record;
    let (verdict, error) = match &record.status {
        Status::Exited(0) => (Verdict::Succeeded, None),
        Status::Exited(_) | Status::Signaled(_) => (
            Verdict::Failed,
            Some(ended_with(&record.status, &record.stderr_tail)),
        ),
        Status::TimedOut => (
            Verdict::TimedOut,
            Some(format!(
                "timed out after {}s; its process group was killed",
                timeout.as_secs_f64()
            )),
        ),
        Status::Cancelled => (
            Verdict::Cancelled,
            Some("cancelled; its process group was killed".to_owned()),
        ),
    };
    let mut a = Attempt::new(verdict);
    a.error = error;
    a.argv = Some(record.argv);
    a.exit_status = Some(record.status);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = tail(&record.stderr_tail, OUTPUT_TAIL_BYTES);
    a.stdout_dropped_bytes = super::dropped(out.stdout_bytes, &stdout);
    a.stderr_dropped_bytes = super::dropped(out.stderr_bytes, &stderr);
    a.stdout_tail = Some(stdout);
    a.stderr_tail = Some(stderr);
    a
}

/// `exit status 3: <last stderr line>`
fn ended_with(status: &Status, stderr: &str) -> String {
    match stderr.trim().lines().last() {
        Some(line) if !line.trim().is_empty() => format!("{status}: {}", line.trim()),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn runs_with_templated_args_env_and_cwd() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("work")).expect("mkdir");
        let s = script(
            d.path(),
            "s.sh",
            "#!/bin/sh\nprintf '%s|' \"$#\" \"$1\" \"$H2K_STAGE\" \"$(basename \"$PWD\")\"\n",
            0o755,
        );
        let plan = ScriptPlan {
            program: s,
            args: vec![
                Template::parse(
                    "{{ vm_name }}",
                    crate::manifest::hooks::template::Syntax::Vars,
                )
                .expect("t"),
            ],
            env: vec![(
                "H2K_STAGE".to_owned(),
                Template::parse(
                    "{{ stage }}",
                    crate::manifest::hooks::template::Syntax::Vars,
                )
                .expect("t"),
            )],
            working_directory: Some(Template::literal("work")),
            base_dir: d.path().to_owned(),
        };
        let mut ctx = Context::default();
        ctx.set(crate::manifest::hooks::template::Var::VmName, "a b; $(x)");
        ctx.set(crate::manifest::hooks::template::Var::Stage, "pre_convert");
        let a = attempt(&plan, Duration::from_secs(10), &ctx, &CancelToken::new());
        assert_eq!(a.verdict, Verdict::Succeeded, "{a:?}");
        assert_eq!(
            a.stdout_tail.as_deref(),
            Some("1|a b; $(x)|pre_convert|work|")
        );
    }

    #[test]
    fn failure_carries_status_and_stderr() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = script(
            d.path(),
            "f.sh",
            "#!/bin/sh\necho nope >&2\nexit 3\n",
            0o755,
        );
        let plan = ScriptPlan {
            program: s,
            args: vec![],
            env: vec![],
            working_directory: None,
            base_dir: d.path().to_owned(),
        };
        let a = attempt(
            &plan,
            Duration::from_secs(10),
            &Context::default(),
            &CancelToken::new(),
        );
        assert_eq!(a.verdict, Verdict::Failed);
        assert_eq!(a.error.as_deref(), Some("exit status 3: nope"));
        assert_eq!(a.exit_status, Some(Status::Exited(3)));
    }
}
