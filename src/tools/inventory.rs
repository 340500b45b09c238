//! Which of the programs hyper2kvm drives are on `PATH` here, and their versions: what
//! `hyper2kvm --version` lists. Nothing is probed: whether KVM can run a guest takes booting
//! one (see [`super::qemu_system::probe`]), which a run does and `--version` does not.

use std::path::PathBuf;
use std::time::Duration;

use super::Tool;
use crate::exec::{self, Command, Watch};

/// Every tool, with what needs it, in the order `--version` lists them.
pub const NEEDED_FOR: &[(Tool, &str)] = &[
    (Tool::QemuImg, "every run"),
    (Tool::Guestfish, "inspect, fix"),
    (Tool::QemuSystem, "KVM probe, boot test"),
    (Tool::Python3, "python hooks"),
    (Tool::Virsh, "libvirt_integration"),
];

/// A version query that hangs (a broken install) does not hold `--version` up for long.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// One tool as found here.
#[derive(Debug)]
pub struct Found {
    pub tool: Tool,
    /// Where it is on `PATH`, if it is.
    pub path: Option<PathBuf>,
    /// The first line `<program> --version` printed, when it ran and printed one.
    pub version: Option<String>,
}

/// Looks every tool up on `PATH` and asks the ones found for their version.
pub fn survey() -> Vec<Found> {
    NEEDED_FOR
        .iter()
        .map(|&(tool, _)| {
            let path = tool.locate().ok();
            let version = path.as_ref().and_then(|p| version_of(p.clone()));
            Found {
                tool,
                path,
                version,
            }
        })
        .collect()
}

fn version_of(program: PathBuf) -> Option<String> {
    let cmd = Command::new(program)
        .arg("--version")
        .timeout(VERSION_TIMEOUT)
        .kill_leftovers();
    let out = exec::run(&cmd, Watch::default()).ok()?;
    if !out.record.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(100).collect())
}

/// The lines `--version` prints after the version and commit: a table of the tools (name, what
/// needs it, where it is and its version), then the KVM line.
pub fn render(found: &[Found]) -> String {
    let program_width = NEEDED_FOR
        .iter()
        .map(|(t, _)| t.program().len())
        .max()
        .unwrap_or(0);
    let needed_width = NEEDED_FOR.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    let mut s = String::from("tools (looked up on PATH now):\n");
    for f in found {
        let needed_for = NEEDED_FOR
            .iter()
            .find(|(t, _)| *t == f.tool)
            .map_or("", |(_, n)| n);
        let what = match (&f.path, &f.version) {
            (Some(p), Some(v)) => format!("{}, {v}", p.display()),
            (Some(p), None) => format!("{}, version unknown", p.display()),
            (None, _) => format!("not found (Debian package {})", f.tool.package()),
        };
        s.push_str(&format!(
            "  {:program_width$}  {needed_for:needed_width$}  {what}\n",
            f.tool.program()
        ));
    }
    s.push_str("kvm: not probed (a run that needs it boots a probe guest to find out)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_their_package() {
        let found = vec![
            Found {
                tool: Tool::QemuImg,
                path: Some(PathBuf::from("/usr/bin/qemu-img")),
                version: Some("qemu-img version 10.0.2".to_owned()),
            },
            Found {
                tool: Tool::Virsh,
                path: None,
                version: None,
            },
        ];
        assert_eq!(
            render(&found),
            "tools (looked up on PATH now):\n\
             \x20 qemu-img            every run             /usr/bin/qemu-img, qemu-img version 10.0.2\n\
             \x20 virsh               libvirt_integration   not found (Debian package libvirt-clients)\n\
             kvm: not probed (a run that needs it boots a probe guest to find out)\n"
        );
    }
}
