//! Whether a hook's file may run: a script must exist, be a regular file and be executable,
//! and, when we run as root, no hook code may be changeable by another user.
//!
//! These are load-time checks (the manifest is refused before any disk is touched), and the
//! runner repeats them when planning, the last look before the file runs.
//!
//! A root process that runs a file which others can write runs whatever they put there. So, as
//! root, a hook's script or python module is refused when the file, or any directory above it,
//! is writable by group or others; a directory with the sticky bit (like /tmp) is fine, because
//! there nobody can replace another user's file. Symlinks are followed first, so the check is
//! made on the file that would really run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Whether this process runs as root (the case where the check applies).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Checks `file` (a `what`: "script", "python module") and its directories; `as_root` says
/// whether the check applies.
pub fn check(file: &Path, what: &str, as_root: bool) -> Result<(), String> {
    if !as_root {
        return Ok(());
    }
    let real = std::fs::canonicalize(file)
        .map_err(|e| format!("cannot resolve {what} {}: {e}", file.display()))?;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .map_err(|e| format!("cannot read the permissions of {}: {e}", p.display()))
    };
    let file_mode = mode(&real)?;
    if file_mode & GROUP_OR_OTHER_WRITE != 0 {
        return Err(format!(
            "refusing to run {what} {} as root: it is writable by group or others (mode {:04o}), \
             so another user could change what runs; fix with: chmod go-w {}",
            real.display(),
            file_mode & 0o7777,
            real.display()
        ));
    }
    for dir in real.ancestors().skip(1) {
        let dir_mode = mode(dir)?;
        if dir_mode & GROUP_OR_OTHER_WRITE != 0 && dir_mode & STICKY == 0 {
            return Err(format!(
                "refusing to run {what} {} as root: directory {} is writable by group or others \
                 without the sticky bit (mode {:04o}), so another user could replace the {what}; \
                 fix with: chmod go-w {}",
                real.display(),
                dir.display(),
                dir_mode & 0o7777,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Load-time checks of a script file; the message says what is wrong and how to fix it.
pub fn check_script(path: &Path) -> Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("script not found: {}", path.display()));
        }
        Err(e) => return Err(format!("cannot read script {}: {e}", path.display())),
    };
    if !meta.is_file() {
        return Err(format!("script {} is not a regular file", path.display()));
    }
    let executable = meta.permissions().mode() & 0o111 != 0
        && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok();
    if !executable {
        return Err(format!(
            "script {} is not executable (hooks run the file directly, never through a shell); \
             fix with: chmod +x {}",
            path.display(),
            path.display()
        ));
    }
    check(path, "script", running_as_root())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, Permissions::from_mode(mode)).expect("chmod");
    }

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o755);
        let file = dir.path().join("hook.sh");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        chmod(&file, 0o755);
        (dir, file)
    }

    #[test]
    fn missing_non_regular_and_non_executable_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = d.path().join("nope.sh");
        assert_eq!(
            check_script(&missing).unwrap_err(),
            format!("script not found: {}", missing.display())
        );
        assert!(
            check_script(d.path())
                .unwrap_err()
                .contains("is not a regular file")
        );
        let plain = d.path().join("plain.sh");
        std::fs::write(&plain, "#!/bin/sh\n").expect("write");
        chmod(&plain, 0o644);
        assert!(check_script(&plain).unwrap_err().contains("chmod +x"));
    }

    #[test]
    fn private_file_in_private_dir_passes() {
        let (_d, file) = setup();
        check(&file, "script", true).expect("trusted");
    }

    #[test]
    fn writable_file_is_refused() {
        let (_d, file) = setup();
        chmod(&file, 0o775);
        let err = check(&file, "script", true).unwrap_err();
        assert!(
            err.contains("writable by group or others (mode 0775)"),
            "{err}"
        );
        assert!(check(&file, "script", false).is_ok(), "only as root");
    }

    #[test]
    fn writable_directory_is_refused_unless_sticky() {
        let (d, file) = setup();
        chmod(d.path(), 0o777);
        let err = check(&file, "script", true).unwrap_err();
        assert!(err.contains("without the sticky bit (mode 0777)"), "{err}");
        chmod(d.path(), 0o1777);
        check(&file, "script", true).expect("sticky directory is fine");
    }

    #[test]
    fn symlinks_are_judged_by_their_target() {
        let (d, file) = setup();
        let open = d.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        let target = open.join("real.sh");
        std::fs::write(&target, "#!/bin/sh\n").expect("write");
        chmod(&target, 0o755);
        chmod(&open, 0o777);
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink(&target, &file).expect("symlink");
        let err = check(&file, "script", true).unwrap_err();
        assert!(err.contains(&open.display().to_string()), "{err}");
    }
}
