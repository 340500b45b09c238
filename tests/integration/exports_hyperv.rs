//! `--hyperv`: Hyper-V `Export-VM` folders built per test (VHDX disks made with qemu-img, each
//! with its own bytes written by qemu-io; the XML configuration authored in the shape Hyper-V
//! 2012 R2 writes, in UTF-8 or UTF-16 with a BOM), imported into a manifest and converted.
//! Bad exports: exit 2, the file and place named, nothing written.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A generation 1 VM: boot disk on IDE 0:0, data disk on SCSI.
const GEN1: Vm = Vm {
    fixture: "exports/hyperv-gen1.xml",
    id: "3F2504E0-4F89-41D3-9A0C-0305E82C3301",
    disks: &["web02.vhdx", "web02-data.vhdx"],
};

/// A generation 2 VM with Secure Boot: both disks on SCSI.
const GEN2: Vm = Vm {
    fixture: "exports/hyperv-gen2.xml",
    id: "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
    disks: &["app03-os.vhdx", "app03-data.vhdx"],
};

struct Vm {
    fixture: &'static str,
    id: &'static str,
    /// In boot order.
    disks: &'static [&'static str],
}

/// A built export: `<dir>/export/{Virtual Machines,Virtual Hard Disks}`.
struct Export {
    dir: TestDir,
    vm: &'static Vm,
}

impl Export {
    fn root(&self) -> PathBuf {
        self.dir.join("export")
    }

    fn config(&self) -> PathBuf {
        self.root()
            .join("Virtual Machines")
            .join(format!("{}.xml", self.vm.id))
    }

    fn disk(&self, name: &str) -> PathBuf {
        self.root().join("Virtual Hard Disks").join(name)
    }

    /// Rewrites the configuration (as UTF-8).
    fn edit(&self, edit: impl FnOnce(String) -> String) {
        let text = fixture(self.vm.fixture);
        std::fs::write(self.config(), edit(text)).expect("write config");
    }
}

/// The export folder of `vm`: its VHDX disks (64 MiB then 32 MiB, each with a pattern of its
/// own) and its configuration, in UTF-16 with a BOM when `utf16`.
fn build(vm: &'static Vm, utf16: bool) -> Export {
    let e = Export {
        dir: TestDir::new(),
        vm,
    };
    for sub in ["Virtual Machines", "Virtual Hard Disks"] {
        std::fs::create_dir_all(e.root().join(sub)).expect("mkdir");
    }
    for (n, name) in vm.disks.iter().enumerate() {
        let path = e.disk(name);
        run_ok(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "vhdx"])
                .arg(&path)
                .arg(if n == 0 { "64M" } else { "32M" }),
        );
        run_ok(
            Command::new("qemu-io")
                .args(["-f", "vhdx", "-c"])
                .arg(format!("write -P {:#x} {}M 1M", 0x61 + n, 2 * n + 1))
                .arg(&path),
        );
    }
    let text = fixture(vm.fixture);
    if utf16 {
        let mut bytes = vec![0xff, 0xfe];
        // Hyper-V writes CRLF line ends.
        for u in text.replace('\n', "\r\n").encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(e.config(), bytes).expect("write config");
    } else {
        std::fs::write(e.config(), text).expect("write config");
    }
    e
}

/// `hyper2kvm --hyperv <path> --output-dir <dir>/out`
fn import(e: &Export, path: &Path) -> Run {
    run(hyper2kvm()
        .arg("--hyperv")
        .arg(path)
        .arg("--output-dir")
        .arg(e.dir.join("out"))
        .args(["--progress", "none"]))
}

/// The summary with the VHDX files' sizes redacted (qemu-img's version decides them).
fn redacted_summary(stdout: &str, dir: &TestDir) -> String {
    let sizes = regex_lite::Regex::new(r"\d+(\.\d)? (B|KiB|MiB) \(virtual").expect("regex");
    sizes
        .replace_all(&redact(stdout, dir), "[SIZE] (virtual")
        .into_owned()
}

/// The manifest with paths, times, digests and the files' byte counts redacted.
fn redacted_manifest(dir: &TestDir) -> String {
    let text = std::fs::read_to_string(dir.join("out/manifest.json")).expect("manifest written");
    let sizes = regex_lite::Regex::new(r#""bytes": \d+"#).expect("regex");
    sizes
        .replace_all(&redact(&text, dir), r#""bytes": [N]"#)
        .into_owned()
}

/// Converts the imported manifest and checks each output against its VHDX, in boot order.
fn convert_and_compare(e: &Export) {
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(e.dir.join("out/manifest.json"))
        .args(["--progress", "none"]));
    assert_eq!(
        r.code,
        Some(0),
        "conversion failed:\n{}{}",
        r.stdout,
        r.stderr
    );
    for (n, name) in e.vm.disks.iter().enumerate() {
        assert!(
            identical(
                &e.disk(name),
                "vhdx",
                &e.dir.join(&format!("out/disk{n}.qcow2")),
                "qcow2"
            ),
            "disk{n} is not {name}"
        );
    }
}

#[test]
fn a_generation_1_hyperv_export_imports_ide_then_scsi_and_converts() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build(&GEN1, false);
    let r = import(&e, &e.root());
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("hyperv_gen1_summary", redacted_summary(&r.stdout, &e.dir));
    insta::assert_snapshot!("hyperv_gen1_manifest", redacted_manifest(&e.dir));
    assert_eq!(tree(&e.dir.join("out")), ["manifest.json"]);
    convert_and_compare(&e);
}

#[test]
fn a_generation_2_hyperv_export_in_utf16_imports_with_secure_boot_and_converts() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build(&GEN2, true);
    let r = import(&e, &e.root());
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("hyperv_gen2_summary", redacted_summary(&r.stdout, &e.dir));
    insta::assert_snapshot!("hyperv_gen2_manifest", redacted_manifest(&e.dir));
    // The configuration itself names the same VM.
    let again = run(hyper2kvm()
        .arg("--hyperv")
        .arg(e.config())
        .arg("--output-dir")
        .arg(e.dir.join("out"))
        .args(["--progress", "none", "--dry-run"]));
    assert_eq!(again.code, Some(0), "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("Imported Hyper-V export app03"),
        "{}",
        again.stdout
    );
    convert_and_compare(&e);
}

/// One bad export: how it is made from a good one, and what the error must say.
struct Case {
    name: &'static str,
    spoil: fn(&Export),
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "a Hyper-V 2016 export (.vmcx)",
        spoil: |e| {
            std::fs::remove_file(e.config()).expect("rm");
            let vms = e.root().join("Virtual Machines");
            for ext in ["vmcx", "vmrs", "vmgs"] {
                std::fs::write(vms.join(format!("{}.{ext}", e.vm.id)), b"\x00binary")
                    .expect("write");
            }
        },
        expect: &[
            "cannot be imported: Virtual Machines/3F2504E0-4F89-41D3-9A0C-0305E82C3301.vmcx is \
             a binary configuration",
            "Get-VMHardDiskDrive",
        ],
    },
    Case {
        name: "a missing VHDX",
        spoil: |e| std::fs::remove_file(e.disk("web02-data.vhdx")).expect("rm"),
        expect: &[
            "3F2504E0-4F89-41D3-9A0C-0305E82C3301.xml: line 57: scsi0:0 pathname \
             D:\\Hyper-V\\web02\\Virtual Hard Disks\\web02-data.vhdx: web02-data.vhdx is not in \
             the export's Virtual Hard Disks folder",
        ],
    },
    Case {
        name: "a pathname that escapes the folder",
        spoil: |e| {
            e.edit(|t| {
                t.replace(
                    "Virtual Hard Disks\\web02-data.vhdx",
                    "Virtual Hard Disks\\../../raw/web02-data.vhdx",
                )
            })
        },
        expect: &[
            "3F2504E0-4F89-41D3-9A0C-0305E82C3301.xml: line 57: scsi0:0 pathname",
            "the file name ../../raw/web02-data.vhdx is not a plain name",
        ],
    },
    Case {
        name: "a checkpoint's differencing disk",
        spoil: |e| {
            let avhdx = "web02_0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D.avhdx";
            run_ok(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "vhdx"])
                    .arg(e.disk(avhdx))
                    .arg("64M"),
            );
            e.edit(|t| t.replace("web02.vhdx", avhdx));
        },
        expect: &[
            "3F2504E0-4F89-41D3-9A0C-0305E82C3301.xml: line 10: ide0:0 pathname",
            "is a differencing disk (a checkpoint)",
            "Remove-VMSnapshot",
        ],
    },
    Case {
        name: "a DOCTYPE",
        spoil: |e| {
            e.edit(|t| {
                t.replacen(
                    "<configuration>",
                    "<!DOCTYPE configuration [<!ENTITY x \"xx\">]>\n<configuration>",
                    1,
                )
            })
        },
        expect: &[
            "3F2504E0-4F89-41D3-9A0C-0305E82C3301.xml: line 5, column 1: a DOCTYPE declaration \
             is refused",
        ],
    },
];

#[test]
fn bad_hyperv_exports_are_refused_with_the_file_and_place_named_and_nothing_written() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let mut failures = Vec::new();
    for case in CASES {
        let e = build(&GEN1, false);
        (case.spoil)(&e);
        let r = import(&e, &e.root());
        let missing: Vec<&&str> = case
            .expect
            .iter()
            .filter(|s| !r.stderr.contains(**s))
            .collect();
        if r.code != Some(2) || !missing.is_empty() || e.dir.join("out").exists() {
            failures.push(format!(
                "{}: exit {:?}, missing {missing:?}, out exists: {}\n{}{}",
                case.name,
                r.code,
                e.dir.join("out").exists(),
                r.stdout,
                r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
