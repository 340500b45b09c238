//! `hyper2kvm-assets <DIR>`: writes the man page and the bash, zsh and fish completions of
//! hyper2kvm into DIR, generated from the command-line definitions (src/cli.rs), so they cannot
//! drift from `--help`. `make install` runs it and installs what it writes (README, Install):
//!
//! - `hyper2kvm.1` (share/man/man1),
//! - `hyper2kvm.bash` (share/bash-completion/completions/hyper2kvm),
//! - `_hyper2kvm` (share/zsh/site-functions),
//! - `hyper2kvm.fish` (share/fish/vendor_completions.d).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir] = args.as_slice() else {
        return fail("usage: hyper2kvm-assets <DIR>  (writes the man page and completions)");
    };
    match write_all(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("hyper2kvm-assets: {e}")),
    }
}

fn write_all(dir: &Path) -> Result<(), String> {
    let cmd = hyper2kvm::cli::Cli::command();
    write(&dir.join("hyper2kvm.1"), &man_page(&cmd)?)?;
    for (shell, name) in [
        (Shell::Bash, "hyper2kvm.bash"),
        (Shell::Zsh, "_hyper2kvm"),
        (Shell::Fish, "hyper2kvm.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "hyper2kvm", &mut text);
        write(&dir.join(name), &text)?;
    }
    Ok(())
}

/// clap_mangen's sections, except that the text after the options (`after_help`: examples,
/// then exit codes) becomes EXAMPLES, kept line by line, and EXIT STATUS; SEE ALSO follows.
fn man_page(cmd: &clap::Command) -> Result<Vec<u8>, String> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let err = |e: std::io::Error| format!("could not render the man page: {e}");
    man.render_title(&mut out).map_err(err)?;
    man.render_name_section(&mut out).map_err(err)?;
    man.render_synopsis_section(&mut out).map_err(err)?;
    man.render_description_section(&mut out).map_err(err)?;
    man.render_options_section(&mut out).map_err(err)?;
    let after = cmd
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    let (examples, rest) = after.split_once("\n\n").unwrap_or((&after, ""));
    match (
        examples.strip_prefix("Examples:\n"),
        rest.strip_prefix("Exit codes: "),
    ) {
        (Some(examples), Some(codes)) => {
            let mut text = String::from(".SH EXAMPLES\n.nf\n");
            for line in examples.lines() {
                text.push_str(&roff_text(line.trim()));
                text.push('\n');
            }
            text.push_str(".fi\n.SH \"EXIT STATUS\"\n");
            text.push_str(&roff_text(&codes.replace('\n', " ")));
            text.push('\n');
            out.extend_from_slice(text.as_bytes());
        }
        // Another shape of text: clap_mangen's own section for it.
        _ => man.render_extra_section(&mut out).map_err(err)?,
    }
    man.render_version_section(&mut out).map_err(err)?;
    out.extend_from_slice(
        b".SH \"SEE ALSO\"\n.BR qemu-img (1),\n.BR guestfish (1),\n.BR qemu-system-x86_64 (1),\n.BR virsh (1)\n",
    );
    Ok(out)
}

/// A line of text as roff reads it literally: backslashes escaped, hyphens kept as hyphens
/// (so examples copy and paste), and no line taken for a request.
fn roff_text(line: &str) -> String {
    let text = line.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    hyper2kvm::atomic::write(path, bytes).map_err(|e| hyper2kvm::diag::error_chain(&e))
}

fn fail(message: &str) -> ExitCode {
    #[expect(clippy::print_stderr, reason = "the program's one message")]
    {
        eprintln!("{message}");
    }
    ExitCode::from(2)
}
