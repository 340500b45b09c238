//! virsh: the commands hyper2kvm sends a libvirt host, and how to read their answers.
//!
//! Why virsh and not the `virt` crate (libvirt's official Rust bindings) is written down in
//! docs/architecture.md: in short, the binary stays free of a link-time dependency on
//! libvirt's C library (a conversion host without libvirt still runs every other mode), every
//! call is an `exec::Command` with a `CommandRecord` in the report, bounded by a timeout and
//! ended by the reaper like any other child, and virsh's own error text is the message an admin
//! already knows.
//!
//! Every command is `virsh --connect URI --quiet …`. Nothing here runs a command: it builds
//! them, and reads what they printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::Command;

/// A libvirt call that does not answer within this is a hung daemon, not a slow one.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// virsh on one connection.
#[derive(Clone, Debug)]
pub struct Virsh {
    pub path: PathBuf,
    pub uri: String,
}

impl Virsh {
    pub fn new(path: PathBuf, uri: impl Into<String>) -> Self {
        Self {
            path,
            uri: uri.into(),
        }
    }

    /// `virsh --connect URI --quiet <args>`.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(&self.path)
            .args(["--connect", self.uri.as_str(), "--quiet"])
            .args(args)
            // virsh prints messages in the locale's language; ours quote them.
            .env("LC_ALL", "C")
            .timeout(TIMEOUT)
    }

    pub fn define(&self, xml: &Path) -> Command {
        self.command(["define".as_ref(), xml.as_os_str()])
    }

    /// The domain's UUID, by name (stdout: the UUID).
    pub fn domuuid(&self, name: &str) -> Command {
        self.command(["domuuid", name])
    }

    /// The domain's name, by UUID (stdout: the name).
    pub fn domname(&self, uuid: &str) -> Command {
        self.command(["domname", uuid])
    }

    /// The persistent definition, as libvirt keeps it.
    pub fn dumpxml_inactive(&self, domain: &str) -> Command {
        self.command(["dumpxml", "--inactive", "--security-info", domain])
    }

    /// `running`, `shut off`, …
    pub fn domstate(&self, domain: &str) -> Command {
        self.command(["domstate", domain])
    }

    /// Removes the definition with its UEFI variables and snapshot metadata; disks stay.
    pub fn undefine(&self, domain: &str) -> Command {
        self.command([
            "undefine",
            "--nvram",
            "--snapshots-metadata",
            "--managed-save",
            domain,
        ])
    }

    pub fn start(&self, domain: &str) -> Command {
        self.command(["start", domain])
    }

    /// Pulls the plug (used only on a domain this run started).
    pub fn destroy(&self, domain: &str) -> Command {
        self.command(["destroy", domain])
    }

    pub fn autostart(&self, domain: &str, on: bool) -> Command {
        if on {
            self.command(["autostart", domain])
        } else {
            self.command(["autostart", "--disable", domain])
        }
    }

    pub fn snapshot_create(&self, domain: &str, name: &str, description: &str) -> Command {
        self.command([
            "snapshot-create-as",
            "--domain",
            domain,
            "--name",
            name,
            "--description",
            description,
            "--atomic",
        ])
    }

    /// The pseudo-terminal of the domain's serial console (stdout: `/dev/pts/N`).
    pub fn ttyconsole(&self, domain: &str) -> Command {
        self.command(["ttyconsole", domain])
    }

    /// The pool's definition (its type and target directory).
    pub fn pool_dumpxml(&self, pool: &str) -> Command {
        self.command(["pool-dumpxml", pool])
    }

    /// `pool-info`: its state (`running`, `inactive`).
    pub fn pool_info(&self, pool: &str) -> Command {
        self.command(["pool-info", pool])
    }

    pub fn pool_define_dir(&self, pool: &str, dir: &Path) -> Command {
        self.command([
            "pool-define-as".as_ref(),
            "--name".as_ref(),
            pool.as_ref(),
            "--type".as_ref(),
            "dir".as_ref(),
            "--target".as_ref(),
            dir.as_os_str(),
        ])
    }

    /// Creates the pool's directory (a no-op when it exists).
    pub fn pool_build(&self, pool: &str) -> Command {
        self.command(["pool-build", pool])
    }

    pub fn pool_start(&self, pool: &str) -> Command {
        self.command(["pool-start", pool])
    }

    pub fn pool_autostart(&self, pool: &str) -> Command {
        self.command(["pool-autostart", pool])
    }

    pub fn pool_refresh(&self, pool: &str) -> Command {
        self.command(["pool-refresh", pool])
    }

    pub fn pool_destroy(&self, pool: &str) -> Command {
        self.command(["pool-destroy", pool])
    }

    pub fn pool_undefine(&self, pool: &str) -> Command {
        self.command(["pool-undefine", pool])
    }

    /// The path of a volume libvirt knows (stdout: the path).
    pub fn vol_path(&self, pool: &str, volume: &str) -> Command {
        self.command(["vol-path", "--pool", pool, volume])
    }
}

/// Whether virsh's error says the object does not exist (as opposed to a connection or
/// permission problem, which must stop the run).
pub fn is_not_found(stderr: &str) -> bool {
    [
        "failed to get domain",
        "Domain not found",
        "failed to get pool",
        "Storage pool not found",
        "failed to get vol",
        "Storage volume not found",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

/// Whether a connection URI names this host: no host part (`qemu:///system`,
/// `qemu+unix:///session`, `test:///default`).
pub fn is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/'),
        None => false,
    }
}

/// virsh's answer with the `error: ` prefixes taken off, one line.
pub fn error_text(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("error:").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first non-empty line of stdout.
pub fn first_line(stdout: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_have_no_host() {
        assert!(is_local("qemu:///system"));
        assert!(is_local("qemu+unix:///session"));
        assert!(is_local("test:///default"));
        assert!(!is_local("qemu+ssh://root@kvm01/system"));
        assert!(!is_local("qemu+tls://kvm01.example.com/system"));
        assert!(!is_local("default"));
    }

    #[test]
    fn not_found_is_told_from_other_errors() {
        // What virsh 9.0 prints.
        assert!(is_not_found(
            "error: failed to get domain 'web01'\nerror: Domain not found: no domain with matching name 'web01'\n"
        ));
        assert!(is_not_found(
            "error: failed to get pool 'migrated'\nerror: Storage pool not found: no storage pool with matching name 'migrated'\n"
        ));
        assert!(!is_not_found(
            "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n"
        ));
        assert_eq!(
            error_text("error: failed to get domain 'x'\nerror: Domain not found\n"),
            "failed to get domain 'x'; Domain not found"
        );
    }

    #[test]
    fn commands_name_the_connection() {
        let v = Virsh::new(PathBuf::from("/usr/bin/virsh"), "qemu:///system");
        assert_eq!(
            v.undefine("web01").argv(),
            [
                "/usr/bin/virsh",
                "--connect",
                "qemu:///system",
                "--quiet",
                "undefine",
                "--nvram",
                "--snapshots-metadata",
                "--managed-save",
                "web01"
            ]
        );
    }
}
