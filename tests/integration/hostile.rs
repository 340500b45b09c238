//! Hostile documents: each is refused with exit 2, a message that names the limit it broke, and
//! a small stderr, by a binary running under a 512 MiB address-space limit (`prlimit --as`).
//!
//! The limit is what makes these tests fail instead of passing slowly: every input here used to
//! cost seconds to minutes, hundreds of MiB to GiB, or megabytes of stderr before it was
//! refused; the bounds in src/config.rs and src/diag.rs refuse them before the cost is paid.
//! Under the limit a blow-up is an allocation failure (exit 134), not a slow pass.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// The address space each run gets: a normal refusal needs a few tens of MiB; the old
/// behaviour on these inputs needed GiB.
const ADDRESS_SPACE: u64 = 512 * 1024 * 1024;
/// More stderr than any refusal needs (50 problems of at most a few hundred bytes each).
const MAX_STDERR: usize = 32 * 1024;

/// `hyper2kvm ARGS` under `prlimit --as`, with `stdin` fed to it when given.
fn bounded(args: &[&std::ffi::OsStr], stdin: Option<Vec<u8>>) -> Run {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={ADDRESS_SPACE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn prlimit");
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin");
        // The binary stops reading at its limit; the rest meets a closed pipe.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("wait");
    if let Some(f) = feeder {
        f.join().expect("feeder");
    }
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `--manifest path --dump-config` bounded and returns its redacted stderr, after checking
/// exit 2, nothing on stdout and a small stderr.
fn refused(dir: &TestDir, args: &[&std::ffi::OsStr]) -> String {
    let r = bounded(args, None);
    assert_eq!(
        r.code,
        Some(2),
        "expected exit 2 (134 is an allocation failure under the limit):\n{}",
        &r.stderr[..r.stderr.len().min(2000)]
    );
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.len() < MAX_STDERR,
        "stderr is {} bytes: {}",
        r.stderr.len(),
        &r.stderr[..2000]
    );
    redact(&r.stderr, dir)
}

fn manifest_refused(dir: &TestDir, path: &Path) -> String {
    refused(
        dir,
        &[
            "--manifest".as_ref(),
            path.as_os_str(),
            "--dump-config".as_ref(),
        ],
    )
}

fn deep_flow(levels: usize) -> String {
    format!(
        "manifest_version: \"1.0\"\ndisks: {}{}\n",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

/// `[[[[…]]]]` 40,000 deep (80 KB) took 16 s under the old YAML parser; 100,000 deep (200 KB)
/// minutes. Both stop at the 64th level.
#[test]
fn deeply_nested_yaml_is_refused_at_the_nesting_limit() {
    let dir = TestDir::new();
    for levels in [40_000, 100_000] {
        let path = dir.write("vm.yaml", &deep_flow(levels));
        assert_eq!(
            manifest_refused(&dir, &path).trim_end(),
            "error: [TMP]/vm.yaml: invalid YAML: line 2 column 72: nested more than 64 levels \
             deep (the limit on lists and mappings)"
        );
    }
    let maps = format!(
        "manifest_version: \"1.0\"\nvm: {}1{}\n",
        "{a: ".repeat(40_000),
        "}".repeat(40_000)
    );
    let path = dir.write("vm.yaml", &maps);
    assert!(manifest_refused(&dir, &path).contains("nested more than 64 levels deep"));
}

/// A JSON document under another extension is retried as YAML; both refusals are bounded.
#[test]
fn deep_json_under_another_extension_is_refused_by_both_parsers() {
    let dir = TestDir::new();
    let text = format!(
        "{{\"manifest_version\": \"1.0\", \"disks\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let path = dir.write("vm.conf", &text);
    let err = manifest_refused(&dir, &path);
    insta::assert_snapshot!(err, @"error: [TMP]/vm.conf: neither valid JSON (recursion limit exceeded at line 1 column 164) nor valid YAML (line 1 column 101: nested more than 64 levels deep (the limit on lists and mappings))");
}

/// 50 KB of aliases to a 1,000-character string allocated 1.4 GB before the old parser refused
/// it; 200 KB aborted the process. The alias budget stops both after 1,000 aliases.
#[test]
fn an_alias_flood_is_refused_at_the_alias_budget() {
    let dir = TestDir::new();
    for target in [50_000, 200_000] {
        let mut text = format!(
            "manifest_version: \"1.0\"\nlong: &s \"{}\"\n",
            "x".repeat(1000)
        );
        let mut i = 0;
        while text.len() < target {
            text.push_str(&format!("k{i}: [{}]\n", vec!["*s"; 50].join(", ")));
            i += 1;
        }
        let path = dir.write("vm.yaml", &text);
        assert_eq!(
            manifest_refused(&dir, &path).trim_end(),
            "error: [TMP]/vm.yaml: invalid YAML: line 23 column 7: more than 1000 aliases (the \
             limit)"
        );
    }
}

/// Aliases of aliases (ten of ten of ten … of a 1,000-character string) are refused when their
/// copies reach the scalar budget, not when they have all been made.
#[test]
fn nested_aliases_are_refused_at_the_scalar_budget() {
    let dir = TestDir::new();
    let mut text = format!(
        "manifest_version: \"1.0\"\nl0: &l0 \"{}\"\n",
        "x".repeat(1000)
    );
    for k in 1..10 {
        let refs = vec![format!("*l{}", k - 1); 10].join(", ");
        text.push_str(&format!("l{k}: &l{k} [{refs}]\n"));
    }
    let path = dir.write("vm.yaml", &text);
    let err = manifest_refused(&dir, &path);
    insta::assert_snapshot!(err, @"error: [TMP]/vm.yaml: invalid YAML: line 6 column 25: more than 4194304 bytes of values, aliased copies included (the limit)");
}

/// 1,000 aliases to a disk with a long bad value printed 100 MB to stderr: every value is now
/// quoted as a cut excerpt, and only the first 50 problems are listed.
#[test]
fn many_problems_with_long_values_are_cut_and_counted() {
    let dir = TestDir::new();
    dir.write("disk.raw", "0123456789");
    let bad = "q".repeat(3000);
    let mut text = format!(
        "manifest_version: \"1.0\"\nvm: {{firmware: \"{bad}\"}}\nx-disk: &d {{id: d0, \
         source_format: \"{bad}\", bytes: 10, local_path: disk.raw}}\ndisks:\n"
    );
    for _ in 0..999 {
        text.push_str("  - *d\n");
    }
    let path = dir.write("vm.yaml", &text);
    assert!(text.len() < 20_000, "the input itself is small");
    let err = manifest_refused(&dir, &path);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 52, "a header, 50 problems and a count:\n{err}");
    let count = regex_lite::Regex::new(r"^  … and (\d+) more problems$").expect("regex");
    let more: usize = count
        .captures(lines[51])
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("last line: {}", lines[51]));
    assert!(
        lines[0].starts_with(&format!(
            "error: invalid manifest [TMP]/vm.yaml ({} problems):",
            more + 50
        )),
        "{}",
        lines[0]
    );
    assert!(more > 900, "{more}");
    // Each long value is quoted as 60 characters and the count of what was cut.
    let cut = format!("{}… (2940 more bytes)", "q".repeat(60));
    assert!(err.contains(&cut), "{err}");
    assert!(!err.contains(&"q".repeat(61)), "{err}");
}

/// A 2.6 MB custom profile took 94 s, 7.7 GB and 2.6 GB of stderr; it is now refused by its
/// size before it is read.
#[test]
fn an_oversized_profile_is_refused_by_its_size() {
    let dir = TestDir::new();
    dir.write("disk.raw", "x");
    let body = format!("d: &d \"{}\"\n", "z".repeat(2000)) + &"k: *d\n".repeat(440_000);
    dir.write("profiles/site.yaml", &body);
    let path = dir.write(
        "vm.yaml",
        "manifest_version: \"1.0\"\nprofile: site\nprofiles_directory: profiles\ndisks:\n  - {id: d0, source_format: raw, bytes: 1, local_path: disk.raw}\n",
    );
    let err = manifest_refused(&dir, &path);
    insta::assert_snapshot!(err, @r"
    error: invalid manifest [TMP]/vm.yaml (1 problem):
      - Profile loading failed: [TMP]/profiles/site.yaml: the file is 2642009 bytes; the limit is 1048576 bytes (1 MiB)
    ");
}

/// Manifests, batch manifests and config files over the size limit are refused by their size,
/// read from a file or from a pipe.
#[test]
fn oversized_documents_are_refused_by_their_size_from_files_and_pipes() {
    let dir = TestDir::new();
    let big = "# padding\n".repeat(110_000);
    let manifest = dir.write("vm.yaml", &big);
    insta::assert_snapshot!(manifest_refused(&dir, &manifest), @"error: [TMP]/vm.yaml: the file is 1100000 bytes; the limit is 1048576 bytes (1 MiB)");
    let batch = dir.write("batch.yaml", &big);
    let err = refused(&dir, &["--batch-manifest".as_ref(), batch.as_os_str()]);
    insta::assert_snapshot!(err, @"error: [TMP]/batch.yaml: the file is 1100000 bytes; the limit is 1048576 bytes (1 MiB)");
    let config = dir.write("site.yaml", &big);
    let err = refused(&dir, &["--config".as_ref(), config.as_os_str()]);
    insta::assert_snapshot!(err, @"error: [TMP]/site.yaml: the file is 1100000 bytes; the limit is 1048576 bytes (1 MiB)");
    // A pipe has no size to check first: the reader stops at the limit.
    let r = bounded(
        &["--config".as_ref(), "/dev/stdin".as_ref()],
        Some(big.into_bytes()),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim_end(),
        "error: /dev/stdin: the file is more than 1048576 bytes; the limit is 1048576 bytes (1 MiB)"
    );
}
