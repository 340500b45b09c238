//! The external programs hyper2kvm drives, one file each: what to run and how to read what
//! they say. [`qemu_img`] (probe, check, convert, compare), [`qemu_system`] (the KVM probe and
//! the boot-test VM), [`guestfish`] (the libguestfs appliance, command by command) and
//! [`ovmf`] (where the UEFI firmware is) and [`virsh`] (a libvirt host). Every one of them runs through [`crate::exec`];
//! [`Tool`] finds them and names the Debian package of a missing one; [`inventory`] lists which
//! are here (`--version`).

pub mod guestfish;
pub mod inventory;
pub mod ovmf;
pub mod qemu_img;
pub mod qemu_system;
pub mod virsh;

use std::path::PathBuf;

use crate::exec::ExecError;

/// An external program the tool depends on, with the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    QemuImg,
    Guestfish,
    QemuSystem,
    Python3,
    Virsh,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Tool::QemuImg => "qemu-img",
            Tool::Guestfish => "guestfish",
            Tool::QemuSystem => "qemu-system-x86_64",
            Tool::Python3 => "python3",
            Tool::Virsh => "virsh",
        }
    }

    pub fn package(self) -> &'static str {
        match self {
            Tool::QemuImg => "qemu-utils",
            Tool::Guestfish => "libguestfs-tools",
            Tool::QemuSystem => "qemu-system-x86",
            Tool::Python3 => "python3",
            Tool::Virsh => "libvirt-clients",
        }
    }

    /// Finds the tool on `PATH`.
    pub fn locate(self) -> Result<PathBuf, ExecError> {
        which::which(self.program()).map_err(|_| ExecError::ToolMissing {
            program: self.program(),
            package: self.package(),
        })
    }
}
