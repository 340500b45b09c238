use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
