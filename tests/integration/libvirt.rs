//! `--libvirt-xml`: the corpus of domain XMLs in tests/fixtures/libvirt, each imported into a
//! manifest (golden file), converted with real images, and the emitted domain (golden file)
//! validated by libvirt's schema and defined on the test driver. Bad inputs: exit 2, the element
//! named, nothing written.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Writes fixture `name` into `dir` with `@DIR@` (and any extra placeholders) filled in.
fn place_fixture(dir: &TestDir, name: &str, extra: &[(&str, &str)]) -> PathBuf {
    let mut text =
        fixture(&format!("libvirt/{name}.xml")).replace("@DIR@", &dir.path().display().to_string());
    for (k, v) in extra {
        text = text.replace(k, v);
    }
    dir.write("domain.xml", &text)
}

/// `hyper2kvm --libvirt-xml <xml> --output-dir <dir>/out`
fn import(dir: &TestDir, xml: &Path) -> Run {
    run(hyper2kvm()
        .arg("--libvirt-xml")
        .arg(xml)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .args(["--progress", "none"]))
}

/// The manifest as a golden file: run-specific text replaced.
fn redacted_manifest(dir: &TestDir, path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("manifest written");
    let text = redact(&text, dir);
    let stamp = regex_lite::Regex::new(r#""export_timestamp": "[^"]+""#).expect("regex");
    stamp
        .replace_all(&text, r#""export_timestamp": "[TIMESTAMP]""#)
        .into_owned()
}

/// Imports fixture `name` (its disks made first by `make_disks`), checks the manifest against
/// its golden file, converts it, checks the domain against its golden file, and has libvirt
/// validate and define it. Returns the test directory and the domain XML path.
fn round_trip(
    name: &str,
    domain_name: &str,
    make_disks: impl FnOnce(&TestDir),
) -> (TestDir, PathBuf) {
    let dir = TestDir::new();
    make_disks(&dir);
    let xml = place_fixture(&dir, name, &[]);
    let r = import(&dir, &xml);
    assert_eq!(r.code, Some(0), "import failed:\n{}{}", r.stdout, r.stderr);
    let manifest = dir.join("out/manifest.json");
    golden_settings().bind(|| {
        insta::assert_snapshot!(
            format!("{name}.manifest"),
            redacted_manifest(&dir, &manifest)
        );
    });

    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(
        r.code,
        Some(0),
        "conversion failed:\n{}{}",
        r.stdout,
        r.stderr
    );
    let domain = dir.join(&format!("out/{domain_name}.xml"));
    let text = std::fs::read_to_string(&domain).expect("domain XML written");
    golden_settings().bind(|| {
        insta::assert_snapshot!(format!("{name}.domain"), redact(&text, &dir));
    });
    let report = read_json(&dir.join("out/report.json"));
    let kinds: Vec<&str> = report["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter_map(|a| a["type"].as_str())
        .collect();
    assert_eq!(kinds.last(), Some(&"libvirt_domain"), "{kinds:?}");
    if require_libvirt_tools() {
        let defined = validate_and_define(&domain, domain_name);
        assert!(
            defined.contains(&format!("<name>{domain_name}</name>")),
            "{defined}"
        );
    }
    (dir, domain)
}

fn tools() -> bool {
    require_tool("qemu-img") && require_tool("qemu-io")
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn bios_network_round_trip() {
    if !tools() {
        return;
    }
    round_trip("bios-network", "bios-vm", |d| {
        make_image(&d.join("bios-vm.qcow2"), "qcow2", None)
    });
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn uefi_bridge_round_trip() {
    if !tools() {
        return;
    }
    round_trip("uefi-bridge", "uefi-vm", |d| {
        make_image(&d.join("uefi-vm.raw"), "raw", None)
    });
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn secureboot_windows_round_trip() {
    if !tools() {
        return;
    }
    let (_dir, domain) = round_trip("secureboot-windows", "win2k19", |d| {
        make_image(&d.join("win2k19.qcow2"), "qcow2", None)
    });
    let text = std::fs::read_to_string(domain).expect("read");
    assert!(text.contains("secure=\"yes\""), "{text}");
    assert!(text.contains("<smm state=\"on\"/>"), "{text}");
    assert!(text.contains("<clock offset=\"localtime\"/>"), "{text}");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn multi_disk_boot_order_round_trip() {
    if !tools() {
        return;
    }
    let (dir, domain) = round_trip("multi-disk-boot-order", "multi-vm", |d| {
        for (file, driver) in [
            ("data1.qcow2", "qcow2"),
            ("boot.qcow2", "qcow2"),
            ("data2.raw", "raw"),
            ("scratch.qcow2", "qcow2"),
        ] {
            make_image(&d.join(file), driver, None);
        }
    });
    let m = read_json(&dir.join("out/manifest.json"));
    let ids: Vec<&str> = m["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["vdb", "sda", "vda", "vdc"],
        "<boot order> first, then document order"
    );
    let text = std::fs::read_to_string(domain).expect("read");
    let vda = text.find("out/vdb.qcow2").expect("boot disk emitted");
    let vdd = text.find("out/vdc.qcow2").expect("last disk emitted");
    assert!(vda < vdd);
    // Every converted disk is identical to its source.
    for (id, file, driver) in [
        ("vdb", "boot.qcow2", "qcow2"),
        ("sda", "scratch.qcow2", "qcow2"),
        ("vda", "data1.qcow2", "qcow2"),
        ("vdc", "data2.raw", "raw"),
    ] {
        assert!(
            identical(
                &dir.join(file),
                driver,
                &dir.join(&format!("out/{id}.qcow2")),
                "qcow2"
            ),
            "{id}"
        );
    }
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn import_summary_names_the_next_command() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    for (file, driver) in [
        ("data1.qcow2", "qcow2"),
        ("boot.qcow2", "qcow2"),
        ("data2.raw", "raw"),
        ("scratch.qcow2", "qcow2"),
    ] {
        make_image(&dir.join(file), driver, None);
    }
    let xml = place_fixture(&dir, "multi-disk-boot-order", &[]);
    let r = import(&dir, &xml);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    insta::assert_snapshot!(redact(&r.stdout, &dir));
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn block_device_backed_by_a_file() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let backing = dir.join("block.img");
    make_image(&backing, "raw", None);
    let xml = place_fixture(
        &dir,
        "block-device",
        &[("@BLOCK@", &backing.display().to_string())],
    );
    let r = import(&dir, &xml);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    golden_settings().bind(|| {
        insta::assert_snapshot!(
            "block-device.manifest",
            redacted_manifest(&dir, &dir.join("out/manifest.json"))
        );
    });
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("out/manifest.json"))
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(identical(
        &backing,
        "raw",
        &dir.join("out/vda.qcow2"),
        "qcow2"
    ));
}

/// A real block device: its size is read from the device (stat says 0), and it converts.
#[test]
#[cfg_attr(
    any(
        not_root,
        missing_tool = "losetup",
        missing_tool = "qemu-img",
        missing_tool = "qemu-io"
    ),
    ignore = "needs root, losetup, qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn block_device_on_a_loop_device() {
    if !tools() || !require_root() || !require_tool("losetup") {
        return;
    }
    let dir = TestDir::new();
    let backing = dir.join("block.img");
    make_image(&backing, "raw", None);
    let dev = LoopDevice::attach(&backing);
    let xml = place_fixture(
        &dir,
        "block-device",
        &[("@BLOCK@", &dev.path.display().to_string())],
    );
    let r = import(&dir, &xml);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let m = read_json(&dir.join("out/manifest.json"));
    assert_eq!(
        m["disks"][0]["bytes"],
        64 * 1024 * 1024,
        "size read from the device"
    );
    assert_eq!(m["disks"][0]["local_path"], dev.path.display().to_string());
    assert_eq!(m["metadata"]["disks"]["vda"]["source_type"], "block");
    assert_eq!(m["disks"][0]["checksum"], sha256(&backing));
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(dir.join("out/manifest.json"))
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("bytes,"),
        "no size-mismatch warning for a device: {}",
        r.stdout
    );
    assert!(identical(
        &backing,
        "raw",
        &dir.join("out/vda.qcow2"),
        "qcow2"
    ));
}

/// libvirt's whole unit table, each through the binary.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn every_memory_unit() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(dir.join("disk.raw"))
            .arg("1M"),
    );
    let cases: &[(&str, u64, u64, u64)] = &[
        // unit, value, bytes, vm.mem_gb
        ("m", 214, 214 << 20, 1),
        ("b", 1 << 30, 1 << 30, 1),
        ("bytes", 3 << 30, 3 << 30, 3),
        ("KB", 2_000_000, 2_000_000_000, 2),
        ("k", 1 << 20, 1 << 30, 1),
        ("KiB", 2 << 20, 2 << 30, 2),
        ("MB", 1500, 1_500_000_000, 2),
        ("M", 1024, 1 << 30, 1),
        ("MiB", 4096, 4 << 30, 4),
        ("GB", 2, 2_000_000_000, 2),
        ("G", 2, 2 << 30, 2),
        ("GiB", 16, 16 << 30, 16),
        ("TB", 1, 1_000_000_000_000, 932),
        ("T", 1, 1 << 40, 1024),
        ("TiB", 1, 1 << 40, 1024),
    ];
    for (unit, value, bytes, gib) in cases {
        let xml = place_fixture(
            &dir,
            "memory-unit",
            &[("@UNIT@", unit), ("@VALUE@", &value.to_string())],
        );
        let out = dir.join(&format!("out-{unit}"));
        let r = run(hyper2kvm()
            .arg("--libvirt-xml")
            .arg(&xml)
            .arg("--output-dir")
            .arg(&out)
            .arg("--no-compute-checksums"));
        assert_eq!(r.code, Some(0), "{unit}: {}", r.stderr);
        let m = read_json(&out.join("manifest.json"));
        assert_eq!(m["metadata"]["memory_bytes"], *bytes, "{unit}");
        assert_eq!(m["vm"]["mem_gb"], *gib, "{unit}");
        assert_eq!(m["vm"]["mem_mib"], bytes.div_ceil(1 << 20), "{unit}");
    }
}

/// Config-file form: `cmd: libvirt-xml`, paths relative to the config, another manifest name,
/// checksums off (no checksum key at all); and the `--xml-path` alias.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn config_cmd_and_aliases() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("bios-vm.qcow2"), "qcow2", None);
    place_fixture(&dir, "bios-network", &[]);
    let config = dir.write(
        "import.yaml",
        "cmd: libvirt-xml\nlibvirt_xml: domain.xml\noutput_dir: migrated\nmanifest_filename: vm.json\ncompute_checksums: false\nprogress: none\n",
    );
    let r = run(hyper2kvm().arg("--config").arg(&config));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let manifest = dir.join("migrated/vm.json");
    let text = std::fs::read_to_string(&manifest).expect("written under its configured name");
    assert!(!text.contains("checksum"), "{text}");
    assert!(
        r.stdout.contains(&format!(
            "Next steps: hyper2kvm --manifest {}",
            manifest.display()
        )),
        "{}",
        r.stdout
    );
    // The manifest loads as it is.
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .arg("--dump-config"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    // --xml-path, and the command line's --compute-checksums beats nothing; a second import
    // into the same place needs --overwrite.
    let again = run(hyper2kvm()
        .arg("--xml-path")
        .arg(dir.join("domain.xml"))
        .arg("--output-dir")
        .arg(dir.join("migrated"))
        .args(["--manifest-filename", "vm.json", "--progress", "none"]));
    assert_eq!(again.code, Some(2));
    assert!(
        again
            .stderr
            .contains("already exists; remove it or pass --overwrite"),
        "{}",
        again.stderr
    );
    let again = run(hyper2kvm()
        .arg("--xml-path")
        .arg(dir.join("domain.xml"))
        .arg("--output-dir")
        .arg(dir.join("migrated"))
        .args([
            "--manifest-filename",
            "vm.json",
            "--overwrite",
            "--progress",
            "none",
        ]));
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let m = read_json(&manifest);
    assert_eq!(
        m["disks"][0]["checksum"],
        sha256(&dir.join("bios-vm.qcow2"))
    );
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn dry_run_prints_the_manifest_and_writes_nothing() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("bios-vm.qcow2"), "qcow2", None);
    let xml = place_fixture(&dir, "bios-network", &[]);
    let r = run(hyper2kvm()
        .arg("--libvirt-xml")
        .arg(&xml)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .arg("--dry-run"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!dir.join("out").exists());
    assert!(
        r.stdout.contains("was not written; the manifest follows"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\"manifest_version\": \"1.0\""),
        "{}",
        r.stdout
    );
}

#[test]
fn usage_errors() {
    let dir = TestDir::new();
    let xml = dir.write("d.xml", "<domain/>");
    let r = run(hyper2kvm().arg("--libvirt-xml").arg(&xml));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(r.stderr, @"error: --libvirt-xml needs --output-dir DIR (or output_dir in the config): the directory the manifest is written to, and where the converted disks will go");
    let cfg = dir.write("c.yaml", "cmd: libvirt-xml\noutput_dir: out\n");
    let r = run(hyper2kvm().arg("--config").arg(&cfg));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(r.stderr, @"error: libvirt-xml mode requires --libvirt-xml <path> or --xml-path <path>");
    let cfg = dir.write("c2.yaml", "cmd: local\n");
    let r = run(hyper2kvm().arg("--config").arg(&cfg));
    assert_eq!(r.code, Some(2));
    insta::assert_snapshot!(r.stderr, @"error: unknown cmd 'local': this version of hyper2kvm supports cmd: libvirt-xml (a manifest needs no cmd: pass --manifest FILE)");
    let r = run(hyper2kvm().arg("--libvirt-xml").arg(&xml).args([
        "--output-dir",
        "x",
        "--manifest-filename",
        "../m.json",
    ]));
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("must be a file name, not a path"),
        "{}",
        r.stderr
    );
    assert_eq!(
        tree(dir.path()),
        ["c.yaml", "c2.yaml", "d.xml"],
        "nothing written"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 2, a message naming the element, nothing written.

fn rejected(dir: &TestDir, xml: &str) -> String {
    let path = dir.write("domain.xml", xml);
    rejected_file(dir, &path)
}

fn rejected_file(dir: &TestDir, path: &Path) -> String {
    let before = tree(dir.path());
    let r = import(dir, path);
    assert_eq!(
        r.code,
        Some(2),
        "expected exit 2:\n{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "", "nothing on stdout");
    assert_eq!(tree(dir.path()), before, "nothing was written");
    assert!(!dir.join("out").exists(), "no output directory");
    redact(&r.stderr, dir)
}

#[test]
fn not_xml() {
    let dir = TestDir::new();
    let err = rejected(&dir, "{\"manifest_version\": \"1.0\", \"disks\": []}\n");
    insta::assert_snapshot!(err, @r#"error: [TMP]/domain.xml is a VM manifest (it has "manifest_version" and "disks"), not a libvirt domain XML: run hyper2kvm --manifest [TMP]/domain.xml"#);
    // JSON that is no manifest is still an XML syntax error.
    let err = rejected(&dir, "{\"name\": \"web01\"}\n");
    insta::assert_snapshot!(err, @r#"error: Failed to parse domain XML [TMP]/domain.xml: line 1, column 1: text outside the root element ('{"name": "web01"}'); this is not an XML document"#);
}

#[test]
fn truncated_xml() {
    let dir = TestDir::new();
    let full = fixture("libvirt/bios-network.xml");
    let cut = &full[..full.find("<source file").expect("has a disk")];
    let err = rejected(&dir, cut);
    insta::assert_snapshot!(err, @"error: Failed to parse domain XML [TMP]/domain.xml: line 28, column 7: the document ends inside <disk> (opened at line 26): the file is truncated");
}

#[test]
fn doctype_with_entities_is_refused() {
    let dir = TestDir::new();
    let laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE domain [\n <!ENTITY lol \"lol\">\n <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n]>\n<domain><name>&lol3;</name></domain>\n";
    let err = rejected(&dir, laughs);
    insta::assert_snapshot!(err, @"error: Failed to parse domain XML [TMP]/domain.xml: line 2, column 1: a DOCTYPE declaration is refused: it can declare entities (expansion bombs, external files); libvirt never writes one");
    let external = "<!DOCTYPE domain [<!ENTITY pw SYSTEM \"file:///etc/passwd\">]><domain><name>&pw;</name></domain>";
    let err = rejected(&dir, external);
    assert!(err.contains("DOCTYPE declaration is refused"), "{err}");
    let undeclared = "<domain>\n  <name>&pw;</name>\n</domain>";
    let err = rejected(&dir, undeclared);
    insta::assert_snapshot!(err, @"error: Failed to parse domain XML [TMP]/domain.xml: line 2, column 9: reference to the entity &pw; refused: only XML's predefined entities are allowed (entities are never expanded)");
}

/// 50 MB is refused from its size alone: it is never read into memory.
#[test]
fn fifty_megabyte_xml_is_refused_unread() {
    let dir = TestDir::new();
    let path = dir.join("domain.xml");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        f.write_all(b"<domain><name>big</name><description>")
            .expect("write");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            f.write_all(&chunk).expect("write");
        }
        f.write_all(b"</description><devices/></domain>\n")
            .expect("write");
    }
    let started = std::time::Instant::now();
    let err = rejected_file(&dir, &path);
    assert!(started.elapsed().as_secs() < 5, "refused quickly");
    insta::assert_snapshot!(err, @"error: domain XML [TMP]/domain.xml is 52428871 bytes; the limit is 10485760 bytes (virsh define's own limit; a domain definition is a few KiB)");
}

#[test]
fn no_devices() {
    let dir = TestDir::new();
    let err = rejected(
        &dir,
        "<domain type='kvm'>\n  <name>x</name>\n  <memory>1048576</memory>\n</domain>\n",
    );
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (1 problem):
      - /domain/devices: line 1: <domain> has no <devices>: there are no disks to migrate
    ");
}

/// An Arm guest (libvirt's `virt` machine with AAVMF firmware) is refused by name: as an x86_64
/// domain it could never boot.
#[test]
fn a_non_x86_guest_is_refused() {
    let dir = TestDir::new();
    let err = rejected(
        &dir,
        "<domain type='kvm'>\n  <name>arm-builder</name>\n  <memory unit='GiB'>4</memory>\n  <os>\n    <type arch='aarch64' machine='virt'>hvm</type>\n    <loader readonly='yes' type='pflash'>/usr/share/AAVMF/AAVMF_CODE.fd</loader>\n  </os>\n  <devices>\n    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/arm.qcow2'/><target dev='vda' bus='virtio'/></disk>\n  </devices>\n</domain>\n",
    );
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (1 problem):
      - /domain/os/type/@arch: line 5: <os><type arch='aarch64'>: hyper2kvm makes x86_64 KVM domains, which cannot boot a guest built for aarch64 (expected x86_64 or i686)
    ");
}

#[test]
fn no_disks() {
    let dir = TestDir::new();
    let err = rejected(
        &dir,
        "<domain type='kvm'><name>x</name><devices>\n<disk type='file' device='cdrom'><target dev='sda'/></disk>\n<disk type='volume'><source pool='p' volume='v'/><target dev='vda'/></disk>\n</devices></domain>",
    );
    insta::assert_snapshot!(err, @r"
    error: No disks found in domain XML [TMP]/domain.xml; every disk was skipped:
      - disk vda (/domain/devices/disk[2], line 3): a storage pool volume (pool 'p', volume 'v') is not supported; find its file with `virsh vol-path --pool p v` and change the disk to <disk type='file'>
    ");
}

#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn missing_disk_files_are_listed() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    let xml = "<domain type='kvm'><name>x</name><devices>\n<disk type='file'><driver type='qcow2'/><source file='@DIR@/a.qcow2'/><target dev='vda'/></disk>\n<disk type='block'><source dev='@DIR@/b.raw'/><target dev='vdb'/></disk>\n</devices></domain>"
        .replace("@DIR@", &dir.path().display().to_string());
    let err = rejected(&dir, &xml);
    insta::assert_snapshot!(err, @r"
    error: No disks found in domain XML [TMP]/domain.xml; every disk was skipped:
      - disk vda (/domain/devices/disk[1], line 2): [TMP]/a.qcow2 does not exist
      - disk vdb (/domain/devices/disk[2], line 3): [TMP]/b.raw does not exist
    ");

    // With one disk left, the import goes on and says what it left out.
    make_image(&dir.join("a.qcow2"), "qcow2", None);
    let r = import(&dir, &dir.join("domain.xml"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("warning: not imported: disk vdb (/domain/devices/disk[2], line 3)"),
        "{}",
        r.stdout
    );
    let m = read_json(&dir.join("out/manifest.json"));
    assert_eq!(m["disks"].as_array().map(Vec::len), Some(1));
    assert!(
        m["notes"].to_string().contains("b.raw does not exist"),
        "{}",
        m["notes"]
    );
}

/// The boot disk's file is gone but a data disk is there: the import refuses, rather than
/// making the data disk the boot disk of a VM that would then never start.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn a_missing_boot_disk_is_refused() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("data.qcow2"), "qcow2", None);
    let xml = "<domain type='kvm'><name>x</name><devices>\n<disk type='file'><driver type='qcow2'/><source file='@DIR@/boot.qcow2'/><target dev='vda'/></disk>\n<disk type='file'><driver type='qcow2'/><source file='@DIR@/data.qcow2'/><target dev='vdb'/></disk>\n</devices></domain>"
        .replace("@DIR@", &dir.path().display().to_string());
    let err = rejected(&dir, &xml);
    insta::assert_snapshot!(err, @"error: the boot disk of domain XML [TMP]/domain.xml cannot be imported: disk vda (/domain/devices/disk[1], line 2): [TMP]/boot.qcow2 does not exist; disk vdb would become the boot disk and the VM would not start. Make the boot disk importable, or give the disk the VM boots from <boot order='1'/>");
}

#[test]
fn invalid_macs_and_unknown_memory_unit_all_at_once() {
    let dir = TestDir::new();
    let err = rejected(
        &dir,
        "<domain type='kvm'>\n<name>x</name>\n<memory unit='KiBs'>1024</memory>\n<devices>\n<disk type='file'><source file='/nonexistent/a.raw'/><target dev='vda'/></disk>\n<interface type='bridge'><mac address='52:54:00:zz:00:01'/><source bridge='br0'/></interface>\n<interface type='network'><mac address='01:00:5e:00:00:01'/><source network='default'/></interface>\n</devices>\n</domain>\n",
    );
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (3 problems):
      - /domain/memory: line 3: <memory unit='KiBs'>: unknown unit; libvirt's units are b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB
      - /domain/devices/interface[1]/mac/@address: line 6: <mac address='52:54:00:zz:00:01'> is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)
      - /domain/devices/interface[2]/mac/@address: line 7: <mac address='01:00:5e:00:00:01'>: 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC
    ");
}

#[test]
fn wrong_root_and_missing_file() {
    let dir = TestDir::new();
    let err = rejected(&dir, "<network><name>default</name></network>");
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (1 problem):
      - /network: line 1: the root element is <network>, expected <domain> (a file written by virsh dumpxml)
    ");
    let r = import(&dir, &dir.join("nope.xml"));
    assert_eq!(r.code, Some(2));
    assert_eq!(
        redact(&r.stderr, &dir),
        "error: Domain XML not found: [TMP]/nope.xml\n"
    );
}

/// The Python tool's configuration form: `hyper2kvm --config cfg.yaml` with `cmd: libvirt-xml`,
/// `libvirt_xml` and `output_dir` (both relative to the config file) imports the domain.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn config_file_with_cmd_libvirt_xml() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("bios-vm.qcow2"), "qcow2", None);
    let xml = place_fixture(&dir, "bios-network", &[]);
    let name = xml.file_name().expect("a file name").to_string_lossy();
    let cfg = dir.write(
        "etc/cfg.yaml",
        &format!("cmd: libvirt-xml\nlibvirt_xml: ../{name}\noutput_dir: ../out\ncompute_checksums: false\n"),
    );
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&cfg)
        .args(["--progress", "none"])
        .current_dir("/"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let manifest = read_json(&dir.join("out/manifest.json"));
    assert_eq!(manifest["source"]["vm_name"], "bios-vm", "{manifest:#}");
}

/// A configuration file with no real directory (`--config <(...)`, a pipe under /dev/fd): its
/// relative paths resolve against the current directory.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "bash"
    ),
    ignore = "needs qemu-img, qemu-io and bash (install: scripts/install-deps.sh core)"
)]
fn config_from_a_pipe_resolves_against_the_current_directory() {
    if !tools() || !require_tool("bash") {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("bios-vm.qcow2"), "qcow2", None);
    let xml = place_fixture(&dir, "bios-network", &[]);
    let name = xml.file_name().expect("a file name").to_string_lossy();
    let bin = hyper2kvm().get_program().to_owned();
    let r = run(std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec \"$0\" --progress none --config <(printf 'cmd: libvirt-xml\\nlibvirt_xml: {name}\\noutput_dir: out\\ncompute_checksums: false\\n')"
        ))
        .arg(bin)
        .env_remove("RUST_LOG")
        .current_dir(dir.path()));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(dir.join("out/manifest.json").is_file(), "{}", r.stdout);
}

// ---------------------------------------------------------------------------------------------
// Faithful import: what libvirt's ESX driver writes, slices, chains, encryption, and what the
// run would refuse later.

/// ESX XML has no `<driver type>`: the VMDK is probed as what it is (not taken as raw), so the
/// conversion succeeds, and the emitted domain validates.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn esx_vmdk_without_a_driver_type_is_probed() {
    if !tools() {
        return;
    }
    let (dir, _domain) = round_trip("esx", "esx-vm", |d| {
        make_image(&d.join("esx-vm.vmdk"), "vmdk", None)
    });
    let m = read_json(&dir.join("out/manifest.json"));
    assert_eq!(m["disks"][0]["source_format"], "vmdk");
    assert_eq!(m["vm"]["mem_mib"], 214, "exact memory is carried");
    assert_eq!(
        m["vm"]["mem_gb"], 1,
        "and rounded up for the Python tool's readers"
    );
}

/// The same domain as the ESX driver really writes it, with a datastore path: refused with
/// where the file is on the ESX host and what to do.
#[test]
fn an_esx_datastore_path_is_refused_with_what_to_copy() {
    let dir = TestDir::new();
    let xml =
        fixture("libvirt/esx.xml").replace("@DIR@/esx-vm.vmdk", "[datastore1] esx-vm/esx-vm.vmdk");
    let err = rejected(&dir, &xml);
    insta::assert_snapshot!(err, @r"
    error: No disks found in domain XML [TMP]/domain.xml; every disk was skipped:
      - disk sda (/domain/devices/disk[1], line 22): '[datastore1] esx-vm/esx-vm.vmdk' is a file on the ESX datastore 'datastore1' (/vmfs/volumes/datastore1/esx-vm/esx-vm.vmdk on the ESX host), not a path on this machine; copy the disk's files here (the descriptor esx-vm/esx-vm.vmdk and its data file esx-vm/esx-vm-flat.vmdk for a flat disk, e.g. with scp from the ESX host, or download them from the datastore browser) and change <source file> to the local copy of the descriptor
    ");
}

/// A slice of a file is not the file: converting the whole file would give the guest another
/// disk, so the disk is refused (here the boot disk, so the import).
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn a_sliced_disk_is_refused() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("whole.raw"), "raw", None);
    let xml = "<domain type='kvm'>\n  <name>sliced</name>\n  <devices>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source file='@DIR@/whole.raw'>\n        <slices>\n          <slice type='storage' offset='1048576' size='33554432'/>\n        </slices>\n      </source>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n"
        .replace("@DIR@", &dir.path().display().to_string());
    let err = rejected(&dir, &xml);
    insta::assert_snapshot!(err, @r#"
    error: No disks found in domain XML [TMP]/domain.xml; every disk was skipped:
      - disk vda (/domain/devices/disk[1], line 4): <source><slices><slice type='storage' offset='1048576' size='33554432'> shows the guest only 33554432 bytes of [TMP]/whole.raw from byte 1048576; hyper2kvm converts whole files, and the guest would see a different disk. Extract the slice first (qemu-img convert -O raw 'json:{"driver":"raw","offset":1048576,"size":33554432,"file":{"driver":"file","filename":"[TMP]/whole.raw"}}' slice.raw) and point the disk at slice.raw without <slices>
    "#);
}

/// An overlay on a base: the conversion refuses chains, so the import does, and the advice is
/// to flatten from the top, never to use the base.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn a_backing_chain_is_refused_with_flattening_advice() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("base.qcow2"), "qcow2", None);
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(dir.join("base.qcow2"))
            .arg(dir.join("top.qcow2")),
    );
    let xml = "<domain type='kvm'>\n  <name>chain</name>\n  <devices>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='@DIR@/top.qcow2'/>\n      <backingStore type='file'>\n        <format type='qcow2'/>\n        <source file='@DIR@/base.qcow2'/>\n        <backingStore/>\n      </backingStore>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n"
        .replace("@DIR@", &dir.path().display().to_string());
    let err = rejected(&dir, &xml);
    assert!(!err.contains("list the chain's base"), "{err}");
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (1 problem):
      - /domain/devices/disk[1], line 4: disk vda: [TMP]/top.qcow2 has a backing file ([TMP]/base.qcow2); hyper2kvm converts standalone images only (a source is pinned by its own file, and a backing file is another). Flatten the chain from its top into one image, which reads through every backing file and keeps the overlay's writes: qemu-img convert -f qcow2 -O qcow2 [TMP]/top.qcow2 flat.qcow2, then point the disk at flat.qcow2. Do not use the chain's base instead: it lacks every write made in the overlay
    ");
}

/// Encrypted images are named as such, not as damaged: a LUKS-encrypted qcow2 with its driver
/// type, and a LUKS image without one (probed).
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn encrypted_images_are_reported_as_encrypted() {
    if !tools() {
        return;
    }
    let dir = TestDir::new();
    run_ok(
        std::process::Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "--object",
                "secret,id=s0,data=x",
                "-o",
            ])
            .arg("encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10")
            .arg(dir.join("enc.qcow2"))
            .arg("16M"),
    );
    run_ok(
        std::process::Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "luks",
                "--object",
                "secret,id=s0,data=x",
                "-o",
            ])
            .arg("key-secret=s0,iter-time=10")
            .arg(dir.join("enc.luks"))
            .arg("16M"),
    );
    let xml = "<domain type='kvm'>\n  <name>secret</name>\n  <devices>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='@DIR@/enc.qcow2'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    <disk type='file' device='disk'>\n      <source file='@DIR@/enc.luks'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n"
        .replace("@DIR@", &dir.path().display().to_string());
    let err = rejected(&dir, &xml);
    assert!(!err.contains("damaged"), "{err}");
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (2 problems):
      - /domain/devices/disk[1], line 4: disk vda: [TMP]/enc.qcow2 is an encrypted qcow2 image; hyper2kvm does not take secrets and cannot read it: decrypt it first (qemu-img convert --object secret,id=s0,file=KEYFILE --image-opts driver=qcow2,file.filename=IMAGE,encrypt.key-secret=s0 -O qcow2 plain.qcow2; for a LUKS image driver=luks,key-secret=s0) and point the domain at the decrypted copy
      - /domain/devices/disk[2], line 9: disk vdb: [TMP]/enc.luks is an encrypted luks image; hyper2kvm does not take secrets and cannot read it: decrypt it first (qemu-img convert --object secret,id=s0,file=KEYFILE --image-opts driver=qcow2,file.filename=IMAGE,encrypt.key-secret=s0 -O qcow2 plain.qcow2; for a LUKS image driver=luks,key-secret=s0) and point the domain at the decrypted copy
    ");
}

/// What the planner would refuse after converting every disk is refused at import: two NICs
/// with one MAC, and a name too long for the domain XML's file name.
#[test]
fn duplicate_macs_and_an_overlong_name_are_refused_at_import() {
    let dir = TestDir::new();
    let xml = format!(
        "<domain type='kvm'>\n  <name>{}</name>\n  <devices>\n    <disk type='file' device='disk'><source file='/nonexistent/a.raw'/><target dev='vda'/></disk>\n    <interface type='bridge'><mac address='52:54:00:aa:00:01'/><source bridge='br0'/></interface>\n    <interface type='network'><mac address='52:54:00:AA:00:01'/><source network='default'/></interface>\n  </devices>\n</domain>\n",
        "n".repeat(256)
    );
    let err = rejected(&dir, &xml);
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (2 problems):
      - /domain/name: line 2: <name> 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn… (196 more bytes)' cannot name the migrated domain: it is 256 bytes long; the domain XML file <name>.xml allows at most 251 bytes (a file name has at most 255)
      - /domain/devices/interface[2]/mac/@address: line 6: <mac address='52:54:00:aa:00:01'> is also the MAC of /domain/devices/interface[1], line 5; two NICs of one VM cannot share a MAC (expected a unique address per interface)
    ");
}

/// Port details survive: the port group, the Open vSwitch port with its interface id, the VLAN
/// trunk, the macvtap modes; the Linux guest's e1000 becomes virtio. The emitted domain
/// validates and defines.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn network_port_details_are_carried() {
    if !tools() {
        return;
    }
    let (_dir, domain) = round_trip("network-ports", "ports-vm", |d| {
        make_image(&d.join("ports-vm.qcow2"), "qcow2", None)
    });
    let text = std::fs::read_to_string(domain).expect("read");
    for part in [
        "portgroup=\"web\"",
        "<virtualport type=\"openvswitch\">",
        "interfaceid=\"09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f\"",
        "<vlan trunk=\"yes\">",
        "<tag id=\"42\" nativeMode=\"untagged\"/>",
        "mode=\"vepa\"",
        "mode=\"passthrough\"",
    ] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
    assert!(
        !text.contains("e1000"),
        "a Linux guest gets virtio:\n{text}"
    );
}

/// Windows 11 keeps what it needs: the TPM 2.0, the CPU topology and the Hyper-V
/// enlightenments reach the manifest and the emitted domain, which validates and defines; the
/// e1000e NIC stays e1000e.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn windows11_keeps_tpm_topology_and_hyperv() {
    if !tools() {
        return;
    }
    let (_dir, domain) = round_trip("windows11", "win11", |d| {
        make_image(&d.join("win11.qcow2"), "qcow2", None)
    });
    let text = std::fs::read_to_string(domain).expect("read");
    for part in [
        "<tpm model=\"tpm-crb\">",
        "<backend type=\"emulator\" version=\"2.0\"/>",
        "<topology sockets=\"1\" dies=\"1\" cores=\"2\" threads=\"2\"/>",
        "<hyperv mode=\"custom\">",
        "<spinlocks state=\"on\" retries=\"8191\"/>",
        "<direct state=\"on\"/>",
        "<vendor_id state=\"on\" value=\"KVM Hv\"/>",
        "<model type=\"e1000e\"/>",
    ] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
}

/// A topology that is not the vCPU count is refused, as libvirt refuses it.
#[test]
fn a_topology_that_is_not_the_vcpu_count_is_refused() {
    let dir = TestDir::new();
    let err = rejected(
        &dir,
        "<domain type='kvm'>\n  <name>x</name>\n  <vcpu>4</vcpu>\n  <cpu mode='host-passthrough'>\n    <topology sockets='2' cores='4' threads='1'/>\n  </cpu>\n  <devices>\n    <disk type='file'><source file='/nonexistent/a.raw'/><target dev='vda'/></disk>\n  </devices>\n</domain>\n",
    );
    insta::assert_snapshot!(err, @r"
    error: invalid domain XML [TMP]/domain.xml (1 problem):
      - /domain/cpu/topology: line 5: <topology> multiplies to 8 vCPUs (sockets x dies x cores x threads) but <vcpu> is 4: libvirt refuses such a domain (expected a product of 4)
    ");
}
