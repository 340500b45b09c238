//! What every mode sets up before it touches anything: logging, the process reaper and signal
//! handling.

use std::path::Path;

use super::AppError;
use crate::exec::CancelToken;
use crate::exit_code;
use crate::pipeline::RECORD;
use crate::ui::LogFormat;

/// `quiet` (`-q`) leaves only errors on stderr; the log file keeps its level.
pub(super) fn init_logging(
    verbose: u8,
    quiet: bool,
    log_file: Option<&Path>,
    format: LogFormat,
) -> Result<(), AppError> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, fmt};

    let level = match verbose {
        _ if quiet => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // What the run records for the log file (stage starts and ends, warnings, outcomes) the
    // display already shows; stderr gets it only when asked for with -v.
    let record = if verbose == 0 { "off" } else { level };
    let stderr_filter = EnvFilter::new(format!("hyper2kvm={level},{RECORD}={record}"));
    let ansi = stderr_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    );
    let stderr_layer = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .without_time()
            .with_filter(stderr_filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(stderr_filter)
            .boxed(),
    };
    let file_layer = match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AppError::Setup {
                    what: "the log file",
                    source,
                })?;
            let file_level = if verbose < 2 { "info" } else { level };
            let filter = EnvFilter::new(format!("hyper2kvm={file_level}"));
            let writer = std::sync::Mutex::new(file);
            Some(match format {
                LogFormat::Text => fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(filter)
                    .boxed(),
                LogFormat::Json => fmt::layer()
                    .json()
                    .with_writer(writer)
                    .with_target(false)
                    .with_filter(filter)
                    .boxed(),
            })
        }
        None => None,
    };
    // A second initialisation (tests calling `run` twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Ok(())
}

/// Whether log lines on stderr carry colour codes: only on a terminal, and not when `NO_COLOR`
/// is set to anything non-empty (no-color.org) or `TERM` is `dumb`.
fn stderr_colour(
    is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// SIGINT/SIGTERM cancel the run; a second one exits at once.
pub(super) fn install_signal_handlers(cancel: &CancelToken) -> Result<(), AppError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let setup = |source| AppError::Setup {
        what: "signal handlers",
        source,
    };
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal set it.
        flag::register_conditional_shutdown(sig, i32::from(exit_code::INTERRUPTED), cancel.flag())
            .map_err(setup)?;
        flag::register(sig, cancel.flag()).map_err(setup)?;
    }
    Ok(())
}

/// Starts the reaper that ends our process groups when we die (see [`crate::reaper`]), before
/// any mode starts a process. Without one (no `/proc` here) the run goes on, and says so.
pub(super) fn start_reaper() {
    if let Err(e) = crate::exec::start_reaper() {
        tracing::warn!(
            "could not start the process reaper ({e}); if hyper2kvm is killed, the programs it \
             started keep running"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::stderr_colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_that_wants_it() {
        assert!(stderr_colour(true, None, Some(OsStr::new("xterm"))));
        assert!(stderr_colour(true, Some(OsStr::new("")), None));
        assert!(!stderr_colour(false, None, Some(OsStr::new("xterm"))));
        assert!(!stderr_colour(true, Some(OsStr::new("1")), None));
        assert!(!stderr_colour(true, None, Some(OsStr::new("dumb"))));
    }
}
