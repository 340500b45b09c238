//! The fuzz targets' short run on the stable toolchain: every entry point of
//! `hyper2kvm::fuzzing` over its committed seed corpus (fuzz/corpus/<target>), every input a
//! campaign found (fuzz/regressions/<target>), and deterministic mutations of the seeds made with
//! proptest. Each input must end in a documented exit code with a bounded message, and must not
//! panic. The libFuzzer campaign over the same entry points is docs/fuzzing.md.
//!
//! `HYPER2KVM_FUZZ_CASES` sets the number of mutated inputs per target (default 100).

use std::path::{Path, PathBuf};

use hyper2kvm::fuzzing::{self, Outcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Tokens the mutations insert: the syntax each parser splits on, and the values that make it
/// work hardest (nesting, aliases, placeholders, entities, odd bytes).
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b":",
    b",",
    b"\n",
    b"- ",
    b"  ",
    b"&a ",
    b"*a",
    b"!!str ",
    b"<<: *a",
    b"---",
    b"{{",
    b"}}",
    b"{{ vm_name }}",
    b"${",
    b"<",
    b">",
    b"</",
    b"/>",
    b"&amp;",
    b"<!ENTITY",
    b"\0",
    b"\xff",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"null",
    b"extends",
    b"manifest_version",
    b"disks",
    b"profile",
    b"\"1.0\"",
    b"local_path",
];

#[derive(Clone, Debug)]
enum Edit {
    /// Flip bit `bit` of the byte at `at` (positions are taken modulo the length).
    Flip {
        at: usize,
        bit: u8,
    },
    Insert {
        at: usize,
        token: usize,
    },
    /// Repeat `len` bytes from `at` `times` times in place.
    Repeat {
        at: usize,
        len: usize,
        times: usize,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Edit::Insert { at, token }),
        (any::<usize>(), 1usize..64, 1usize..64).prop_map(|(at, len, times)| Edit::Repeat {
            at,
            len,
            times
        }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Delete { at, len }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = data.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        match *e {
            Edit::Flip { at, bit } if n > 0 => data[at % n] ^= 1 << bit,
            Edit::Flip { .. } => {}
            Edit::Insert { at, token } => {
                let at = pos(at);
                data.splice(at..at, TOKENS[token].iter().copied());
            }
            Edit::Repeat { at, len, times } => {
                let at = pos(at);
                let end = (at + len).min(n);
                let chunk = data[at..end].to_vec();
                for _ in 0..times {
                    data.splice(end..end, chunk.iter().copied());
                }
            }
            Edit::Delete { at, len } => {
                let at = pos(at);
                let end = (at + len).min(n);
                data.drain(at..end);
            }
            Edit::Truncate { at } => data.truncate(pos(at)),
        }
    }
    data
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| {
                    let bytes = std::fs::read(&p).expect("read a corpus file");
                    (p, bytes)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Runs one target: the seeds and regressions as they are, then the mutations.
fn short_run(target: &str, entry: fn(&[u8]) -> Outcome) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = files(&root.join("corpus").join(target));
    assert!(
        !seeds.is_empty(),
        "no seeds in fuzz/corpus/{target} (python3 fuzz/seeds.py writes them)"
    );
    for (path, data) in seeds
        .iter()
        .chain(&files(&root.join("regressions").join(target)))
    {
        let outcome = std::panic::catch_unwind(|| entry(data));
        let outcome = outcome.unwrap_or_else(|_| panic!("{} panicked", path.display()));
        if let Err(e) = std::panic::catch_unwind(|| fuzzing::check(&outcome, data.len())) {
            panic!("{}: {:?}", path.display(), e.downcast_ref::<String>());
        }
    }
    let cases = std::env::var("HYPER2KVM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..8));
    let result = runner.run(&strategy, |(seed, edits)| {
        let data = apply(seeds[seed].1.clone(), &edits);
        let outcome = entry(&data);
        fuzzing::check(&outcome, data.len());
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target}: {e}");
    }
}

#[test]
fn fuzz_manifest() {
    short_run("manifest", fuzzing::manifest);
}

#[test]
fn fuzz_config() {
    short_run("config", fuzzing::config);
}

#[test]
fn fuzz_batch() {
    short_run("batch", fuzzing::batch);
}

#[test]
fn fuzz_profile() {
    short_run("profile", fuzzing::profile);
}

#[test]
fn fuzz_template() {
    short_run("template", fuzzing::template);
}

#[test]
fn fuzz_libvirt_xml() {
    short_run("libvirt_xml", fuzzing::libvirt_xml);
}

#[test]
fn fuzz_vmware_export() {
    short_run("vmware_export", fuzzing::vmware_export);
}
