use std::process::ExitCode;

fn main() -> ExitCode {
    // The reaper is this binary too (see `hyper2kvm::reaper`); its one other argument is the token.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(hyper2kvm::reaper::ARG)) {
        let token = args.next().and_then(|t| t.into_string().ok());
        return ExitCode::from(hyper2kvm::reaper::serve(std::io::stdin(), token.as_deref()));
    }
    let cli = hyper2kvm::cli::parse();
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
