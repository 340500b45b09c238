//! Decides at build time which tests cannot run here, so that they are reported as ignored
//! (SKIP in nextest, `ignored, <reason>` in cargo test) instead of returning early and counting
//! as passed. libtest has no way to skip a test once it runs, so the decision has to be a `cfg`:
//!
//! - `missing_tool = "<program>"` for each program in [`TOOLS`] that is not on PATH,
//! - `missing_ovmf` when no OVMF firmware is installed,
//! - `not_root` when the build does not run as root,
//! - `missing_jsonschema` when `python3` cannot import Python's jsonschema module (the
//!   validator of the schemas in `schemas/`),
//! - `skip_slow_tests` when `HYPER2KVM_SKIP_SLOW=1` (`make test-fast`).
//!
//! A test that needs any of them carries `#[cfg_attr(<flag>, ignore = "needs ...")]`, and keeps
//! its runtime `support::require_*` check. Under `CI=true` (or `1`) nothing is declared missing
//! and root is assumed, so no test is ignored for its environment and those runtime checks fail
//! the test instead: CI must have installed everything (`.ci/run`).
//!
//! Noticing changes. Cargo reruns this script when PATH, CI or HYPER2KVM_SKIP_SLOW change, and
//! when USER or SUDO_UID do (the effective uid is not in the environment; those two follow it
//! through `su` and `sudo`). A program installed or removed later, with PATH unchanged, is
//! noticed through `rerun-if-changed` on every existing absolute PATH directory: for a directory
//! cargo compares the newest mtime of the directory itself and everything under it, and adding
//! or removing an entry updates the directory's own mtime even when the package manager gives
//! the new file an old one. The obvious alternative, `rerun-if-changed` on the expected path of each missing
//! program, does not work: cargo treats a path that does not exist as changed, so it would rerun
//! this script and then recompile the whole crate on every build while anything is missing.
//! For the same reason nothing that may not exist is watched: OVMF is watched through its
//! directory when that exists and through dpkg's status file otherwise (Debian is the supported
//! host and OVMF comes only as the `ovmf` package). The cost of watching PATH directories is a
//! stat of each of their entries per build, and a recompile of this crate (not of its
//! dependencies) after anything is installed into one of them. A PATH directory created after
//! the last build is not noticed until PATH changes or build.rs does.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every external program a test checks for with `require_tool` (tests/integration) or
/// `which::which` (unit tests in src). A name used in a `missing_tool` cfg but not listed here
/// is an `unexpected_cfgs` warning, so the two cannot drift apart silently.
const TOOLS: &[&str] = &[
    "qemu-img",
    "qemu-io",
    "python3",
    "guestfish",
    "qemu-system-x86_64",
    "cryptsetup",
    "debootstrap",
    "sfdisk",
    "mkfs.ext4",
    "blkid",
    "debugfs",
    "losetup",
    "setsid",
    "bash",
    "make",
    "virsh",
    "libvirtd",
    "virtlogd",
    "chromium",
    "ansible-playbook",
    "kubernetes-validate",
];

/// Where Debian's `ovmf` package puts the firmware; the boot test looks for either file.
const OVMF_DIR: &str = "/usr/share/OVMF";
const OVMF_CODE: &[&str] = &["OVMF_CODE_4M.fd", "OVMF_CODE.fd"];
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

fn main() {
    git_commit();
    for var in ["PATH", "CI", "HYPER2KVM_SKIP_SLOW", "USER", "SUDO_UID"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");

    let values: Vec<String> = TOOLS.iter().map(|t| format!("\"{t}\"")).collect();
    println!(
        "cargo::rustc-check-cfg=cfg(missing_tool, values({}))",
        values.join(", ")
    );
    println!("cargo::rustc-check-cfg=cfg(missing_ovmf)");
    println!("cargo::rustc-check-cfg=cfg(not_root)");
    println!("cargo::rustc-check-cfg=cfg(missing_jsonschema)");
    println!("cargo::rustc-check-cfg=cfg(skip_slow_tests)");

    if env::var("HYPER2KVM_SKIP_SLOW").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_slow_tests");
    }
    // The same test as support::require_tool's: under CI a missing dependency is a failure.
    if env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        return;
    }

    let mut path_dirs: Vec<PathBuf> = Vec::new();
    for dir in env::split_paths(&env::var_os("PATH").unwrap_or_default()) {
        // A relative entry would be looked up from wherever each test happens to run.
        if dir.is_absolute() && !path_dirs.contains(&dir) {
            path_dirs.push(dir);
        }
    }
    for dir in path_dirs.iter().filter(|d| d.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    for tool in TOOLS {
        if !path_dirs.iter().any(|d| is_executable(&d.join(tool))) {
            println!("cargo::rustc-cfg=missing_tool=\"{tool}\"");
        }
    }

    let ovmf = Path::new(OVMF_DIR);
    if ovmf.is_dir() {
        println!("cargo::rerun-if-changed={OVMF_DIR}");
    } else if Path::new(DPKG_STATUS).is_file() {
        println!("cargo::rerun-if-changed={DPKG_STATUS}");
    }
    if !OVMF_CODE.iter().any(|f| ovmf.join(f).is_file()) {
        println!("cargo::rustc-cfg=missing_ovmf");
    }

    if !running_as_root() {
        println!("cargo::rustc-cfg=not_root");
    }

    if !python_has_jsonschema() {
        println!("cargo::rustc-cfg=missing_jsonschema");
    }
}

/// Whether `python3` on PATH imports jsonschema. Python packages are installed outside PATH, so
/// what is watched is where the module was found (its removal), or, while it is missing, each
/// site-packages or dist-packages directory python3 searches (its installation); a python3
/// installed into PATH later is noticed through the PATH directories.
fn python_has_jsonschema() -> bool {
    let python = |code: &str| -> Option<String> {
        #[expect(
            clippy::disallowed_types,
            reason = "a build script cannot use the crate's runner; python3 exits at once"
        )]
        let out = std::process::Command::new("python3")
            .args(["-c", code])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    match python("import os, jsonschema; print(os.path.dirname(jsonschema.__file__))") {
        Some(dir) => {
            println!("cargo::rerun-if-changed={}", dir.trim());
            true
        }
        None => {
            let dirs = python(
                "import os, sys\nfor p in sys.path:\n    if os.path.basename(p) in ('site-packages', \
                 'dist-packages') and os.path.isdir(p): print(p)",
            )
            .unwrap_or_default();
            for dir in dirs.lines() {
                println!("cargo::rerun-if-changed={dir}");
            }
            false
        }
    }
}

/// Sets `HYPER2KVM_GIT_COMMIT` for `--version`: the commit checked out, or `unknown` when this
/// is not a git checkout of its own (a source tarball, even one unpacked inside another
/// repository) or git is not installed. Never fails the build. The files that change with each
/// commit or checkout (HEAD, the branch's ref, packed-refs) are watched when they exist, so
/// the commit shown is the one built, at the cost of recompiling this crate after a commit.
fn git_commit() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = |args: &[&str]| -> Option<String> {
        #[expect(
            clippy::disallowed_types,
            reason = "a build script cannot use the crate's runner; git exits at once"
        )]
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&manifest_dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let own_checkout = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).canonicalize().ok() == manifest_dir.canonicalize().ok());
    let commit = own_checkout
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=HYPER2KVM_GIT_COMMIT={commit}");
    if !own_checkout {
        return;
    }
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo::rerun-if-changed={path}");
        }
    }
}

/// What `which` accepts: a file (or a link to one) with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[expect(
    unsafe_code,
    reason = "libc has no safe geteuid; nix or rustix as build dependencies for one call would cost more"
)]
fn running_as_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
