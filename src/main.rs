use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The reaper is this binary too (see `hyper2kvm::reaper`); it takes no other argument.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(hyper2kvm::reaper::ARG)) {
        return ExitCode::from(hyper2kvm::reaper::serve(std::io::stdin()));
    }
    let cli = hyper2kvm::cli::Cli::parse();
    match hyper2kvm::app::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            #[expect(
                clippy::print_stderr,
                reason = "the binary's one place for fatal errors"
            )]
            {
                eprintln!("error: {}", hyper2kvm::app::render_error(&err));
            }
            ExitCode::from(err.exit_code())
        }
    }
}
