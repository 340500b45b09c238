//! VMware Tools: what to remove from a guest that no longer runs on VMware, and how.
//!
//! On KVM, vmtoolsd finds no VMware backdoor and only logs errors, and the VMware OSP kernel
//! modules can break the next kernel update. The preferred removal goes through the guest's
//! package manager, run offline inside the guest ([`removal_command`]), so its database stays
//! true; what is left afterwards, or what a tarball install (`vmware-install.pl`) put there
//! without a package, is removed file by file ([`leftovers`]), as the Python tool does.

/// Packages of open-vm-tools (Debian, RHEL, SUSE spellings) and of VMware's own tools (OSP and
/// the `vmware-tools` meta package). Kept literal: removal must never catch a package by
/// pattern that the user wants.
pub const PACKAGES: &[&str] = &[
    "open-vm-tools",
    "open-vm-tools-desktop",
    "open-vm-tools-sdmp",
    "open-vm-tools-devel",
    "open-vm-tools-dev",
    "open-vm-tools-dkms",
    "open-vm-tools-containerinfo",
    "open-vm-tools-salt-minion",
    "open-vm-tools-test",
    "libvmtools0",
    "libvmtools-devel",
    "vmware-tools",
    "vmware-tools-core",
    "vmware-tools-foundation",
    "vmware-tools-services",
    "vmware-tools-esx-nox",
    "vmware-tools-esx",
    "vmware-tools-libraries-nox",
    "vmware-tools-libraries-x",
    "vmware-tools-guestlib",
    "vmware-tools-vgauth",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageManager {
    Dpkg,
    Rpm,
}

/// The guest's package database. dpkg is asked first: a Debian guest may carry the `rpm` tool
/// (and an empty /var/lib/rpm), a RHEL or SUSE guest never has a dpkg status file.
pub fn package_manager(exists: &dyn Fn(&str) -> bool) -> Option<PackageManager> {
    if exists("/var/lib/dpkg/status") {
        return Some(PackageManager::Dpkg);
    }
    // /usr/lib/sysimage/rpm is the database's home on SUSE and Fedora 36+.
    if exists("/var/lib/rpm") || exists("/usr/lib/sysimage/rpm") {
        return Some(PackageManager::Rpm);
    }
    None
}

/// dpkg states whose files are on disk and which `dpkg --purge` removes. `config-files` (only
/// conffiles left) and `not-installed` run nothing.
const DPKG_PRESENT_STATES: &[&str] = &[
    "installed",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
];

/// Which [`PACKAGES`] the text of `/var/lib/dpkg/status` shows as present, in [`PACKAGES`] order.
pub fn installed_dpkg_packages(status: &str) -> Vec<String> {
    let mut found: Vec<&str> = Vec::new();
    for stanza in status.split("\n\n") {
        let mut package = None;
        let mut state = None;
        for line in stanza.lines() {
            if let Some(name) = line.strip_prefix("Package:") {
                package = Some(name.trim());
            } else if let Some(value) = line.strip_prefix("Status:") {
                // `<want> <error flag> <state>`, e.g. `install ok installed`.
                state = value.split_whitespace().nth(2);
            }
        }
        if let (Some(package), Some(state)) = (package, state)
            && DPKG_PRESENT_STATES.contains(&state)
            && PACKAGES.contains(&package)
        {
            found.push(package);
        }
    }
    PACKAGES
        .iter()
        .filter(|p| found.contains(p))
        .map(|p| p.to_string())
        .collect()
}

/// The argv that asks rpm, inside the guest, which [`PACKAGES`] are installed: one name per line
/// on stdout for those that are (it exits non-zero because the others are not).
pub fn rpm_query_command() -> Vec<String> {
    let mut argv: Vec<String> = ["rpm", "-q", "--qf", "%{NAME}\\n"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(PACKAGES.iter().map(|p| p.to_string()));
    argv
}

/// [`rpm_query_command`] as one `sh -c` script that always succeeds (rpm exits non-zero when
/// any listed package is missing, which here is the normal case) and keeps stderr out.
pub fn rpm_query_script() -> String {
    let quoted: Vec<String> = rpm_query_command()
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    format!("{} 2>/dev/null; true", quoted.join(" "))
}

/// Where the guest's rpm binary may live; without it the packages cannot be removed through
/// rpm from outside the guest.
pub const RPM_BINARIES: &[&str] = &["/usr/bin/rpm", "/bin/rpm"];

/// The installed [`PACKAGES`] from the stdout of [`rpm_query_command`]; the "package ... is
/// not installed" lines are ignored.
pub fn installed_rpm_packages(stdout: &str) -> Vec<String> {
    let names: Vec<&str> = stdout.lines().map(str::trim).collect();
    PACKAGES
        .iter()
        .filter(|p| names.contains(p))
        .map(|p| p.to_string())
        .collect()
}

/// The argv that removes `packages` inside the guest, offline: no network, no dependency
/// solver, no running services. `dpkg --purge` (configs go too: /etc/vmware-tools) keeps its
/// dependency check, so a package that something else needs makes it fail rather than break
/// apt; `rpm -e --nodeps` because open-vm-tools-desktop and friends are listed together and
/// rpm's ordering is not ours to fight. Empty when there is nothing to remove.
pub fn removal_command(pm: PackageManager, packages: &[String]) -> Vec<String> {
    if packages.is_empty() {
        return Vec::new();
    }
    let head: &[&str] = match pm {
        PackageManager::Dpkg => &["dpkg", "--purge"],
        PackageManager::Rpm => &["rpm", "-e", "--nodeps"],
    };
    head.iter()
        .map(|s| s.to_string())
        .chain(packages.iter().cloned())
        .collect()
}

/// Files and directories VMware Tools leave behind (Python tool's list, §8.2 step 12, spelled
/// out): configs, libraries, state, binaries, systemd units under every unit directory with
/// their enablement symlinks, SysV scripts, udev rules and autostart entries. Symlinks come
/// before the units they point to, so that a caller that checks and removes one path at a time
/// still sees them.
pub const LEFTOVER_PATHS: &[&str] = &[
    // Enablement and alias symlinks.
    "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
    "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
    "/etc/systemd/system/multi-user.target.wants/vmware-tools.service",
    "/etc/systemd/system/multi-user.target.wants/vgauth.service",
    "/etc/systemd/system/multi-user.target.wants/vgauthd.service",
    "/etc/systemd/system/multi-user.target.wants/vmware-vgauth.service",
    "/etc/systemd/system/multi-user.target.wants/vmware-tools-services.service",
    "/etc/systemd/system/multi-user.target.wants/vmblock-fuse.service",
    "/etc/systemd/system/multi-user.target.wants/vmware-vmblock-fuse.service",
    "/etc/systemd/system/multi-user.target.wants/run-vmblock\\x2dfuse.mount",
    "/etc/systemd/system/open-vm-tools.service.requires/vgauth.service",
    "/etc/systemd/system/vmtoolsd.service.requires/vgauthd.service",
    "/etc/systemd/system/vmtoolsd.service",
    // Unit files installed by hand or by the OSP/tarball installers.
    "/etc/systemd/system/open-vm-tools.service",
    "/etc/systemd/system/vmware-tools.service",
    "/etc/systemd/system/vmware-tools-services.service",
    "/etc/systemd/system/vgauth.service",
    "/etc/systemd/system/vgauthd.service",
    "/etc/systemd/system/vmware-vgauth.service",
    "/etc/systemd/system/vmware-vmblock-fuse.service",
    "/etc/systemd/system/run-vmblock\\x2dfuse.mount",
    // Packaged units: Debian (/lib), RHEL and SUSE (/usr/lib).
    "/lib/systemd/system/open-vm-tools.service",
    "/lib/systemd/system/vgauth.service",
    "/lib/systemd/system/run-vmblock\\x2dfuse.mount",
    "/usr/lib/systemd/system/open-vm-tools.service",
    "/usr/lib/systemd/system/vmtoolsd.service",
    "/usr/lib/systemd/system/vgauth.service",
    "/usr/lib/systemd/system/vgauthd.service",
    "/usr/lib/systemd/system/vmblock-fuse.service",
    "/usr/lib/systemd/system/run-vmblock\\x2dfuse.mount",
    // SysV scripts (their rc?.d links: see `rc_links`).
    "/etc/init.d/open-vm-tools",
    "/etc/init.d/vmware-tools",
    "/etc/init.d/vmware-tools-services",
    "/etc/rc.d/init.d/vmware-tools",
    "/etc/rc.d/init.d/vmware-tools-services",
    // Desktop autostart of the user agent.
    "/etc/xdg/autostart/vmware-user.desktop",
    // udev rule that tunes VMware SCSI disks; it matches nothing on KVM but misleads.
    "/lib/udev/rules.d/99-vmware-scsi-udev.rules",
    "/usr/lib/udev/rules.d/99-vmware-scsi-udev.rules",
    "/etc/udev/rules.d/99-vmware-scsi-udev.rules",
    "/etc/pam.d/vmtoolsd",
    // Configuration, libraries, data, state and logs.
    "/etc/vmware-tools",
    "/etc/vmware",
    "/usr/lib/vmware-tools",
    "/usr/lib64/vmware-tools",
    "/usr/lib/open-vm-tools",
    "/usr/lib64/open-vm-tools",
    "/usr/share/open-vm-tools",
    "/usr/share/vmware-tools",
    "/var/lib/vmware-tools",
    "/var/log/vmware",
    "/var/run/vmware",
    // Programs.
    "/usr/bin/vmtoolsd",
    "/usr/sbin/vmtoolsd",
    "/usr/bin/vmware-toolbox-cmd",
    "/usr/bin/vmware-checkvm",
    "/usr/bin/vmware-hgfsclient",
    "/usr/bin/vmware-namespace-cmd",
    "/usr/bin/vmware-rpctool",
    "/usr/bin/vmware-xferlogs",
    "/usr/bin/vmware-user",
    "/usr/bin/vmware-user-suid-wrapper",
    "/usr/bin/vmware-vmblock-fuse",
    "/usr/bin/vmware-vgauth-cmd",
    "/usr/bin/vmware-vgauth-smoketest",
    "/usr/bin/vmware-alias-import",
    "/usr/bin/vmware-uninstall-tools.pl",
    "/usr/bin/vmware-config-tools.pl",
    "/usr/bin/vmhgfs-fuse",
    "/usr/bin/VGAuthService",
    "/usr/sbin/mount.vmhgfs",
    "/sbin/mount.vmhgfs",
];

/// Which [`LEFTOVER_PATHS`] are present, in that order. `exists` should not follow symlinks
/// (a `.wants` link whose unit is gone is dangling but still to be removed), and should be
/// asked before anything is deleted.
pub fn leftovers(exists: &dyn Fn(&str) -> bool) -> Vec<String> {
    LEFTOVER_PATHS
        .iter()
        .filter(|p| exists(p))
        .map(|p| p.to_string())
        .collect()
}

/// SysV runlevel directories (Debian's and Red Hat's layouts) whose `S..`/`K..` links start
/// the tools' init scripts.
pub const RC_DIRS: &[&str] = &[
    "/etc/rc0.d",
    "/etc/rc1.d",
    "/etc/rc2.d",
    "/etc/rc3.d",
    "/etc/rc4.d",
    "/etc/rc5.d",
    "/etc/rc6.d",
    "/etc/rcS.d",
    "/etc/rc.d/rc0.d",
    "/etc/rc.d/rc1.d",
    "/etc/rc.d/rc2.d",
    "/etc/rc.d/rc3.d",
    "/etc/rc.d/rc4.d",
    "/etc/rc.d/rc5.d",
    "/etc/rc.d/rc6.d",
];

/// Names of the SysV scripts whose runlevel links go.
const SYSV_SCRIPTS: &[&str] = &["open-vm-tools", "vmware-tools", "vmware-tools-services"];

/// The runlevel links among the entries of one of [`RC_DIRS`] (bare names, as a directory
/// listing gives them), as full paths: `S01open-vm-tools`, `K08vmware-tools`. Their numbers
/// vary, so no fixed list can name them.
pub fn rc_links(dir: &str, entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .filter(|name| {
            let Some(rest) = name.strip_prefix('S').or_else(|| name.strip_prefix('K')) else {
                return false;
            };
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            digits > 0 && SYSV_SCRIPTS.contains(&&rest[digits..])
        })
        .map(|name| format!("{}/{name}", dir.trim_end_matches('/')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u3
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: open-vm-tools
Status: install ok installed
Priority: optional
Section: admin
Installed-Size: 2889
Maintainer: Bernd Zeimetz <bzed@debian.org>
Architecture: amd64
Version: 2:12.2.0-1+deb12u1
Depends: libc6 (>= 2.34), libdrm2 (>= 2.4.3)
Conffiles:
 /etc/vmware-tools/tools.conf.example 8f3e0c2d4c1d3b2e
Description: Open VMware Tools for virtual machines hosted on VMware (CLI)

Package: open-vm-tools-desktop
Status: deinstall ok config-files
Architecture: amd64
Version: 2:12.2.0-1+deb12u1

Package: open-vm-tools-dev
Status: hold ok installed
Architecture: amd64

Package: vmware-tools-fake
Status: install ok installed

Package: libvmtools0
Status: install ok half-configured
";

    #[test]
    fn dpkg_status_packages() {
        assert_eq!(
            installed_dpkg_packages(STATUS),
            ["open-vm-tools", "open-vm-tools-dev", "libvmtools0"]
        );
        assert!(installed_dpkg_packages("").is_empty());
    }

    #[test]
    fn package_manager_by_database() {
        let dpkg = |p: &str| p == "/var/lib/dpkg/status" || p == "/var/lib/rpm";
        assert_eq!(package_manager(&dpkg), Some(PackageManager::Dpkg));
        assert_eq!(
            package_manager(&|p: &str| p == "/usr/lib/sysimage/rpm"),
            Some(PackageManager::Rpm)
        );
        assert_eq!(
            package_manager(&|p: &str| p == "/var/lib/rpm"),
            Some(PackageManager::Rpm)
        );
        assert_eq!(package_manager(&|_: &str| false), None);
    }

    #[test]
    fn removal_commands() {
        let pkgs = vec![
            "open-vm-tools".to_string(),
            "open-vm-tools-desktop".to_string(),
        ];
        assert_eq!(
            removal_command(PackageManager::Dpkg, &pkgs),
            ["dpkg", "--purge", "open-vm-tools", "open-vm-tools-desktop"]
        );
        assert_eq!(
            removal_command(PackageManager::Rpm, &pkgs),
            [
                "rpm",
                "-e",
                "--nodeps",
                "open-vm-tools",
                "open-vm-tools-desktop"
            ]
        );
        assert!(removal_command(PackageManager::Rpm, &[]).is_empty());
    }

    #[test]
    fn rpm_query_script_quotes_every_word() {
        let script = rpm_query_script();
        assert!(
            script.starts_with("'rpm' '-q' '--qf' '%{NAME}\\n' 'open-vm-tools'"),
            "{script}"
        );
        assert!(script.ends_with(" 2>/dev/null; true"), "{script}");
    }

    #[test]
    fn rpm_query() {
        let argv = rpm_query_command();
        assert_eq!(&argv[..4], ["rpm", "-q", "--qf", "%{NAME}\\n"]);
        assert_eq!(argv.len(), 4 + PACKAGES.len());
        let stdout = "open-vm-tools\npackage open-vm-tools-desktop is not installed\nlibvmtools0\n";
        assert_eq!(
            installed_rpm_packages(stdout),
            ["open-vm-tools", "libvmtools0"]
        );
    }

    #[test]
    fn leftover_paths_that_exist() {
        let present = [
            "/etc/vmware-tools",
            "/usr/bin/vmtoolsd",
            "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
            "/etc/hostname",
        ];
        let found = leftovers(&|p: &str| present.contains(&p));
        assert_eq!(
            found,
            [
                "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
                "/etc/vmware-tools",
                "/usr/bin/vmtoolsd",
            ]
        );
        let mut sorted = LEFTOVER_PATHS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            LEFTOVER_PATHS.len(),
            "duplicate leftover path"
        );
    }

    #[test]
    fn runlevel_links() {
        let entries: Vec<String> = [
            "S01open-vm-tools",
            "K08vmware-tools",
            "S03vmware-tools-services",
            "S01ssh",
            "Sopen-vm-tools",
            "README",
            "S01open-vm-tools-extra",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            rc_links("/etc/rc2.d/", &entries),
            [
                "/etc/rc2.d/S01open-vm-tools",
                "/etc/rc2.d/K08vmware-tools",
                "/etc/rc2.d/S03vmware-tools-services",
            ]
        );
    }
}
