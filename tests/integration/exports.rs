//! `--ova` and `--ovf`: VMware exports built per test (streamOptimized VMDKs made with qemu-img,
//! an OVF descriptor written from the DMTF schema with VMware's extensions, a `.mf` of SHA1 and
//! SHA256 digests, tarred with `tar` descriptor first), imported into a manifest, and converted
//! from the archive in place. Bad exports: exit 2, the file and place named, nothing written.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

use crate::support::*;

/// The VM the fixture describes.
pub(crate) const NAME: &str = "app01";

/// Second disk's pattern: different bytes, so a swapped disk order shows.
const DATA_PATTERN: &[(u8, &str, &str)] = &[(0x5a, "0", "1M"), (0xc3, "17M", "3M")];

/// A built export: its files in `src/` (raw copies of the disks in `raw/`).
pub(crate) struct Export {
    pub(crate) dir: TestDir,
}

impl Export {
    pub(crate) fn src(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("src/{name}"))
    }

    pub(crate) fn raw(&self, n: usize) -> PathBuf {
        self.dir.join(&format!("raw/disk{n}.raw"))
    }

    fn ova(&self) -> PathBuf {
        self.dir.join(&format!("{NAME}.ova"))
    }

    pub(crate) fn ovf(&self) -> PathBuf {
        self.src(&format!("{NAME}.ovf"))
    }

    /// Rewrites the descriptor with `edit`, and the `.mf` to match (digests of what is there).
    fn edit_descriptor(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.ovf()).expect("read ovf");
        std::fs::write(self.ovf(), edit(text)).expect("write ovf");
        self.write_mf();
    }

    /// `SHA256` for the descriptor and the second disk, `SHA1` for the first, as files of one
    /// package may differ in age.
    fn write_mf(&self) {
        let ovf = std::fs::read(self.ovf()).expect("ovf");
        let d1 = std::fs::read(self.src(&format!("{NAME}-disk1.vmdk"))).expect("disk1");
        let d2 = std::fs::read(self.src(&format!("{NAME}-disk2.vmdk"))).expect("disk2");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let text = format!(
            "SHA256({NAME}.ovf)= {}\nSHA1({NAME}-disk1.vmdk)= {}\nSHA256({NAME}-disk2.vmdk)= {}\n",
            hex(&sha2::Sha256::digest(&ovf)),
            hex(&sha1::Sha1::digest(&d1)),
            hex(&sha2::Sha256::digest(&d2)),
        );
        std::fs::write(self.src(&format!("{NAME}.mf")), text).expect("write mf");
    }

    /// Tars `src/` into the OVA, descriptor first (the order OVF requires), as ustar.
    fn tar(&self, order: &[&str]) -> PathBuf {
        let ova = self.ova();
        let _ = std::fs::remove_file(&ova);
        run_ok(
            Command::new("tar")
                .args(["--format=ustar", "-cf"])
                .arg(&ova)
                .arg("-C")
                .arg(self.dir.join("src"))
                .args(order),
        );
        ova
    }

    fn default_order() -> Vec<String> {
        vec![
            format!("{NAME}.ovf"),
            format!("{NAME}.mf"),
            format!("{NAME}-disk1.vmdk"),
            format!("{NAME}-disk2.vmdk"),
        ]
    }

    pub(crate) fn tar_default(&self) -> PathBuf {
        let order = Self::default_order();
        let names: Vec<&str> = order.iter().map(String::as_str).collect();
        self.tar(&names)
    }
}

/// Two streamOptimized disks (64 MiB boot, 32 MiB data), the fixture descriptor and its `.mf`.
pub(crate) fn build_export() -> Export {
    let dir = TestDir::new();
    for sub in ["src", "raw"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let e = Export { dir };
    make_image(&e.raw(0), "raw", None);
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(e.raw(1))
            .arg("32M"),
    );
    let mut io = Command::new("qemu-io");
    io.args(["-f", "raw"]);
    for (byte, off, len) in DATA_PATTERN {
        io.args(["-c", &format!("write -P {byte:#x} {off} {len}")]);
    }
    run_ok(io.arg(e.raw(1)));
    for n in 0..2 {
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vmdk"])
                .args(["-o", "subformat=streamOptimized"])
                .arg(e.raw(n))
                .arg(e.src(&format!("{NAME}-disk{}.vmdk", n + 1))),
        );
    }
    let text = fixture("exports/app01.ovf")
        .replace("@NAME@", NAME)
        .replace(
            "@SIZE0@",
            &file_size(&e.src(&format!("{NAME}-disk1.vmdk"))).to_string(),
        )
        .replace(
            "@SIZE1@",
            &file_size(&e.src(&format!("{NAME}-disk2.vmdk"))).to_string(),
        );
    std::fs::write(e.ovf(), text).expect("write ovf");
    e.write_mf();
    e
}

/// `hyper2kvm <option> <path> --output-dir <dir>/out`
fn import(dir: &TestDir, option: &str, path: &Path) -> Run {
    run(hyper2kvm()
        .arg(option)
        .arg(path)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .args(["--progress", "none"]))
}

/// The manifest as a golden file: paths, times and digests redacted, and the byte counts that
/// follow from the VMDKs' compressed size (which the qemu-img version decides).
fn redacted_manifest(dir: &TestDir) -> String {
    let text = std::fs::read_to_string(dir.join("out/manifest.json")).expect("manifest written");
    let sizes = regex_lite::Regex::new(r#""(bytes|offset|size)": \d+"#).expect("regex");
    sizes
        .replace_all(&redact(&text, dir), r#""$1": [N]"#)
        .into_owned()
}

/// The import's summary with the VMDKs' compressed sizes redacted.
fn redacted_summary(stdout: &str, dir: &TestDir) -> String {
    let sizes = regex_lite::Regex::new(r"\d+\.\d KiB \(virtual").expect("regex");
    sizes
        .replace_all(&redact(stdout, dir), "[SIZE] (virtual")
        .into_owned()
}

/// Converts the imported manifest and checks both outputs against the raw disks, in order.
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
    for n in 0..2 {
        let out = e.dir.join(&format!("out/disk{n}.qcow2"));
        assert!(
            identical(&e.raw(n), "raw", &out, "qcow2"),
            "disk{n} differs from its source"
        );
    }
}

#[test]
fn an_ova_is_imported_in_place_and_converts_to_the_same_disks() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build_export();
    let ova = e.tar_default();
    let r = import(&e.dir, "--ova", &ova);
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("ova_import_summary", redacted_summary(&r.stdout, &e.dir));
    insta::assert_snapshot!("ova_import_manifest", redacted_manifest(&e.dir));
    // Read in place: the output directory holds the manifest and nothing extracted.
    assert_eq!(tree(&e.dir.join("out")), ["manifest.json"]);
    let manifest = read_json(&e.dir.join("out/manifest.json"));
    for d in manifest["disks"].as_array().expect("disks") {
        let m = &d["tar_member"];
        let (offset, size) = (
            m["offset"].as_u64().expect("offset"),
            m["size"].as_u64().expect("size"),
        );
        assert_eq!(offset % 512, 0, "{d}");
        assert_eq!(d["bytes"].as_u64(), Some(size));
        // The member's bytes are the VMDK that was tarred.
        let name = m["name"].as_str().expect("name");
        let whole = std::fs::read(&ova).expect("ova");
        let member = &whole[offset as usize..(offset + size) as usize];
        assert_eq!(member, std::fs::read(e.src(name)).expect("vmdk").as_slice());
    }
    convert_and_compare(&e);
}

#[test]
fn an_unpacked_ovf_imports_the_same_vm_from_its_files() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build_export();
    let r = import(&e.dir, "--ovf", &e.ovf());
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "verified: SHA256 {NAME}.ovf, SHA1 {NAME}-disk1.vmdk, SHA256 {NAME}-disk2.vmdk"
        )),
        "{}",
        r.stdout
    );
    let manifest = read_json(&e.dir.join("out/manifest.json"));
    let disks = manifest["disks"].as_array().expect("disks");
    assert_eq!(
        disks[0]["local_path"].as_str(),
        Some(
            e.src(&format!("{NAME}-disk1.vmdk"))
                .to_str()
                .expect("utf-8")
        )
    );
    assert!(
        disks.iter().all(|d| d.get("tar_member").is_none()),
        "{manifest:#}"
    );
    assert_eq!(manifest["source"]["export_method"], "ovf");
    convert_and_compare(&e);
}

#[test]
fn a_manifest_whose_archive_was_rebuilt_is_refused_before_reading_it() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let e = build_export();
    e.tar_default();
    let r = import(&e.dir, "--ova", &e.ova());
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    // The same files in another order: every disk now starts elsewhere.
    e.tar(&[
        &format!("{NAME}.ovf"),
        &format!("{NAME}.mf"),
        &format!("{NAME}-disk2.vmdk"),
        &format!("{NAME}-disk1.vmdk"),
    ]);
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(e.dir.join("out/manifest.json"))
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("disks[0].tar_member")
            && r.stderr
                .contains(&format!("does not hold member {NAME}-disk1.vmdk at byte"))
            && r.stderr.contains("import the archive again"),
        "{}",
        r.stderr
    );
    assert_eq!(tree(&e.dir.join("out")), ["manifest.json"]);
}

/// One bad export: how it is made from a good one, which option reads it, and what the error
/// must say.
struct Case {
    name: &'static str,
    option: &'static str,
    spoil: fn(&Export) -> PathBuf,
    expect: &'static [&'static str],
}

fn flip_byte(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut b).expect("read");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[b[0] ^ 0xff]).expect("write");
}

const CASES: &[Case] = &[
    Case {
        name: "a digest in the .mf that does not match",
        option: "--ova",
        spoil: |e| {
            let mf = e.src(&format!("{NAME}.mf"));
            let text = std::fs::read_to_string(&mf).expect("mf");
            let line = text.lines().nth(2).expect("third line").to_owned();
            let last = line.chars().last().expect("digit");
            let swapped = if last == '0' { '1' } else { '0' };
            let spoiled = format!("{}{swapped}", &line[..line.len() - 1]);
            std::fs::write(&mf, text.replace(&line, &spoiled)).expect("write");
            e.tar_default()
        },
        expect: &[
            "invalid OVA",
            "app01.mf: line 3: the SHA256 digest of app01-disk2.vmdk is",
            "the file is damaged or was changed",
        ],
    },
    Case {
        name: "a disk damaged after the export",
        option: "--ova",
        spoil: |e| {
            let disk = e.src(&format!("{NAME}-disk1.vmdk"));
            flip_byte(&disk, file_size(&disk) / 2);
            e.tar_default()
        },
        expect: &["app01.mf: line 2: the SHA1 digest of app01-disk1.vmdk is"],
    },
    Case {
        name: "a truncated archive",
        option: "--ova",
        spoil: |e| {
            let ova = e.tar_default();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&ova)
                .expect("open");
            // Inside the last disk: the archive ends with at most 11 KiB of padding after it.
            let disk2 = file_size(&e.src(&format!("{NAME}-disk2.vmdk")));
            f.set_len(file_size(&ova) - 11 * 1024 - disk2 / 2)
                .expect("truncate");
            ova
        },
        expect: &["app01.ova: member app01-disk2.vmdk: the archive is truncated"],
    },
    Case {
        name: "a descriptor naming a file the archive lacks",
        option: "--ova",
        spoil: |e| {
            e.edit_descriptor(|t| t.replace("app01-disk2.vmdk", "app01-disk3.vmdk"));
            e.tar_default()
        },
        expect: &["file app01-disk3.vmdk: is not a member of"],
    },
    Case {
        name: "a DOCTYPE in the descriptor",
        option: "--ova",
        spoil: |e| {
            e.edit_descriptor(|t| {
                t.replacen(
                    "<Envelope",
                    "<!DOCTYPE Envelope [<!ENTITY x \"xx\">]>\n<Envelope",
                    1,
                )
            });
            e.tar_default()
        },
        expect: &["app01.ovf: line", "DOCTYPE declaration is refused"],
    },
    Case {
        name: "a descriptor naming 10,000 disks",
        option: "--ovf",
        spoil: |e| {
            e.edit_descriptor(|t| {
                let item = "<Item><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>\
                            <rasd:InstanceID>99</rasd:InstanceID>\
                            <rasd:ResourceType>17</rasd:ResourceType></Item>\n";
                t.replace(
                    "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\"",
                    &format!(
                        "{}      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\"",
                        item.repeat(9_998)
                    ),
                )
            });
            e.ovf()
        },
        expect: &["the VM has 10000 disks; more than 256"],
    },
    Case {
        name: "a gzip-compressed archive",
        option: "--ova",
        spoil: |e| {
            let ova = e.tar_default();
            run_ok(Command::new("gzip").arg("-f").arg(&ova));
            std::fs::rename(ova.with_extension("ova.gz"), &ova).expect("rename");
            ova
        },
        expect: &["it is gzip-compressed", "gzip -dc"],
    },
    Case {
        name: "an href leading out of the folder",
        option: "--ovf",
        spoil: |e| {
            e.edit_descriptor(|t| {
                t.replace(
                    "ovf:href=\"app01-disk2.vmdk\"",
                    "ovf:href=\"../raw/disk1.raw\"",
                )
            });
            e.ovf()
        },
        expect: &["file ../raw/disk1.raw: must be a plain name inside the export"],
    },
    Case {
        name: "a link leading out of the folder",
        option: "--ovf",
        spoil: |e| {
            let disk2 = e.src(&format!("{NAME}-disk2.vmdk"));
            let outside = e.dir.join("elsewhere.vmdk");
            std::fs::rename(&disk2, &outside).expect("move");
            std::os::unix::fs::symlink(&outside, &disk2).expect("symlink");
            e.ovf()
        },
        expect: &[
            "file app01-disk2.vmdk:",
            "leads outside the export's folder",
        ],
    },
    Case {
        name: "a declared capacity the image does not have",
        option: "--ova",
        spoil: |e| {
            e.edit_descriptor(|t| t.replace("ovf:capacity=\"32\"", "ovf:capacity=\"33\""));
            e.tar_default()
        },
        expect: &[
            "disk1: the export declares a capacity of 34603008 bytes, but",
            "holds a disk of 33554432 bytes",
        ],
    },
];

#[test]
fn bad_exports_are_refused_with_the_file_and_place_named_and_nothing_written() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_tool("gzip") {
        return;
    }
    let mut failures = Vec::new();
    for case in CASES {
        let e = build_export();
        let path = (case.spoil)(&e);
        let r = import(&e.dir, case.option, &path);
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

/// A VMware VM folder: four disks in the VMDK kinds VMware writes, each with its own bytes.
pub(crate) fn build_vmx_folder(dir: &TestDir) -> PathBuf {
    let vm = dir.join("vm");
    std::fs::create_dir_all(&vm).expect("mkdir");
    for (n, (name, subformat)) in [
        ("web01.vmdk", "monolithicFlat"),
        ("web01_1.vmdk", "twoGbMaxExtentSparse"),
        ("web01_2.vmdk", "twoGbMaxExtentFlat"),
        ("web01_3.vmdk", "monolithicSparse"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = vm.join(name);
        run_ok(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "vmdk", "-o"])
                .arg(format!("subformat={subformat}"))
                .arg(&path)
                .arg("32M"),
        );
        run_ok(
            Command::new("qemu-io")
                .args(["-f", "vmdk", "-c"])
                .arg(format!("write -P {:#x} {}M 1M", 0x41 + n, 3 * n + 1))
                .arg(&path),
        );
    }
    let vmx = vm.join("web01.vmx");
    std::fs::write(&vmx, fixture("exports/web01.vmx")).expect("write vmx");
    vmx
}

#[test]
fn a_vmx_folder_imports_every_vmdk_kind_and_converts_each_disk() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let vmx = build_vmx_folder(&dir);
    let r = import(&dir, "--vmx", &vmx);
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("vmx_import_summary", redact(&r.stdout, &dir));
    let manifest = read_json(&dir.join("out/manifest.json"));
    assert_eq!(
        manifest["source"]["vm_id"],
        "52112233-4455-6677-8899-aabbccddeeff"
    );
    assert_eq!(
        manifest["source"]["uuid"],
        "564d1234-5678-9abc-def0-123456789abc"
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("out/manifest.json"))
        .args(["--progress", "none"]));
    assert_eq!(
        r.code,
        Some(0),
        "conversion failed:\n{}{}",
        r.stdout,
        r.stderr
    );
    // Boot order: scsi0:0, sata0:1, then nvme0:0, then ide0:0 (the VMX's families in order).
    for (n, name) in ["web01.vmdk", "web01_1.vmdk", "web01_3.vmdk", "web01_2.vmdk"]
        .into_iter()
        .enumerate()
    {
        assert!(
            identical(
                &dir.join(&format!("vm/{name}")),
                "vmdk",
                &dir.join(&format!("out/disk{n}.qcow2")),
                "qcow2"
            ),
            "disk{n} is not {name}"
        );
    }
}

/// Gives `vmx`'s scsi0:0 a snapshot: a delta on top of web01.vmdk, as VMware leaves it, with
/// writes of its own (so the base and the current state differ).
fn take_snapshot(dir: &TestDir, vmx: &Path) {
    let delta = dir.join("vm/web01-000001.vmdk");
    run_ok(
        Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "vmdk",
                "-F",
                "vmdk",
                "-b",
                "web01.vmdk",
            ])
            .arg(&delta),
    );
    run_ok(
        Command::new("qemu-io")
            .args(["-f", "vmdk", "-c", "write -P 0xab 0 64k"])
            .arg(&delta),
    );
    let text = std::fs::read_to_string(vmx)
        .expect("vmx")
        .replace("\"web01.vmdk\"", "\"web01-000001.vmdk\"");
    std::fs::write(vmx, text).expect("write vmx");
}

/// `hyper2kvm --manifest <manifest> --output-dir <dir>/<out>`
fn run_manifest(dir: &TestDir, manifest: &Path, out: &str) -> Run {
    run(hyper2kvm()
        .arg("--manifest")
        .arg(manifest)
        .arg("--output-dir")
        .arg(dir.join(out))
        .args(["--progress", "none"]))
}

#[test]
fn a_vmx_snapshot_converts_from_its_current_state_through_its_chain() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let vmx = build_vmx_folder(&dir);
    take_snapshot(&dir, &vmx);
    let r = import(&dir, "--vmx", &vmx);
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("vmx_snapshot_import_summary", redact(&r.stdout, &dir));
    let manifest_path = dir.join("out/manifest.json");
    let manifest = read_json(&manifest_path);
    let disk0 = &manifest["disks"][0];
    assert_eq!(
        disk0["local_path"],
        dir.join("vm/web01-000001.vmdk").display().to_string()
    );
    assert_eq!(
        disk0["backing_chain"],
        serde_json::json!([dir.join("vm/web01.vmdk").display().to_string()])
    );
    assert!(disk0.get("checksum").is_none(), "{disk0}");

    let r = run_manifest(&dir, &manifest_path, "out");
    assert_eq!(
        r.code,
        Some(0),
        "conversion failed:\n{}{}",
        r.stdout,
        r.stderr
    );
    let out = dir.join("out/disk0.qcow2");
    assert!(
        identical(&dir.join("vm/web01-000001.vmdk"), "vmdk", &out, "qcow2"),
        "disk0 is not the current state"
    );
    let base = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "vmdk", "-F", "qcow2"])
        .arg(dir.join("vm/web01.vmdk"))
        .arg(&out)
        .status()
        .expect("spawn qemu-img");
    assert_eq!(
        base.code(),
        Some(1),
        "disk0 is the base, not the current state"
    );
    for (n, name) in [
        (1, "web01_1.vmdk"),
        (2, "web01_3.vmdk"),
        (3, "web01_2.vmdk"),
    ] {
        assert!(
            identical(
                &dir.join(&format!("vm/{name}")),
                "vmdk",
                &dir.join(&format!("out/disk{n}.qcow2")),
                "qcow2"
            ),
            "disk{n} is not {name}"
        );
    }
}

#[test]
fn a_snapshot_whose_chain_is_not_the_declared_one_is_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let vmx = build_vmx_folder(&dir);
    take_snapshot(&dir, &vmx);
    let r = import(&dir, "--vmx", &vmx);
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    let imported = read_json(&dir.join("out/manifest.json"));
    let variant = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut m = imported.clone();
        edit(&mut m);
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&m).expect("json")).expect("write");
        path
    };

    // The chain names another file of the folder.
    let other = dir.join("vm/web01_3.vmdk").display().to_string();
    let wrong = variant("wrong.json", &|m| {
        m["disks"][0]["backing_chain"] = serde_json::json!([other])
    });
    let r = run_manifest(&dir, &wrong, "out-wrong");
    assert_ne!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("disk disk0: qemu-img reads")
            && all.contains("but the manifest's backing_chain is [")
            && all.contains("web01_3.vmdk]")
            && all.contains("web01.vmdk]"),
        "{all}"
    );
    assert!(!dir.join("out-wrong/disk0.qcow2").exists());

    // No chain declared, while the image has a backing file: today's refusal, with the way on.
    let missing = variant("missing.json", &|m| {
        m["disks"][0]
            .as_object_mut()
            .expect("disk")
            .remove("backing_chain");
    });
    let r = run_manifest(&dir, &missing, "out-missing");
    assert_ne!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("has a backing file (web01.vmdk) and the manifest declares no backing_chain")
            && all.contains("Do not use the chain's base")
            && all.contains("declared in disks[].backing_chain"),
        "{all}"
    );

    // A chain declared for an image that has none (the base named as local_path).
    let base = variant("base.json", &|m| {
        m["disks"][0]["local_path"] = m["disks"][0]["backing_chain"][0].clone();
    });
    let r = run_manifest(&dir, &base, "out-base");
    assert_ne!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("qemu-img reports no backing file"), "{all}");

    // Repairs in place would write into the VM's current delta.
    let in_place = variant("in-place.json", &|m| {
        m["pipeline"] = serde_json::json!({
            "fix": {"enabled": true, "allow_in_place": true, "disk_backup": false},
            "convert": {"enabled": false},
        })
    });
    let r = run_manifest(&dir, &in_place, "out-in-place");
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("repairing it in place would write into that delta"),
        "{}",
        r.stderr
    );

    // The parent is pinned like the source: one touched after convert fails the VM.
    let touch = dir.write(
        "touch-parent.sh",
        "#!/bin/sh\nsleep 0.05\ntouch vm/web01.vmdk\n",
    );
    std::fs::set_permissions(&touch, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let touched = variant("touched.json", &|m| {
        m["hooks"] = serde_json::json!({"post_convert": [
            {"type": "script", "path": "touch-parent.sh", "working_directory": "."}
        ]})
    });
    let r = run_manifest(&dir, &touched, "out-touched");
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("disk disk0: backing file 1 of the source (backing_chain[0])")
            && all.contains("web01.vmdk changed after convert"),
        "{all}"
    );

    // A checksum would cover the delta only: refused when the manifest is loaded.
    let summed = variant("summed.json", &|m| {
        m["disks"][0]["checksum"] = serde_json::Value::from(format!("sha256:{}", "0".repeat(64)))
    });
    let r = run_manifest(&dir, &summed, "out-summed");
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("disks[0].checksum would cover local_path only"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_vmx_with_a_missing_extent_or_encryption_is_refused() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let vmx = build_vmx_folder(&dir);
    std::fs::remove_file(dir.join("vm/web01_1-s002.vmdk")).ok();
    std::fs::remove_file(dir.join("vm/web01_1-s001.vmdk")).expect("rm extent");
    let r = import(&dir, "--vmx", &vmx);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("web01_1.vmdk: extent 1: web01_1-s001.vmdk does not exist"),
        "{}",
        r.stderr
    );
    let text = std::fs::read_to_string(&vmx).expect("vmx");
    std::fs::write(
        &vmx,
        format!("{text}encryption.keySafe = \"vmware:key/list/...\"\n"),
    )
    .expect("write vmx");
    let r = import(&dir, "--vmx", &vmx);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("the VM is encrypted"), "{}", r.stderr);
    assert!(!dir.join("out").exists());
}
