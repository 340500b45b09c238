//! qemu-system-x86_64: which accelerator a VM we start (the libguestfs appliance, a boot test)
//! can use, and the command line of the VM the boot test boots ([`BootVm`]).
//!
//! `/dev/kvm` existing is not enough: on nested or paravirtualised hosts (kvm-pvm, for one) it
//! opens fine and then qemu aborts setting MSRs or the guest kernel hangs. So we boot a real
//! guest: a 512-byte boot sector that prints a marker on the serial port, run by
//! `qemu-system-x86_64 -accel kvm -cpu host` (the CPU model libguestfs uses with KVM). Only when
//! the marker appears within a few seconds is KVM used; otherwise TCG.
//!
//! A boot sector runs in real mode only, and some hosts run that under KVM but hang a Linux
//! kernel (kvm-pvm: the boot sector prints, a stock Debian kernel spins with its console
//! silent). So when the boot sector passed and a kernel is installed in `/boot` (the one the
//! libguestfs appliance boots), that kernel is booted too, without a root filesystem: only when
//! it reaches its "VFS: Unable to mount root fs" panic within the timeout is KVM used.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::exec::{self, CancelToken, Command, Watch};

const MARKER: &str = "H2KOK";
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// What a kernel without a root filesystem prints at the end of its boot.
const KERNEL_MARKER: &str = "Unable to mount root fs";
/// A kernel reaches that panic in 1 to 3 s under KVM (about 10 s under TCG).
const KERNEL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// As reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The outcome of the probe, with the reason, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub accel: Accel,
    pub reason: String,
}

/// A boot sector (real mode, loaded at 0x7c00): zero DS, print the marker on COM1, halt.
fn boot_sector() -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xfc, // cld
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xbe, 0x16, 0x7c, // mov si, 0x7c16 (the message)
        0xac, // lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz halt
        0xee, // out dx, al
        0xeb, 0xf8, // jmp lodsb
        0xf4, // halt: hlt
        0xeb, 0xfd, // jmp halt
    ];
    code.extend_from_slice(MARKER.as_bytes());
    code.extend_from_slice(b"\n\0");
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xaa]);
    code
}

/// Probes whether `qemu-system-x86_64` can run a guest with KVM on this machine.
pub fn probe(qemu_system: &Path) -> Probe {
    let tcg = |reason: String| Probe {
        accel: Accel::Tcg,
        reason,
    };
    if !Path::new("/dev/kvm").exists() {
        return tcg("/dev/kvm does not exist".to_owned());
    }
    let Ok(dir) = tempfile::tempdir() else {
        return tcg("could not create a scratch directory for the KVM probe".to_owned());
    };
    let image = dir.path().join("probe.img");
    if std::fs::write(&image, boot_sector()).is_err() {
        return tcg("could not write the KVM probe image".to_owned());
    }
    let drive = format!("file={},format=raw,if=ide", image.display());
    // The guest halts forever once it has printed: qemu is stopped as soon as the marker is seen.
    match run_until(qemu_system, &["-drive", &drive], MARKER, PROBE_TIMEOUT) {
        Ok(None) => {}
        Ok(Some(record)) => {
            return tcg(format!("KVM cannot run a guest here ({record}); using TCG"));
        }
        Err(e) => return tcg(format!("could not run the KVM probe: {e}; using TCG")),
    }
    let Some(kernel) = newest_kernel(Path::new("/boot")) else {
        return Probe {
            accel: Accel::Kvm,
            reason: "a probe guest ran under KVM (no kernel in /boot to probe further)".to_owned(),
        };
    };
    let kernel_args = [
        "-m".as_ref(),
        "256".as_ref(),
        "-kernel".as_ref(),
        kernel.as_os_str(),
        "-append".as_ref(),
        "console=ttyS0 panic=-1 quiet loglevel=2".as_ref(),
    ];
    match run_until(qemu_system, &kernel_args, KERNEL_MARKER, KERNEL_TIMEOUT) {
        Ok(None) => Probe {
            accel: Accel::Kvm,
            reason: format!(
                "a probe guest and the kernel {} ran under KVM",
                kernel.display()
            ),
        },
        Ok(Some(record)) => tcg(format!(
            "KVM runs a boot sector here but not the kernel {} ({record}); using TCG",
            kernel.display()
        )),
        Err(e) => tcg(format!(
            "could not run the KVM kernel probe: {e}; using TCG"
        )),
    }
}

/// Runs `qemu-system-x86_64 -accel kvm -cpu host` (no display, serial on stdout) with `extra`
/// until `marker` appears on the serial port (`Ok(None)`, qemu stopped then) or `timeout`;
/// otherwise how qemu ended.
fn run_until<S: AsRef<std::ffi::OsStr>>(
    qemu_system: &Path,
    extra: &[S],
    marker: &str,
    timeout: Duration,
) -> Result<Option<exec::CommandRecord>, exec::ExecError> {
    let cmd = Command::new(qemu_system)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-machine",
            "pc",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args(extra)
        .timeout(timeout);
    let seen = CancelToken::new();
    let mut on_line = |piece: &str| {
        if piece.contains(marker) {
            seen.cancel();
        }
    };
    let out = exec::run(
        &cmd,
        Watch {
            cancel: Some(&seen),
            on_stdout_line: Some(&mut on_line),
        },
    )?;
    Ok((!seen.is_cancelled()).then_some(out.record))
}

/// The newest `vmlinuz-*` in `dir` (by version order of the names), as supermin picks one.
fn newest_kernel(dir: &Path) -> Option<std::path::PathBuf> {
    let mut kernels: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
                && p.is_file()
        })
        .collect();
    kernels.sort_by_key(|k| version_key(k));
    kernels.pop()
}

/// `vmlinuz-6.1.0-57-amd64` → [6, 1, 0, 57]: numeric runs compared as numbers.
fn version_key(p: &Path) -> Vec<u64> {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// The machine type of the domain hyper2kvm emits (and so of the VM the boot test boots).
pub const MACHINE: &str = "q35";

/// Firmware for a VM qemu boots.
#[derive(Clone, Copy, Debug)]
pub enum BootFirmware<'a> {
    /// SeaBIOS, qemu's default.
    Bios,
    /// OVMF: read-only code and a writable variable store.
    Uefi { code: &'a Path, vars: &'a str },
}

/// One disk of a VM qemu boots: qemu block driver and file.
#[derive(Clone, Copy, Debug)]
pub struct BootVmDisk<'a> {
    pub format: &'a str,
    pub path: &'a Path,
}

/// A VM booted the way the emitted libvirt domain runs it: q35, virtio-blk disks in boot order,
/// no network, writes to a throw-away overlay (`-snapshot`), the serial console into a file.
#[derive(Clone, Debug)]
pub struct BootVm<'a> {
    pub qemu: &'a Path,
    pub accel: Accel,
    pub firmware: BootFirmware<'a>,
    pub memory_mb: u32,
    pub cpus: u32,
    pub disks: Vec<BootVmDisk<'a>>,
    /// Receives the serial console.
    pub console: &'a Path,
}

/// qemu's option syntax doubles commas inside a value.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

impl BootVm<'_> {
    pub fn command(&self) -> Command {
        // graphics=off makes SeaBIOS print on the serial port too ("No bootable device").
        let mut cmd =
            Command::new(self.qemu).args(["-machine", &format!("{MACHINE},graphics=off")]);
        cmd = match self.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            // `max` has every feature TCG emulates; newer distros need x86-64-v2 or more.
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd = cmd
            .arg("-m")
            .arg(self.memory_mb.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-nic",
                "none",
                "-no-reboot",
                "-snapshot",
            ]);
        if let BootFirmware::Uefi { code, vars } = self.firmware {
            cmd = cmd.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                opt_path(code)
            ));
            cmd = cmd
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=1,file={vars}"));
        }
        cmd = cmd
            .arg("-chardev")
            .arg(format!("file,id=console,path={}", opt_path(self.console)))
            .args(["-serial", "chardev:console"]);
        for (i, d) in self.disks.iter().enumerate() {
            cmd = cmd
                .arg("-drive")
                .arg(format!(
                    "if=none,id=disk{i},format={},file={}",
                    d.format,
                    opt_path(d.path)
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=disk{i},bootindex={}", i + 1));
        }
        cmd
    }
}

/// A UEFI variable store path as qemu's option syntax wants it.
pub fn vars_option(path: &Path) -> String {
    opt_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_is_probed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-57-amd64",
            "config-6.1.0-99-amd64",
        ] {
            std::fs::write(dir.path().join(n), b"x").expect("write");
        }
        assert_eq!(
            newest_kernel(dir.path()),
            Some(dir.path().join("vmlinuz-6.1.0-57-amd64"))
        );
        assert_eq!(newest_kernel(&dir.path().join("none")), None);
    }

    #[test]
    fn boot_sector_is_bootable() {
        let s = boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        // `mov si` points at the message.
        let msg = usize::from(s[9]) | (usize::from(s[10]) << 8);
        assert_eq!(
            &s[msg - 0x7c00..msg - 0x7c00 + MARKER.len()],
            MARKER.as_bytes()
        );
    }
}
