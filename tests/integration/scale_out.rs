//! Past one host: a batch run as shards (`--batch-shard`), the shard reports merged
//! (`--batch-merge`), the Kubernetes Indexed Job (`--batch-k8s-job`) validated against the
//! Kubernetes OpenAPI schema and run index by index here, the Ansible playbook run for real over
//! inventory hosts on this machine, and 200 VMs as 8 shards with one killed and rerun.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestDir, hyper2kvm, read_json, redact, run, write_json};

/// A batch of `n` small VMs in `<dir>/in`, output in `<dir>/<out>`; VM `i` has a raw disk of
/// `size(i)` random bytes. VMs named in `disabled` are `enabled: false`.
fn make_batch(dir: &Path, n: usize, size: impl Fn(usize) -> usize, disabled: &[usize]) -> PathBuf {
    let input = dir.join("in");
    let mut vms = Vec::new();
    for i in 0..n {
        let id = format!("vm{i:03}");
        let vm_dir = input.join(&id);
        std::fs::create_dir_all(&vm_dir).expect("mkdir");
        // Different bytes per VM (a deterministic stream), so no two outputs are alike.
        let mut bytes = vec![0u8; size(i)];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
        for b in bytes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(vm_dir.join("disk.raw"), &bytes).expect("write disk");
        write_json(
            &vm_dir.join("manifest.json"),
            &json!({
                "manifest_version": "1.0",
                "source": {"provider": "vsphere", "vm_name": id},
                "vm": {"cpu": 1, "mem_gb": 1},
                "disks": [{"id": "d0", "source_format": "raw", "local_path": "disk.raw"}],
                // Regenerated MACs: a sharded run must give the ones one process gives.
                "nics": [{"network": "lan"}, {"network": "lan"}],
                "network_mapping": {"default_bridge": "br0", "mac_address_policy": "regenerate"},
                "pipeline": {
                    "inspect": {"enabled": true},
                    "convert": {"enabled": true},
                    "validate": {"enabled": true, "check_image_integrity": true}
                },
                "output": {"format": "qcow2"}
            }),
        );
        vms.push(json!({
            "id": id,
            "manifest": format!("{id}/manifest.json"),
            "priority": i % 3,
            "enabled": !disabled.contains(&i),
        }));
    }
    let batch = input.join("batch.json");
    write_json(
        &batch,
        &json!({
            "batch_version": "1.0",
            "batch_metadata": {"batch_id": "wave-1", "parallel_limit": 2, "continue_on_error": true},
            "vms": vms,
        }),
    );
    batch
}

fn sizes(i: usize) -> usize {
    (64 << 10) * (1 + (i * 7) % 5)
}

/// `hyper2kvm --batch-manifest B --output-dir OUT` plus `args`.
fn batch_cmd(batch: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = hyper2kvm();
    cmd.arg("--batch-manifest")
        .arg(batch)
        .arg("--output-dir")
        .arg(out)
        .args(args);
    cmd
}

/// What a report says of each VM that must match between a one-process and a sharded run:
/// status, its domain's MACs, and each output's name (relative to the VM's directory) and, for
/// a disk, its size (a domain XML names its directory, which differs).
type Outcome = (String, Vec<(String, u64)>, Value);

fn outcome_of(report: &Value) -> BTreeMap<String, Outcome> {
    report["vm_results"]
        .as_array()
        .expect("vm_results")
        .iter()
        .map(|v| {
            let mut files: Vec<(String, u64)> = v["artifacts"]
                .as_array()
                .expect("artifacts")
                .iter()
                .map(|a| {
                    let p = PathBuf::from(a["path"].as_str().expect("path"));
                    let size = if a["type"] == "converted_disk" {
                        a["size_bytes"].as_u64().expect("size")
                    } else {
                        0
                    };
                    (
                        p.file_name()
                            .expect("as the test made it")
                            .to_string_lossy()
                            .into_owned(),
                        size,
                    )
                })
                .collect();
            files.sort();
            (
                v["vm_id"].as_str().expect("id").to_owned(),
                (
                    v["status"].as_str().expect("status").to_owned(),
                    files,
                    v["macs"].clone(),
                ),
            )
        })
        .collect()
}

fn qemu_compare(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-q", "-f", "qcow2", "-F", "qcow2"])
        .arg(a)
        .arg(b)
        .status()
        .expect("qemu-img")
        .success()
}

/// Which VMs each shard report under `out/shards` lists (enabled ones only).
fn vms_by_shard(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut by = BTreeMap::new();
    for e in std::fs::read_dir(out.join("shards")).expect("shards dir") {
        let dir = e.expect("entry").path();
        let report = read_json(&dir.join("batch_report.json"));
        let ids = report["vm_results"]
            .as_array()
            .expect("as the test made it")
            .iter()
            .filter(|v| v["status"] != "skipped")
            .map(|v| v["vm_id"].as_str().expect("as the test made it").to_owned())
            .collect();
        by.insert(
            dir.file_name()
                .expect("as the test made it")
                .to_string_lossy()
                .into_owned(),
            ids,
        );
    }
    by
}

fn assert_each_vm_once(by_shard: &BTreeMap<String, Vec<String>>, expected: usize) {
    let mut seen = BTreeSet::new();
    for (shard, ids) in by_shard {
        for id in ids {
            assert!(
                seen.insert(id.clone()),
                "{id} is in two shards (second: {shard})"
            );
        }
    }
    assert_eq!(seen.len(), expected, "{by_shard:?}");
}

/// The one-process run and three shards of the same batch convert the same VMs to the same
/// outputs with the same statuses; the merge says so, validates against the schema, and is
/// byte-for-byte the same when run again.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
fn three_shards_give_what_one_process_gives_and_merging_is_idempotent() {
    if !crate::support::require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 12, sizes, &[5]);
    let one = dir.join("one");
    let r = run(&mut batch_cmd(&batch, &one, &["-q"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let single = read_json(&one.join("batch_report.json"));

    let sharded = dir.join("sharded");
    // The three shards at once, as three hosts would run them.
    let children: Vec<_> = (0..3)
        .map(|i| {
            batch_cmd(
                &batch,
                &sharded,
                &["-q", "--batch-shard", &format!("{i}/3")],
            )
            .spawn()
            .expect("spawn shard")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    assert_each_vm_once(&vms_by_shard(&sharded), 11);
    // No shard wrote into another's directory, nor the batch's own reports.
    assert!(!sharded.join("batch_report.json").exists());
    for i in 0..3 {
        let d = sharded.join(format!("shards/shard-{i}-of-3"));
        assert!(d.join("batch_summary.txt").is_file());
        assert!(d.join(".checkpoints/checkpoint-wave-1.json").is_file());
    }

    let merged_dir = dir.join("merged");
    std::fs::create_dir_all(&merged_dir).expect("as the test made it");
    let merge = |extra: &[&Path]| {
        let mut cmd = hyper2kvm();
        cmd.arg("--batch-merge")
            .arg(sharded.join("shards"))
            .args(extra)
            .arg("--output-dir")
            .arg(&merged_dir);
        run(&mut cmd)
    };
    let r = merge(&[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let merged = read_json(&merged_dir.join("batch_report.json"));
    assert_eq!(outcome_of(&merged), outcome_of(&single));
    assert_eq!(merged["batch"]["status"], "succeeded");
    assert_eq!(merged["batch"]["successful_vms"], 11);
    assert_eq!(merged["batch"]["skipped_vms"], 1);
    assert_eq!(merged["merge"]["complete"], true);
    assert_eq!(merged["merge"]["missing_shards"], json!([]));
    // The same outputs, byte for byte.
    for v in merged["vm_results"]
        .as_array()
        .expect("as the test made it")
    {
        for a in v["artifacts"].as_array().expect("as the test made it") {
            let p = PathBuf::from(a["path"].as_str().expect("as the test made it"));
            if p.extension().is_some_and(|e| e == "qcow2") {
                let rel = p.strip_prefix(&sharded).expect("under the sharded output");
                assert!(qemu_compare(&p, &one.join(rel)), "{}", p.display());
            }
        }
    }
    // Idempotent: again, and with the merged directory itself among the inputs (its report is
    // not a shard's, so it is not counted twice).
    let first: Vec<Vec<u8>> = [
        "batch_report.json",
        "batch_summary.txt",
        "batch_report.html",
    ]
    .iter()
    .map(|f| std::fs::read(merged_dir.join(f)).expect("as the test made it"))
    .collect();
    let r = merge(&[&merged_dir]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    for (f, before) in [
        "batch_report.json",
        "batch_summary.txt",
        "batch_report.html",
    ]
    .iter()
    .zip(&first)
    {
        assert_eq!(
            &std::fs::read(merged_dir.join(f)).expect("as the test made it"),
            before,
            "{f}"
        );
    }
    let summary =
        std::fs::read_to_string(merged_dir.join("batch_summary.txt")).expect("as the test made it");
    assert!(summary.contains("Shards: 3 of 3 reported"), "{summary}");
}

/// `--dry-run` prints the assignment; `env/N` reads the index from JOB_COMPLETION_INDEX; bad
/// specs are refused with what was expected.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
fn the_dry_run_prints_the_assignment_and_env_reads_the_index() {
    if !crate::support::require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 9, sizes, &[]);
    let out = dir.join("out");
    let r = run(&mut batch_cmd(
        &batch,
        &out,
        &["--dry-run", "--batch-shard", "1/3"],
    ));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let head: String = r
        .stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("shard_dry_run", redact(&head, &dir));
    let r2 = run(
        batch_cmd(&batch, &out, &["--dry-run", "--batch-shard", "env/3"])
            .env("JOB_COMPLETION_INDEX", "1"),
    );
    assert_eq!(r2.stdout, r.stdout);
    assert!(!out.exists(), "a dry run writes nothing");

    let mut errors = String::new();
    for (spec, env) in [
        ("3/3", None),
        ("1/0", None),
        ("x", None),
        ("env/3", None),
        ("env/3", Some("7")),
    ] {
        let mut cmd = batch_cmd(&batch, &out, &["--dry-run", "--batch-shard", spec]);
        cmd.env_remove("JOB_COMPLETION_INDEX");
        if let Some(v) = env {
            cmd.env("JOB_COMPLETION_INDEX", v);
        }
        let r = run(&mut cmd);
        assert_eq!(r.code, Some(2), "{spec}: {}{}", r.stdout, r.stderr);
        errors.push_str(&r.stderr);
    }
    insta::assert_snapshot!("shard_spec_errors", errors);
}

/// Two VMs that write to one directory cannot be split over shards, which would fight over it:
/// refused when the shard is planned, before anything is written.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
fn vms_of_two_shards_sharing_an_output_directory_are_refused_at_plan_time() {
    if !crate::support::require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 6, sizes, &[]);
    let shared = dir.join("shared-out");
    for i in 0..6 {
        let m = dir.join(&format!("in/vm{i:03}/manifest.json"));
        let mut v = read_json(&m);
        v["output"]["directory"] = json!(shared);
        // Distinct file names, so one process may run them all (it writes them one by one).
        v["disks"][0]["id"] = json!(format!("disk{i}"));
        write_json(&m, &v);
    }
    let out = dir.join("out");
    let r = run(&mut batch_cmd(&batch, &out, &["--batch-shard", "0/2"]));
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("write to the same directory") && r.stderr.contains("(shard 1)"),
        "{}",
        r.stderr
    );
    assert!(!shared.exists() && !out.exists(), "nothing written");
}

/// A merge tells a missing shard and a failed VM apart from a complete batch, and a rerun of the
/// missing shard completes it; mixed batches and empty directories are refused.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
fn the_merge_names_missing_and_failed_shards() {
    if !crate::support::require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 9, sizes, &[]);
    // One VM whose disk is gone: it fails in its own shard only.
    std::fs::remove_file(dir.join("in/vm004/disk.raw")).expect("as the test made it");
    let out = dir.join("out");
    for i in [0, 2] {
        let r = run(&mut batch_cmd(
            &batch,
            &out,
            &["-q", "--batch-shard", &format!("{i}/3")],
        ));
        assert!(matches!(r.code, Some(0 | 3)), "{}{}", r.stdout, r.stderr);
    }
    let merge = || {
        let mut cmd = hyper2kvm();
        cmd.arg("--batch-merge").arg(&out);
        run(&mut cmd)
    };
    let r = merge();
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let report = read_json(&out.join("batch_report.json"));
    assert_eq!(report["merge"]["missing_shards"], json!([1]));
    assert_eq!(report["merge"]["complete"], false);
    assert_eq!(report["batch"]["status"], "incomplete");
    let shards_text: String = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Shards:"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("merge_missing_shard", redact(&shards_text, &dir));

    let r = run(&mut batch_cmd(
        &batch,
        &out,
        &["-q", "--batch-shard", "1/3"],
    ));
    assert!(matches!(r.code, Some(0 | 3)), "{}{}", r.stdout, r.stderr);
    let r = merge();
    let report = read_json(&out.join("batch_report.json"));
    assert_eq!(report["merge"]["complete"], true, "{}", r.stdout);
    assert_eq!(report["batch"]["total_vms"], 9);
    assert_eq!(report["batch"]["failed_vms"], 1);
    assert_eq!(report["batch"]["status"], "failed");
    // Exit 3: complete, but a VM failed.
    assert_eq!(r.code, Some(3));
    let failed: Vec<&Value> = report["vm_results"]
        .as_array()
        .expect("as the test made it")
        .iter()
        .filter(|v| v["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["vm_id"], "vm004");

    // Nothing to merge, and two batches at once.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("as the test made it");
    let mut cmd = hyper2kvm();
    let r = run(cmd.arg("--batch-merge").arg(&empty));
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no shard reports under"), "{}", r.stderr);
    let other = dir.join("other/shards/shard-0-of-1");
    std::fs::create_dir_all(&other).expect("as the test made it");
    let mut foreign = read_json(&out.join("shards/shard-0-of-3/batch_report.json"));
    foreign["batch"]["batch_id"] = json!("wave-2");
    write_json(&other.join("batch_report.json"), &foreign);
    let mut cmd = hyper2kvm();
    let r = run(cmd
        .arg("--batch-merge")
        .arg(out.join("shards"))
        .arg(dir.join("other"))
        .arg("--output-dir")
        .arg(&empty));
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("belong to 2 batches"), "{}", r.stderr);
}

/// Where the kubernetes-validate schemas are checked against: the oldest release with
/// backoffLimitPerIndex (beta in 1.29) and the newest the pinned package knows.
const K8S_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

/// The emitted Job is a valid batch/v1 Job for the Kubernetes OpenAPI schema (strict: no
/// unknown field), has what an Indexed Job of N shards needs, and its exact container command,
/// run here with each index's JOB_COMPLETION_INDEX, converts the whole batch.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
#[cfg_attr(
    missing_tool = "kubernetes-validate",
    ignore = "needs kubernetes-validate (PyPI)"
)]
fn the_kubernetes_job_validates_and_each_index_runs_here() {
    if !crate::support::require_tool("qemu-img")
        || !crate::support::require_tool("kubernetes-validate")
    {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 10, sizes, &[3]);
    let out = dir.join("out");
    let r = run(batch_cmd(&batch, &out, &[])
        .args([
            "--batch-k8s-job",
            "4",
            "--k8s-image",
            "registry.example/hyper2kvm:0.1",
        ])
        .args(["--k8s-parallelism", "2", "--k8s-kvm", "on"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(!out.exists(), "printing the Job writes nothing");
    // Without /dev/kvm (a TCG-only cluster): unprivileged.
    let r_off =
        run(batch_cmd(&batch, &out, &[]).args(["--batch-k8s-job", "4", "--k8s-kvm", "off"]));
    assert_eq!(r_off.code, Some(0), "{}", r_off.stderr);
    assert!(!r_off.stdout.contains("privileged") && !r_off.stdout.contains("/dev/kvm"));
    assert!(r_off.stdout.contains("allowPrivilegeEscalation: false"));
    for (name, text) in [("job.yaml", &r.stdout), ("job-tcg.yaml", &r_off.stdout)] {
        let job_file = dir.write(name, text);
        for v in K8S_VERSIONS {
            let o = Command::new("kubernetes-validate")
                .args(["--strict", "-k", v])
                .arg(&job_file)
                .output()
                .expect("kubernetes-validate");
            assert!(
                o.status.success(),
                "{name} against {v}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let job: Value = serde_saphyr::from_str(&r.stdout).expect("the Job is YAML");
    insta::assert_snapshot!(
        "k8s_job",
        redact(&r.stdout, &dir).replace(env!("CARGO_PKG_VERSION"), "[VERSION]")
    );
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 4);
    assert_eq!(spec["parallelism"], 2);
    let container = &spec["template"]["spec"]["containers"][0];
    let command: Vec<String> = container["command"]
        .as_array()
        .expect("as the test made it")
        .iter()
        .map(|c| c.as_str().expect("as the test made it").to_owned())
        .collect();
    assert_eq!(command[0], "hyper2kvm");
    // The volumes hold every path the command names: the batch under the sources mount, the
    // output directory as the outputs mount.
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_array()
        .expect("as the test made it")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("as the test made it").to_owned(),
                m["mountPath"]
                    .as_str()
                    .expect("as the test made it")
                    .to_owned(),
            )
        })
        .collect();
    assert!(batch.starts_with(&mounts["sources"]), "{mounts:?}");
    assert_eq!(Path::new(&mounts["outputs"]), out);

    // Each index, as its pod runs it: the same command and environment, JOB_COMPLETION_INDEX
    // set, `hyper2kvm` found on PATH as in the image.
    let bin = assert_cmd::cargo::cargo_bin("hyper2kvm");
    let path = format!(
        "{}:{}",
        bin.parent().expect("as the test made it").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for index in 0..4 {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .env("PATH", &path)
            .env("JOB_COMPLETION_INDEX", index.to_string());
        // The scratch emptyDir is a fresh directory here, where its mount path points.
        let scratch_mount = mounts["scratch"].clone();
        let scratch = dir.join(&format!("scratch-{index}"));
        std::fs::create_dir_all(&scratch).expect("scratch");
        for e in container["env"].as_array().expect("as the test made it") {
            let name = e["name"].as_str().expect("as the test made it");
            let value = e["value"].as_str().expect("as the test made it");
            match value.strip_prefix(&scratch_mount) {
                Some(rest) => cmd.env(name, format!("{}{rest}", scratch.display())),
                None => cmd.env(name, value),
            };
        }
        let r = run(&mut cmd);
        assert_eq!(r.code, Some(0), "index {index}: {}{}", r.stdout, r.stderr);
    }
    assert_each_vm_once(&vms_by_shard(&out), 9);
    let mut cmd = hyper2kvm();
    let r = run(cmd.arg("--batch-merge").arg(&out));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let merged = read_json(&out.join("batch_report.json"));
    assert_eq!(merged["batch"]["successful_vms"], 9);

    // A VM writing outside the outputs claim would lose its outputs with its pod: refused.
    let m = dir.join("in/vm007/manifest.json");
    let mut v = read_json(&m);
    v["output"]["directory"] = json!(dir.join("elsewhere"));
    write_json(&m, &v);
    let r = run(&mut batch_cmd(&batch, &out, &["--batch-k8s-job", "4"]));
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("vm vm007: it writes to") && r.stderr.contains("outside the batch's"),
        "{}",
        r.stderr
    );
}

/// The playbook in ansible/ runs one shard per inventory host (four hosts on this machine,
/// local connection), fetches their reports and merges them: the merged report is the
/// one-process report of the same batch.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
#[cfg_attr(missing_tool = "ansible-playbook", ignore = "needs ansible-playbook")]
fn the_ansible_playbook_runs_a_shard_per_host_and_merges() {
    if !crate::support::require_tool("qemu-img")
        || !crate::support::require_tool("ansible-playbook")
    {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 10, sizes, &[2]);
    let one = dir.join("one");
    let r = run(&mut batch_cmd(&batch, &one, &["-q"]));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let single = read_json(&one.join("batch_report.json"));

    let inventory = dir.write(
        "inventory.ini",
        "[converters]\nconv-a\nconv-b\nconv-c\nconv-d\n\n[converters:vars]\n\
         ansible_connection=local\nansible_python_interpreter=/usr/bin/python3\n",
    );
    let out = dir.join("out");
    let fetch = dir.join("fetched");
    let bin = assert_cmd::cargo::cargo_bin("hyper2kvm");
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible/playbook.yml");
    let o = Command::new("ansible-playbook")
        .arg("-i")
        .arg(&inventory)
        .arg(&playbook)
        .arg("-e")
        .arg(
            json!({
                "hyper2kvm_batch": batch,
                "hyper2kvm_output_dir": out,
                "hyper2kvm_bin": bin,
                "hyper2kvm_fetch_dir": fetch,
                "hyper2kvm_poll": 1,
            })
            .to_string(),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        // Ansible refuses to start without a UTF-8 locale.
        .env("LC_ALL", "C.UTF-8")
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_REMOTE_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .output()
        .expect("ansible-playbook");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{log}");
    for host in ["conv-a", "conv-b", "conv-c", "conv-d"] {
        assert!(
            fetch.join(host).join("batch_report.json").is_file(),
            "{host}: {log}"
        );
    }
    assert_each_vm_once(&vms_by_shard(&out), 9);
    let merged = read_json(&fetch.join("merged/batch_report.json"));
    assert_eq!(outcome_of(&merged), outcome_of(&single), "{log}");
    assert_eq!(merged["merge"]["shard_count"], 4);
    assert_eq!(merged["merge"]["complete"], true);
}

/// The successful VMs of a shard's checkpoint.
fn succeeded_in(checkpoint: &Path) -> BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(checkpoint) else {
        return BTreeSet::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return BTreeSet::new();
    };
    v["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["vm_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// 200 VMs as 8 shards at once; shard 3 is killed with SIGKILL mid-run and run again with
/// --batch-resume: every VM is converted, the ones shard 3 had finished are not converted again,
/// and the merged report is complete.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
fn two_hundred_vms_in_eight_shards_survive_a_killed_shard() {
    if !crate::support::require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 200, |i| (16 << 10) * (1 + i % 4), &[]);
    let out = dir.join("out");
    let shard = |i: usize| {
        batch_cmd(
            &batch,
            &out,
            &[
                "-q",
                "--batch-parallel",
                "1",
                "--batch-shard",
                &format!("{i}/8"),
            ],
        )
    };
    let mut children: Vec<_> = (0..8).map(|i| shard(i).spawn().expect("spawn")).collect();
    let checkpoint = out.join("shards/shard-3-of-8/.checkpoints/checkpoint-wave-1.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let done_before = loop {
        let done = succeeded_in(&checkpoint);
        if done.len() >= 3 {
            break done;
        }
        assert!(Instant::now() < deadline, "shard 3 made no progress");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        children[3].try_wait().expect("try_wait").is_none(),
        "shard 3 finished before it could be killed"
    );
    children[3].kill().expect("SIGKILL");
    let status = children[3].wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // Every VM shard 3 finished before the kill, with its output's identity.
    let done_before = succeeded_in(&checkpoint)
        .union(&done_before)
        .cloned()
        .collect::<BTreeSet<_>>();
    let inode = |id: &str| {
        std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(out.join(id).join("d0.qcow2")).expect("output"),
        )
    };
    let before: BTreeMap<String, u64> = done_before
        .iter()
        .map(|id| (id.clone(), inode(id)))
        .collect();
    assert!(!out.join("shards/shard-3-of-8/batch_report.json").exists());
    for (i, c) in children.iter_mut().enumerate() {
        if i != 3 {
            assert!(c.wait().expect("wait").success(), "shard {i}");
        }
    }
    // The merge meanwhile: shard 3 missing, and said to be.
    let mut cmd = hyper2kvm();
    let r = run(cmd.arg("--batch-merge").arg(&out));
    assert_eq!(r.code, Some(3), "{}", r.stdout);
    assert!(
        r.stdout.contains("no report from shard 3 of 8"),
        "{}",
        r.stdout
    );

    let r = run(shard(3).arg("--batch-resume"));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report = read_json(&out.join("shards/shard-3-of-8/batch_report.json"));
    for v in report["vm_results"]
        .as_array()
        .expect("as the test made it")
    {
        let id = v["vm_id"].as_str().expect("as the test made it");
        if before.contains_key(id) {
            assert_eq!(v["from_checkpoint"], true, "{id} was converted again");
            assert_eq!(inode(id), before[id], "{id}'s output was rewritten");
        } else {
            assert_eq!(v["from_checkpoint"], false, "{id}");
        }
    }
    assert_each_vm_once(&vms_by_shard(&out), 200);
    let mut cmd = hyper2kvm();
    let r = run(cmd.arg("--batch-merge").arg(&out));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let merged = read_json(&out.join("batch_report.json"));
    assert_eq!(merged["batch"]["successful_vms"], 200);
    assert_eq!(merged["merge"]["complete"], true);
    // Every output is its source, converted.
    for i in 0..200 {
        let id = format!("vm{i:03}");
        let o = Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(dir.join(&format!("in/{id}/disk.raw")))
            .arg(out.join(&id).join("d0.qcow2"))
            .status()
            .expect("qemu-img");
        assert!(o.success(), "{id}");
    }
    // No leftovers of the killed run.
    let parts: Vec<String> = crate::support::tree(&out)
        .into_iter()
        .filter(|p| p.ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
}

/// The merged page, in headless Chromium: its script runs, every link names a file, every VM of
/// every shard has its row, and the timeline has a row per shard and slot.
#[test]
#[cfg_attr(
    any(missing_tool = "qemu-img", missing_tool = "chromium"),
    ignore = "needs qemu-img and chromium (install: scripts/install-deps.sh full)"
)]
fn the_merged_page_shows_every_shard() {
    if !crate::support::require_tool("qemu-img") || !crate::support::require_tool("chromium") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 6, sizes, &[]);
    let out = dir.join("out");
    for i in 0..2 {
        let r = run(&mut batch_cmd(
            &batch,
            &out,
            &["-q", "--batch-shard", &format!("{i}/2")],
        ));
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    }
    let mut cmd = hyper2kvm();
    let r = run(cmd.arg("--batch-merge").arg(&out));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let page = out.join("batch_report.html");
    let html = std::fs::read_to_string(&page).expect("the page");
    crate::html_report::check_self_contained(&html, &out);
    let (dom, stderr) = crate::html_report::dump_dom(&page, "#sort=vm");
    crate::html_report::check_script_ran(&dom, &stderr);
    let rows = crate::html_report::row_order(&dom);
    assert_eq!(
        rows,
        (0..6).map(|i| format!("vm{i:03}")).collect::<Vec<_>>()
    );
    assert!(dom.contains("<h2>Shards</h2>"), "{dom}");
    assert!(dom.contains("Shards: 2 of 2 reported"));
    for shard in 0..2 {
        assert!(
            dom.contains(&format!("shard {shard} slot 0")),
            "no timeline row for shard {shard}"
        );
    }
}

/// Two VMs that keep one source MAC: one process refuses the second (in file order); sharded,
/// the shard that plans the second refuses it the same way, though the first is another shard's.
#[test]
#[cfg_attr(missing_tool = "qemu-img", ignore = "needs qemu-img")]
fn a_mac_kept_by_two_vms_of_two_shards_is_refused_as_in_one_process() {
    if !crate::support::require_tool("qemu-img") {
        return;
    }
    let dir = TestDir::new();
    let batch = make_batch(dir.path(), 8, sizes, &[]);
    let out = dir.join("out");
    // Which shard each VM is in, from the dry runs.
    let shard_of = |id: &str| -> usize {
        (0..2)
            .find(|i| {
                let r = run(&mut batch_cmd(
                    &batch,
                    &out,
                    &["--dry-run", "--batch-shard", &format!("{i}/2")],
                ));
                r.stdout.contains(&format!("- {id} (priority"))
            })
            .expect("in a shard")
    };
    let first = "vm000";
    let second = (1..8)
        .map(|i| format!("vm{i:03}"))
        .find(|id| shard_of(id) != shard_of(first))
        .expect("a VM in the other shard");
    for id in [first, second.as_str()] {
        let m = dir.join(&format!("in/{id}/manifest.json"));
        let mut v = read_json(&m);
        v["nics"] = json!([{"network": "lan", "mac": "00:50:56:aa:bb:cc"}]);
        v["network_mapping"]["mac_address_policy"] = json!("preserve");
        write_json(&m, &v);
    }
    let one = run(&mut batch_cmd(&batch, &dir.join("one"), &["-q"]));
    assert_eq!(one.code, Some(3), "{}", one.stdout);
    let i = shard_of(&second);
    let r = run(&mut batch_cmd(
        &batch,
        &out,
        &["-q", "--batch-shard", &format!("{i}/2")],
    ));
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    let report = read_json(&out.join(format!("shards/shard-{i}-of-2/batch_report.json")));
    let failed: Vec<&Value> = report["vm_results"]
        .as_array()
        .expect("as the test made it")
        .iter()
        .filter(|v| v["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["vm_id"], json!(second));
    let single = read_json(&dir.join("one/batch_report.json"));
    let single_error = single["vm_results"]
        .as_array()
        .expect("as the test made it")
        .iter()
        .find(|v| v["vm_id"] == json!(second))
        .expect("the second VM")["error"]
        .clone();
    assert!(
        single_error
            .as_str()
            .is_some_and(|e| e.contains("00:50:56:aa:bb:cc")),
        "{single_error}"
    );
    assert_eq!(failed[0]["error"], single_error);
}
