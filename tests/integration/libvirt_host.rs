//! `libvirt_integration` against a real libvirtd (qemu driver, `qemu:///system`) that the tests
//! start themselves ([`Libvirtd`]): a converted VM defined with its disks as volumes of a new
//! storage pool, snapshotted and marked to autostart; a re-run that updates its own domain; a
//! domain of another VM refused before any disk is read and replaced only with `--overwrite`;
//! and a start that does not boot rolled back to nothing. The boot proven under libvirt on the
//! real Debian guest is in `boot.rs`.
//!
//! Results are read back from libvirt (`virsh`), not only from the report.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::*;

/// Undefines a test's domain and pool however the test ends.
struct Forget<'a> {
    lv: &'a Libvirtd,
    domain: &'static str,
    pool: Option<&'static str>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.lv.forget(self.domain, self.pool);
    }
}

/// A test directory qemu (running as libvirt's own user) can traverse.
fn open_dir() -> TestDir {
    let dir = TestDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A manifest converting one blank 16 MiB raw disk of VM `name`, with `libvirt` as its
/// libvirt_integration section.
fn manifest(dir: &TestDir, name: &str, libvirt: Value) -> std::path::PathBuf {
    let image = dir.join("disk.raw");
    run_ok(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&image)
            .arg("16M"),
    );
    let path = dir.join("vm.json");
    write_json(
        &path,
        &json!({
            "manifest_version": "1.0",
            "source": {"provider": "vsphere", "vm_name": name, "vm_id": "vm-101"},
            "vm": {"cpu": 1, "mem_gb": 1, "firmware": "bios"},
            "disks": [disk("d0", "raw", &image)],
            "pipeline": {"convert": {"enabled": true}, "validate": {"boot_test": {"timeout": 5}}},
            "output": {"directory": dir.join("out")},
            "libvirt_integration": libvirt,
        }),
    );
    path
}

fn stage(report: &Value) -> &Value {
    &report["pipeline"]["stages"]["libvirt_integration"]
}

/// The entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
#[cfg_attr(
    any(
        not_root,
        missing_tool = "qemu-img",
        missing_tool = "virsh",
        missing_tool = "libvirtd",
        missing_tool = "virtlogd"
    ),
    ignore = "needs root, qemu-img and libvirtd (install: scripts/install-deps.sh full)"
)]
fn a_vm_is_defined_into_a_new_pool_and_a_rerun_updates_it() {
    let Some(lv) = Libvirtd::get() else { return };
    let (name, pool) = ("h2k-t-define", "h2k-t-define");
    lv.forget(name, Some(pool));
    let _forget = Forget {
        lv: &lv,
        domain: name,
        pool: Some(pool),
    };
    let dir = open_dir();
    let pool_dir = dir.join("pool");
    let path = manifest(
        &dir,
        name,
        json!({"enabled": true, "import_to_pool": pool, "pool_path": pool_dir,
               "create_snapshot": true, "autostart": true}),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("out/report.json"));
    let s = stage(&report);
    assert_eq!(s["success"], true, "{s:#}");
    let res = &s["result"];
    assert_eq!(res["action"], "defined", "{res:#}");
    assert_eq!(res["pool"]["created"], true);
    let volume = pool_dir.join(format!("{name}-d0.qcow2"));
    assert_eq!(res["volumes"][0]["path"], json!(volume));
    assert_eq!(res["volumes"][0]["how"], "copied");
    assert!(
        dir.join("out/d0.qcow2").is_file(),
        "copied, so the output stays"
    );

    // What libvirt has.
    let uuid = lv.virsh(&["domuuid", name]).trim().to_owned();
    assert_eq!(json!(uuid), res["uuid"]);
    let xml = lv.virsh(&["dumpxml", "--inactive", name]);
    assert!(
        xml.contains(&format!("<source file='{}'", volume.display())),
        "{xml}"
    );
    assert!(
        xml.contains("urn:hyper2kvm:domain:1"),
        "our metadata is kept"
    );
    assert!(
        lv.virsh(&["snapshot-list", "--name", name])
            .contains("pre-first-boot")
    );
    assert!(
        lv.virsh(&["dominfo", name])
            .lines()
            .any(|l| l.starts_with("Autostart:") && l.contains("enable"))
    );
    assert!(
        lv.virsh(&["vol-list", pool])
            .contains(&format!("{name}-d0.qcow2"))
    );
    assert_eq!(
        lv.virsh(&["domstate", name]).trim(),
        "shut off",
        "not started"
    );
    // The file written is the one defined: it points at the volume.
    let written = std::fs::read_to_string(dir.join(&format!("out/{name}.xml"))).expect("xml");
    assert!(
        written.contains(&format!("file=\"{}\"", volume.display())),
        "{written}"
    );

    // Again, from the same manifest: the same VM updates its own domain.
    let r =
        run(hyper2kvm()
            .arg("--manifest")
            .arg(&path)
            .args(["--progress", "none", "--overwrite"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("out/report.json"));
    let res = &stage(&report)["result"];
    assert_eq!(res["action"], "updated", "{res:#}");
    assert_eq!(res["uuid"], json!(uuid), "the same VM keeps its UUID");
    assert_eq!(res["pool"]["created"], false);
    assert_eq!(res["volumes"][0]["replaced"], true);
    assert_eq!(
        res["replaced"],
        json!([]),
        "its own domain is not another VM's"
    );
    assert_eq!(lv.virsh(&["domuuid", name]).trim(), uuid);
    assert_eq!(
        entries(&pool_dir),
        [format!("{name}-d0.qcow2")],
        "nothing set aside is left"
    );
    assert!(
        !entries(&dir.join("out"))
            .iter()
            .any(|e| e.contains("replaced")),
        "{:?}",
        entries(&dir.join("out"))
    );
}

/// A minimal domain of another VM, as an admin might have defined it.
fn foreign_domain(dir: &TestDir, name: &str, uuid: &str) -> std::path::PathBuf {
    dir.write(
        "foreign.xml",
        &format!(
            "<domain type='kvm'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os><type arch='x86_64' machine='q35'>hvm</type></os>\n</domain>\n"
        ),
    )
}

#[test]
#[cfg_attr(
    any(
        not_root,
        missing_tool = "qemu-img",
        missing_tool = "virsh",
        missing_tool = "libvirtd",
        missing_tool = "virtlogd"
    ),
    ignore = "needs root, qemu-img and libvirtd (install: scripts/install-deps.sh full)"
)]
fn another_vms_domain_is_refused_before_converting_and_replaced_only_with_overwrite() {
    let Some(lv) = Libvirtd::get() else { return };
    let name = "h2k-t-foreign";
    lv.forget(name, None);
    let _forget = Forget {
        lv: &lv,
        domain: name,
        pool: None,
    };
    let dir = open_dir();
    let foreign_uuid = "6b3c2a4e-1f0d-4c3a-9b2e-0123456789ab";
    lv.virsh(&[
        "define",
        &foreign_domain(&dir, name, foreign_uuid)
            .display()
            .to_string(),
    ]);
    let path = manifest(&dir, name, json!({"enabled": true}));

    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let expected = format!(
        "domain '{name}' (uuid {foreign_uuid}) already exists on qemu:///system and is another \
         VM's (hyper2kvm did not define it for this VM); it is never replaced without \
         --overwrite or libvirt_integration.overwrite_domain: true"
    );
    assert!(r.stdout.contains(&expected), "{}", r.stdout);
    let report = read_json(&dir.join("out/report.json"));
    let stages = &report["pipeline"]["stages"];
    assert_eq!(stages["load_manifest"]["success"], false, "{stages:#}");
    assert!(stages.get("convert").is_none(), "nothing was converted");
    assert!(!dir.join("out/d0.qcow2").exists());
    assert_eq!(
        lv.virsh(&["domuuid", name]).trim(),
        foreign_uuid,
        "untouched"
    );

    let r =
        run(hyper2kvm()
            .arg("--manifest")
            .arg(&path)
            .args(["--progress", "none", "--overwrite"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("out/report.json"));
    let res = &stage(&report)["result"];
    assert_eq!(res["action"], "replaced", "{res:#}");
    assert_eq!(res["replaced"][0]["uuid"], foreign_uuid);
    let saved = res["replaced"][0]["saved_xml"].as_str().expect("saved");
    assert!(
        std::fs::read_to_string(saved)
            .expect("the replaced definition is kept")
            .contains(foreign_uuid)
    );
    let now = lv.virsh(&["domuuid", name]).trim().to_owned();
    assert_ne!(now, foreign_uuid);
    assert_eq!(json!(now), res["uuid"]);
    // No pool: the domain uses the converted disk where it is.
    assert!(
        lv.virsh(&["dumpxml", name])
            .contains(&format!("{}", dir.join("out/d0.qcow2").display()))
    );
}

#[test]
#[cfg_attr(
    any(
        not_root,
        missing_tool = "qemu-img",
        missing_tool = "qemu-system-x86_64",
        missing_tool = "virsh",
        missing_tool = "libvirtd",
        missing_tool = "virtlogd"
    ),
    ignore = "needs root, qemu-img, qemu-system and libvirtd (install: scripts/install-deps.sh full)"
)]
fn a_start_that_does_not_boot_is_rolled_back_to_nothing() {
    let Some(lv) = Libvirtd::get() else { return };
    assert!(require_tool("qemu-system-x86_64"));
    let (name, pool) = ("h2k-t-rollback", "h2k-t-rollback");
    lv.forget(name, Some(pool));
    let _forget = Forget {
        lv: &lv,
        domain: name,
        pool: Some(pool),
    };
    let dir = open_dir();
    let pool_dir = dir.join("pool");
    // A blank disk boots nothing: the console stays silent until the 5 s timeout.
    let path = manifest(
        &dir,
        name,
        json!({"enabled": true, "import_to_pool": pool, "pool_path": pool_dir,
               "auto_start": true}),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&path)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let report = read_json(&dir.join("out/report.json"));
    let s = stage(&report);
    assert_eq!(s["success"], false);
    let error = s["error"].as_str().expect("error");
    assert!(
        error.starts_with(&format!("domain '{name}' started but did not boot: no console line matched success_pattern within 5 s")),
        "{error}"
    );
    let res = &s["result"];
    assert_eq!(res["started"], true);
    assert_eq!(res["boot"]["result"], "failed");
    assert_eq!(res["boot"]["reason"], "timeout");
    let volume = pool_dir.join(format!("{name}-d0.qcow2"));
    assert_eq!(
        res["rolled_back"],
        json!([
            format!("stopped domain '{name}'"),
            format!("undefined domain '{name}'"),
            format!("removed volume {}", volume.display()),
            format!("removed storage pool '{pool}'"),
        ]),
        "{res:#}"
    );
    assert!(error.ends_with(&format!("rolled back: stopped domain '{name}'; undefined domain '{name}'; removed volume {}; removed storage pool '{pool}'", volume.display())), "{error}");
    // Nothing is left on the host, and the converted disk is still in the output directory.
    assert!(!lv.try_virsh(&["domuuid", name]).status.success());
    assert!(!lv.try_virsh(&["pool-info", pool]).status.success());
    assert!(
        !pool_dir.exists(),
        "the pool directory this run made is gone"
    );
    assert!(dir.join("out/d0.qcow2").is_file());
    assert_eq!(report["status"], "failed");
}
