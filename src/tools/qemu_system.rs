//! Which accelerator a VM we start (the libguestfs appliance, a boot test) can use.
//!
//! `/dev/kvm` existing is not enough: on nested or paravirtualised hosts (kvm-pvm, for one) it
//! opens fine and then qemu aborts setting MSRs or the guest kernel hangs. So we boot a real
//! guest: a 512-byte boot sector that prints a marker on the serial port, run by
//! `qemu-system-x86_64 -accel kvm -cpu host` (the CPU model libguestfs uses with KVM). Only when
//! the marker appears within a few seconds is KVM used; otherwise TCG.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::exec::{self, CancelToken, Command, Watch};

const MARKER: &str = "H2KOK";
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

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
            "-drive",
        ])
        .arg(format!("file={},format=raw,if=ide", image.display()))
        .timeout(PROBE_TIMEOUT);
    // The guest halts forever once it has printed: stop qemu as soon as the marker is seen.
    let seen = CancelToken::new();
    let mut on_line = |piece: &str| {
        if piece.contains(MARKER) {
            seen.cancel();
        }
    };
    let result = exec::run(
        &cmd,
        Watch {
            cancel: Some(&seen),
            on_stdout_line: Some(&mut on_line),
        },
    );
    match result {
        Ok(_) if seen.is_cancelled() => Probe {
            accel: Accel::Kvm,
            reason: "a probe guest ran under KVM".to_owned(),
        },
        Ok(out) => tcg(format!(
            "KVM cannot run a guest here ({}); using TCG",
            out.record
        )),
        Err(e) => tcg(format!("could not run the KVM probe: {e}; using TCG")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
