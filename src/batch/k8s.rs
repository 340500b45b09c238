//! `--batch-k8s-job N`: the batch as a Kubernetes Indexed Job, one pod per shard.
//!
//! Every pod runs the same command, `hyper2kvm --batch-manifest B --batch-shard env/N
//! --batch-resume`, and Kubernetes gives each its `JOB_COMPLETION_INDEX`, so the pods split the
//! batch as `--batch-shard` does, with no coordinator. The paths of the batch stay what they are
//! on the host that printed the Job: the sources claim is mounted read-only at the directory
//! that holds the batch file, its manifests and every source disk, and the outputs claim at the
//! batch's output directory (where the shard reports and every VM's outputs go). What cannot
//! work that way (inputs with no common directory, a VM writing outside the outputs claim) is
//! refused here, naming the VM, rather than failing in every pod.
//!
//! A pod that fails is retried for its own index only (`backoffLimitPerIndex`), and `--batch-
//! resume` then keeps the VMs it had finished. Exit codes that a retry cannot change (2 invalid
//! input, 3 some VMs failed, 4 a tool missing) fail the index at once (`podFailurePolicy`), and a
//! pod evicted or preempted (`DisruptionTarget`) is rerun without counting against the limit.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{BatchManifest, shard};

/// The default claims and image.
pub const SOURCES_CLAIM: &str = "hyper2kvm-sources";
pub const OUTPUTS_CLAIM: &str = "hyper2kvm-outputs";

/// The pod's scratch directory (an emptyDir): the libguestfs appliance cache and temporary
/// files. A name of its own, so that it never hides a batch path.
pub const SCRATCH: &str = "/hyper2kvm-scratch";

/// How many times one index is retried before it counts as failed.
pub const BACKOFF_LIMIT_PER_INDEX: u32 = 2;

/// What the Job is made of, beside the batch.
#[derive(Clone, Debug)]
pub struct JobOptions {
    pub shards: usize,
    pub image: Option<String>,
    pub parallelism: Option<usize>,
    pub sources_claim: Option<String>,
    pub outputs_claim: Option<String>,
    /// `--output-dir`, passed on to the pods.
    pub output_dir: Option<PathBuf>,
    /// `--batch-parallel`, passed on to the pods.
    pub batch_parallel: Option<usize>,
    /// Whether the pods get `/dev/kvm` (it exists on this host).
    pub kvm: bool,
}

/// The Job, or every reason it cannot be made.
pub fn job(batch: &BatchManifest, opts: &JobOptions) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let shared_out = opts
        .output_dir
        .as_ref()
        .map(|d| crate::config::absolute(d))
        .or_else(|| batch.output_directory.clone());
    let Some(out) = shared_out else {
        return Err(vec![
            "the Job needs the batch's output directory, where every pod writes its shard report \
             and its VMs' outputs (the outputs claim is mounted there): set \
             shared_config.output_directory or pass --output-dir"
                .to_owned(),
        ]);
    };
    let sketches: Vec<shard::Sketch> = batch
        .vms
        .iter()
        .map(|e| super::sketch(batch, e, Some(&out)))
        .collect();

    // The sources root: the deepest directory above the batch file and every input.
    let mut inputs: Vec<PathBuf> = vec![batch.path.clone()];
    for (e, s) in batch.vms.iter().zip(&sketches) {
        if e.enabled {
            inputs.push(e.manifest.clone());
            inputs.extend(s.sources.iter().cloned());
        }
    }
    let root = common_dir(&inputs);
    if root.parent().is_none() {
        problems.push(format!(
            "the batch's inputs have no directory in common but / ({}): the Job mounts one \
             sources claim, so keep the batch file, its manifests and their disks under one \
             directory",
            spread(&inputs)
        ));
    }
    if root.starts_with(SCRATCH) || out.starts_with(SCRATCH) {
        problems.push(format!(
            "the batch's files are under {SCRATCH}, which the Job uses as the pods' scratch \
             directory"
        ));
    }
    if root == out {
        problems.push(format!(
            "the batch's inputs and its output directory are the same directory {}: the \
             sources are mounted read-only, so give the outputs a directory of their own \
             (shared_config.output_directory or --output-dir)",
            out.display()
        ));
    }
    for (e, s) in batch.vms.iter().zip(&sketches) {
        if let Some(dir) = &s.output_dir
            && e.enabled
            && !dir.starts_with(&out)
        {
            problems.push(format!(
                "vm {}: it writes to {}, outside the batch's output directory {} where the \
                 outputs claim is mounted; in a pod its outputs would be lost with the pod. \
                 Remove its output.directory (it then writes under {}/{})",
                e.id,
                dir.display(),
                out.display(),
                out.display(),
                e.id
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let shards = opts.shards.max(1);
    let mut command: Vec<String> = vec![
        "hyper2kvm".into(),
        "--batch-manifest".into(),
        batch.path.display().to_string(),
        "--batch-shard".into(),
        format!("env/{shards}"),
        "--batch-resume".into(),
    ];
    if opts.output_dir.is_some() {
        command.extend(["--output-dir".into(), out.display().to_string()]);
    }
    if let Some(p) = opts.batch_parallel {
        command.extend(["--batch-parallel".into(), p.to_string()]);
    }
    let name = job_name(&batch.batch_id);
    let mut mounts = vec![
        json!({"name": "sources", "mountPath": root.display().to_string(), "readOnly": true}),
        json!({"name": "outputs", "mountPath": out.display().to_string()}),
        json!({"name": "scratch", "mountPath": SCRATCH}),
    ];
    let mut volumes = vec![
        json!({"name": "sources", "persistentVolumeClaim": {
            "claimName": opts.sources_claim.as_deref().unwrap_or(SOURCES_CLAIM), "readOnly": true}}),
        json!({"name": "outputs", "persistentVolumeClaim": {
            "claimName": opts.outputs_claim.as_deref().unwrap_or(OUTPUTS_CLAIM)}}),
        // The libguestfs appliance is built and cached here, and temporary files live here.
        json!({"name": "scratch", "emptyDir": {}}),
    ];
    // Mounts nest in path order (an outputs directory under the sources root after it).
    mounts[..2].sort_by_key(|m| m["mountPath"].as_str().map(str::len));
    let mut security = json!({
        "runAsUser": 0,
        "runAsGroup": 0,
        "allowPrivilegeEscalation": false,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if opts.kvm {
        // A device from a hostPath is usable only by a privileged container (or through a
        // device plugin, see docs/scale-out.md); the tool still probes that KVM works and falls
        // back to TCG when it does not.
        mounts.push(json!({"name": "kvm", "mountPath": "/dev/kvm"}));
        volumes
            .push(json!({"name": "kvm", "hostPath": {"path": "/dev/kvm", "type": "CharDevice"}}));
        security = json!({
            "runAsUser": 0,
            "runAsGroup": 0,
            "privileged": true,
        });
    }
    let labels = json!({
        "app.kubernetes.io/name": "hyper2kvm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "batch-shard",
    });
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "hyper2kvm/batch-id": batch.batch_id,
                "hyper2kvm/batch-manifest": batch.path.display().to_string(),
                "hyper2kvm/shards": shards.to_string(),
            },
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": opts.parallelism.unwrap_or(shards).clamp(1, shards),
            "backoffLimitPerIndex": BACKOFF_LIMIT_PER_INDEX,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": {
                            "containerName": "hyper2kvm",
                            "operator": "In",
                            "values": [
                                crate::exit_code::INVALID_INPUT,
                                crate::exit_code::BATCH_PARTIAL,
                                crate::exit_code::MISSING_TOOL,
                            ],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ],
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "hyper2kvm",
                        "image": opts.image.clone()
                            .unwrap_or_else(|| format!("hyper2kvm:{}", env!("CARGO_PKG_VERSION"))),
                        "command": command,
                        "env": [
                            {"name": "LIBGUESTFS_BACKEND", "value": "direct"},
                            {"name": "LIBGUESTFS_CACHEDIR", "value": SCRATCH},
                            {"name": "TMPDIR", "value": SCRATCH},
                        ],
                        "resources": {
                            "requests": {"cpu": "1", "memory": "2Gi"},
                        },
                        "securityContext": security,
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }))
}

/// The Job as YAML.
pub fn to_yaml(job: &Value) -> String {
    serde_saphyr::to_string(job).unwrap_or_else(|_| {
        serde_json::to_string_pretty(job).expect("a JSON value always serializes")
    })
}

/// `hyper2kvm-<batch id>` as a DNS-1123 label, short enough that `<name>-<index>` (a pod's
/// hostname) stays within 63 characters.
pub fn job_name(batch_id: &str) -> String {
    let mut s = String::from("hyper2kvm-");
    for c in batch_id.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.truncate(52);
    while s.ends_with('-') {
        s.pop();
    }
    s
}

/// The deepest directory that holds every path.
fn common_dir(paths: &[PathBuf]) -> PathBuf {
    let dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let p = crate::config::absolute(p);
            if p.is_dir() {
                p
            } else {
                crate::config::dir_of(&p)
            }
        })
        .collect();
    let Some(first) = dirs.first() else {
        return PathBuf::from("/");
    };
    let mut common = first.clone();
    for d in &dirs[1..] {
        while !d.starts_with(&common) {
            if !common.pop() {
                return PathBuf::from("/");
            }
        }
    }
    common
}

/// A few of the top-level directories the inputs are spread over.
fn spread(paths: &[PathBuf]) -> String {
    let mut tops: Vec<String> = paths
        .iter()
        .filter_map(|p| p.components().nth(1))
        .map(|c| format!("/{}", Path::new(c.as_os_str()).display()))
        .collect();
    tops.sort();
    tops.dedup();
    tops.truncate(4);
    tops.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels() {
        assert_eq!(job_name("Wave 3 / DC_East"), "hyper2kvm-wave-3-dc-east");
        let long = job_name(&"x".repeat(200));
        assert_eq!(long.len(), 52);
        assert_eq!(job_name("--"), "hyper2kvm");
    }

    #[test]
    fn the_common_directory_of_inputs() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            common_dir(&[
                p("/srv/m/batch.json"),
                p("/srv/m/vms/a.vmdk"),
                p("/srv/m/b.yaml")
            ]),
            p("/srv/m")
        );
        assert_eq!(common_dir(&[p("/srv/a/x"), p("/data/y")]), p("/"));
    }
}
