//! hyper2kvm as an installed tool: `-q` for scripts, `--version` with the build's commit and the
//! tools found here, and `make install` with its man page and shell completions.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A raw source, a manifest converting it (`good.json`) and one whose declared format is wrong,
/// so its VM fails (`failing.json`), and a batch of the good one.
fn manifests(dir: &TestDir) -> (PathBuf, PathBuf, PathBuf) {
    let src = dir.join("a.raw");
    make_image(&src, "raw", None);
    let good = dir.join("good.json");
    write_json(
        &good,
        &convert_manifest(vec![disk("d0", "raw", &src)], "qcow2", false),
    );
    let failing = dir.join("failing.json");
    let mut m = convert_manifest(vec![disk("d0", "vmdk", &src)], "qcow2", false);
    m["output"]["directory"] = serde_json::json!("failing-out");
    write_json(&failing, &m);
    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &serde_json::json!({"batch_version": "1.0", "shared_config": {"output_directory": "b"},
            "vms": [{"manifest": "good.json", "id": "ok"}]}),
    );
    (good, failing, batch)
}

/// `-q`: a success prints nothing at all, even when a config file asks for progress lines and
/// debug logging; a failure prints its summary on stdout and nothing but errors on stderr; the
/// exit codes are the usual ones.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn quiet_prints_nothing_for_a_success_and_the_summary_of_a_failure() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    let (good, failing, batch) = manifests(&dir);
    let loud = dir.write("loud.yaml", "verbose: 2\nprogress: lines\n");

    // Without -q the same run shows progress and debug lines: the config file is in effect.
    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&loud)
        .arg("--manifest")
        .arg(&good));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("DEBUG"), "{}", r.stderr);
    assert!(r.stdout.contains("VM testvm: succeeded"), "{}", r.stdout);

    let r = run(hyper2kvm()
        .arg("--config")
        .arg(&loud)
        .arg("--manifest")
        .arg(&good)
        .args(["--overwrite", "-q"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));

    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .arg("--quiet"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
    assert!(
        dir.join("b/batch_report.json").is_file(),
        "the report is written"
    );

    let r = run(hyper2kvm().arg("--manifest").arg(&failing).arg("-q"));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stdout.contains("VM testvm: FAILED"), "{}", r.stdout);
    assert!(r.stdout.contains("Reports: "), "{}", r.stdout);
    for line in r.stderr.lines() {
        assert!(
            !line.contains("WARN") && !line.contains("INFO") && !line.contains('%'),
            "not an error: {line}\n{}",
            r.stderr
        );
    }

    // What was asked for still prints.
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&good)
        .args(["-q", "--dry-run", "--overwrite"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.stdout.is_empty());
}

/// `-q` on an import that succeeds prints nothing and still writes the manifest.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "qemu-io"),
    ignore = "needs qemu-img and qemu-io (install: scripts/install-deps.sh core)"
)]
fn quiet_import_prints_nothing_and_writes_the_manifest() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") {
        return;
    }
    let dir = TestDir::new();
    make_image(&dir.join("bios-vm.qcow2"), "qcow2", None);
    let xml = dir.write(
        "domain.xml",
        &fixture("libvirt/bios-network.xml").replace("@DIR@", &dir.path().display().to_string()),
    );
    let r = run(hyper2kvm()
        .arg("--libvirt-xml")
        .arg(&xml)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .arg("-q"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
    assert!(dir.join("out/manifest.json").is_file());
}

/// -q cannot be combined with what it turns off; clap says so and exits 2.
#[test]
fn quiet_conflicts_with_verbose_and_progress() {
    for other in [&["-v"][..], &["--verbose"], &["--progress", "lines"]] {
        let r = run(hyper2kvm().arg("-q").args(other).args(["--manifest", "x"]));
        assert_eq!(r.code, Some(2), "{other:?}: {}", r.stderr);
        assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    }
}

/// `-V` is one line; `--version` adds the commit and the tools, found through PATH: here a PATH
/// that holds only qemu-img, so the rest are named with their Debian packages.
#[test]
#[cfg_attr(
    missing_tool = "qemu-img",
    ignore = "needs qemu-img (install: scripts/install-deps.sh core)"
)]
fn version_names_the_commit_and_the_tools_found() {
    if !require_tool("qemu-img") {
        return;
    }
    let r = run(hyper2kvm().arg("-V"));
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.stdout,
        format!("hyper2kvm {}\n", env!("CARGO_PKG_VERSION"))
    );

    let dir = TestDir::new();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::os::unix::fs::symlink(
        which::which("qemu-img").expect("qemu-img"),
        bin.join("qemu-img"),
    )
    .expect("symlink");
    let r = run(hyper2kvm().arg("--version").env("PATH", &bin));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let commit = regex_lite::Regex::new(r"(?m)^commit ([0-9a-f]{12}|unknown)$").expect("regex");
    assert!(commit.is_match(&r.stdout), "{}", r.stdout);
    let text = commit.replace(&r.stdout, "commit [COMMIT]");
    let version = regex_lite::Regex::new(r"qemu-img, qemu-img version .*").expect("regex");
    let text = version.replace(&text, "qemu-img, qemu-img version [VERSION]");
    insta::assert_snapshot!(redact(&text, &dir));
}

/// On the real PATH, every tool `which` finds is listed with where it is, and every other one
/// as not found.
#[test]
fn version_lists_each_tool_as_found_on_path() {
    let r = run(hyper2kvm().arg("--version"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for tool in [
        "qemu-img",
        "guestfish",
        "qemu-system-x86_64",
        "python3",
        "virsh",
    ] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{tool} ")))
            .unwrap_or_else(|| panic!("no line for {tool}:\n{}", r.stdout));
        match which::which(tool) {
            Ok(path) => assert!(line.contains(&path.display().to_string()), "{line}"),
            Err(_) => assert!(line.contains("not found (Debian package"), "{line}"),
        }
    }
    assert!(r.stdout.contains("kvm: not probed"), "{}", r.stdout);
}

fn installed(root: &Path) -> Vec<PathBuf> {
    [
        "bin/hyper2kvm",
        "share/man/man1/hyper2kvm.1",
        "share/bash-completion/completions/hyper2kvm",
        "share/zsh/site-functions/_hyper2kvm",
        "share/fish/vendor_completions.d/hyper2kvm.fish",
    ]
    .iter()
    .map(|rel| root.join(rel))
    .collect()
}

/// The binaries this test run built (target/debug), which `make` finds up to date.
fn make(dir: &Path, args: &[&str]) -> std::process::Output {
    let out_dir = Path::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let target_dir = out_dir.parent().expect("target dir");
    let mut cmd = Command::new("make");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--no-print-directory")
        .arg("PROFILE=dev")
        .arg(format!("TARGET_DIR={}", target_dir.display()))
        .arg(format!(
            "CARGO={}",
            std::env::var("CARGO").unwrap_or("cargo".into())
        ))
        .args(args);
    let out = cmd.output().expect("run make");
    assert!(
        out.status.success(),
        "make {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `make install PREFIX=…` (and with DESTDIR) installs the binary, a man page that renders, and
/// completions that bash loads and that name the options; `make uninstall` removes them.
#[test]
#[cfg_attr(
    any(missing_tool = "bash", missing_tool = "make"),
    ignore = "needs bash and make (install: scripts/install-deps.sh core)"
)]
fn make_install_puts_binary_man_page_and_completions_in_place() {
    if !require_tool("make") || !require_tool("bash") {
        return;
    }
    let dir = TestDir::new();
    let prefix = dir.join("usr/local");
    make(
        dir.path(),
        &["install", &format!("PREFIX={}", prefix.display())],
    );
    for f in installed(&prefix) {
        assert!(
            std::fs::metadata(&f).is_ok_and(|m| m.len() > 0),
            "{} missing or empty",
            f.display()
        );
    }
    let [bin, man, bash, zsh, fish] = <[PathBuf; 5]>::try_from(installed(&prefix)).expect("five");

    let out = run_ok(Command::new(&bin).arg("-V"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hyper2kvm "));

    let page = std::fs::read_to_string(&man).expect("man page");
    assert!(
        page.lines().any(|l| l.starts_with(".TH hyper2kvm 1")),
        "{page}"
    );
    if which::which("groff").is_ok() {
        let out = run_ok(
            Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
                .arg(&man),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "groff warns: {stderr}");
        for part in [
            "SYNOPSIS",
            "BATCH",
            "EXAMPLES",
            "EXIT STATUS",
            "--batch-manifest",
            "--quiet",
        ] {
            assert!(
                text.contains(part),
                "{part} not in the rendered page:\n{text}"
            );
        }
    } else {
        eprintln!("groff is not installed: the man page was only checked for its .TH line");
    }

    let out = run_ok(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p hyper2kvm",
        bash.display()
    )));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hyper2kvm"),
        "{out:?}"
    );
    for f in [&bash, &zsh, &fish] {
        let text = std::fs::read_to_string(f).expect("completion");
        for option in ["batch-manifest", "libvirt-xml", "quiet", "progress"] {
            assert!(text.contains(option), "{option} not in {}", f.display());
        }
    }

    make(
        dir.path(),
        &["uninstall", &format!("PREFIX={}", prefix.display())],
    );
    for f in installed(&prefix) {
        assert!(!f.exists(), "{} left after make uninstall", f.display());
    }

    // DESTDIR goes before PREFIX, for packaging.
    let stage = dir.join("stage");
    make(
        dir.path(),
        &[
            "install",
            "PREFIX=/usr",
            &format!("DESTDIR={}", stage.display()),
        ],
    );
    for f in installed(&stage.join("usr")) {
        assert!(f.is_file(), "{} missing", f.display());
    }
}
