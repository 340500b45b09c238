//! OVMF, the UEFI firmware: the files an emitted libvirt domain names (Debian's paths, the
//! host that runs the domain needs them), and where the boot test looks for a pair to boot.

use std::path::PathBuf;

/// Debian's `ovmf` package (see /usr/share/qemu/firmware/60-edk2-x86_64.json): the 4 MiB build,
/// without Secure Boot.
pub const CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Debian's Secure Boot build with Microsoft's keys enrolled
/// (/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json): what Windows and shim-signed
/// Linux guests boot with. It needs SMM, which the domain enables.
pub const CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// Overrides where OVMF is looked for (hosts with another layout, tests).
pub const DIR_ENV: &str = "HYPER2KVM_OVMF_DIR";
/// Where Debian's `ovmf` package puts the firmware.
pub const DIRS: &[&str] = &["/usr/share/OVMF"];
/// Code and variable-store template pairs, preferred first (Debian 12 ships both sizes).
const PAIRS: &[(&str, &str)] = &[
    ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("OVMF_CODE.fd", "OVMF_VARS.fd"),
];
/// The directories searched for OVMF: the override alone when set, else Debian's.
pub fn dirs(override_dir: Option<PathBuf>) -> Vec<PathBuf> {
    match override_dir {
        Some(d) => vec![d],
        None => DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// The first code + variable-store pair present in `dirs`.
pub fn find(dirs: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    dirs.iter().find_map(|d| {
        PAIRS.iter().find_map(|(code, vars)| {
            let (c, v) = (d.join(code), d.join(vars));
            (c.is_file() && v.is_file()).then_some((c, v))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovmf_is_found_in_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dirs = vec![dir.path().to_owned()];
        assert_eq!(find(&dirs), None);
        std::fs::write(dir.path().join("OVMF_CODE.fd"), b"c").expect("write");
        assert_eq!(find(&dirs), None, "code without a vars template");
        std::fs::write(dir.path().join("OVMF_VARS.fd"), b"v").expect("write");
        assert_eq!(
            find(&dirs),
            Some((
                dir.path().join("OVMF_CODE.fd"),
                dir.path().join("OVMF_VARS.fd")
            ))
        );
        assert_eq!(
            super::dirs(None),
            vec![PathBuf::from("/usr/share/OVMF")],
            "Debian's location by default"
        );
    }
}
