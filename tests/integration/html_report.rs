//! The HTML reports: `batch_report.html` of a real batch and `report.html` of a single run,
//! checked as text (every VM, status and failed stage; links that resolve; nothing loaded from
//! elsewhere; input escaped) and in headless Chromium (the script runs without error, and the
//! VM table sorts by `#sort=<key>`). The timeline's data, `start_offset_seconds` and `slot` in
//! batch_report.json and `start_offset` per stage in report.json, is checked here too.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

/// A batch id that is markup: it must come out as text.
const HOSTILE_ID: &str = "wave-1 <b onclick=alert(1)> & \"co\"";

/// The `href` values of a page, in order.
fn hrefs(html: &str) -> Vec<String> {
    let re = regex_lite::Regex::new(r#"href="([^"]*)""#).expect("regex");
    re.captures_iter(html).map(|c| c[1].to_owned()).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("utf-8");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Every link of a page names a file that exists, relative to the page's directory; no link,
/// script, style or image comes from the network.
pub(crate) fn check_self_contained(html: &str, page_dir: &Path) -> Vec<PathBuf> {
    for needle in ["http://", "https://", "src=", "url(", "@import", "//cdn"] {
        assert!(!html.contains(needle), "the page holds {needle:?}");
    }
    let links = hrefs(html);
    assert!(!links.is_empty(), "no links");
    links
        .iter()
        .map(|h| {
            assert!(!h.starts_with('/') && !h.contains(':'), "not relative: {h}");
            let target = page_dir.join(percent_decode(h));
            assert!(
                target.is_file(),
                "{h} -> {} is not a file",
                target.display()
            );
            target
        })
        .collect()
}

/// `file://` and the path, percent-encoded (the test's directory name holds `#` and spaces).
fn file_url(path: &Path) -> String {
    let mut url = "file://".to_owned();
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The page as headless Chromium leaves it after its scripts ran, and Chromium's stderr.
pub(crate) fn dump_dom(page: &Path, fragment: &str) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{}{fragment}", file_url(page)))
        .output()
        .expect("spawn chromium");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The script ran to its end and nothing threw.
pub(crate) fn check_script_ran(dom: &str, stderr: &str) {
    let body = regex_lite::Regex::new(r"<body[^>]*>").expect("regex");
    let tag = body.find(dom).expect("a body").as_str();
    assert!(
        tag.contains(r#"data-ready="1""#),
        "the script did not finish: {tag}"
    );
    assert!(!tag.contains("data-error"), "a script failed: {tag}");
    assert!(!stderr.contains("Uncaught"), "{stderr}");
}

/// The VM ids of the table's rows, in the order the DOM has them.
pub(crate) fn row_order(dom: &str) -> Vec<String> {
    let table = &dom[dom.find(r#"id="vms""#).expect("the VM table")..];
    let table = &table[..table.find("</table>").expect("table end")];
    let re = regex_lite::Regex::new(r#"<tr data-vm="([^"]+)""#).expect("regex");
    re.captures_iter(table).map(|c| c[1].to_owned()).collect()
}

fn vm_manifest(dir: &TestDir, name: &str, driver: &str, format: &str) {
    std::fs::create_dir_all(dir.join("disks")).expect("mkdir");
    let disk = dir.join(&format!("disks/{name}.img"));
    make_image(&disk, driver, None);
    dir.write(
        &format!("vms/{name}.yaml"),
        &format!(
            "manifest_version: \"1.0\"\nsource: {{vm_name: {name}}}\nvm: {{firmware: bios}}\ndisks:\n  - {{id: {name}-d0, source_format: {format}, bytes: {}, local_path: ../disks/{name}.img}}\n",
            file_size(&disk)
        ),
    );
}

/// Four VMs, two at a time, one failing at inspect (a qcow2 listed as vmdk), into a directory
/// whose name needs escaping in a URL: the page lists every VM with its status and failed
/// stage, links only files that exist, loads nothing, escapes the batch id, runs its script
/// cleanly in Chromium, and sorts its table from the URL.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-io",
        missing_tool = "chromium"
    ),
    ignore = "needs qemu-img, qemu-io and chromium (install: scripts/install-deps.sh full)"
)]
fn batch_page_of_a_real_batch() {
    if !require_tool("qemu-img") || !require_tool("qemu-io") || !require_tool("chromium") {
        return;
    }
    let dir = TestDir::new();
    // Not in alphabetical order, so sorting by VM is visible.
    let vms = [
        ("web02", "qcow2", "qcow2"),
        ("app01", "qcow2", "vmdk"),
        ("db01", "raw", "raw"),
        ("cache01", "vpc", "vhd"),
    ];
    let mut entries = Vec::new();
    for (name, driver, format) in vms {
        vm_manifest(&dir, name, driver, format);
        entries.push(json!({"manifest": format!("vms/{name}.yaml"), "id": name}));
    }
    let batch = dir.join("batch.json");
    write_json(
        &batch,
        &json!({
            "batch_version": "1.0",
            "batch_metadata": {"batch_id": HOSTILE_ID, "parallel_limit": 2, "continue_on_error": true},
            "shared_config": {
                "output_directory": "out #1 & co",
                "pipeline": {
                    "inspect": {"enabled": true},
                    "convert": {"enabled": true},
                    "validate": {"enabled": true}
                }
            },
            "vms": entries,
        }),
    );
    let r = run(hyper2kvm()
        .arg("--batch-manifest")
        .arg(&batch)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(3), "{}\n{}", r.stdout, r.stderr);
    let out = dir.join("out #1 & co");
    assert!(
        r.stdout.contains(&format!(
            "Reports: {}, batch_summary.txt and batch_report.html\n",
            out.join("batch_report.json").display()
        )),
        "{}",
        r.stdout
    );

    // The timeline's data: each VM's start in the batch and its worker slot, each stage's
    // start in its VM, inside the VM's run.
    let report = read_json(&out.join("batch_report.json"));
    let results = report["vm_results"].as_array().expect("vm_results");
    let mut slots = Vec::new();
    for v in results {
        let start = v["start_offset_seconds"]
            .as_f64()
            .expect("start_offset_seconds");
        let total = report["batch"]["duration_seconds"]
            .as_f64()
            .expect("duration");
        assert!(start >= 0.0 && start <= total + 0.01, "{v:#}");
        slots.push(v["slot"].as_u64().expect("slot"));
        let vm_duration = v["pipeline_report"]["pipeline"]["duration_seconds"]
            .as_f64()
            .expect("duration");
        let mut previous_end = 0.0;
        let stages = v["pipeline_report"]["pipeline"]["stages"]
            .as_object()
            .expect("stages");
        for (name, stage) in stages {
            let offset = stage["start_offset"].as_f64().expect("start_offset");
            let end = offset + stage["duration"].as_f64().expect("duration");
            assert!(
                offset + 0.0015 >= previous_end,
                "{name} starts before the last ends"
            );
            assert!(end <= vm_duration + 0.01, "{name} ends after its VM: {v:#}");
            previous_end = end;
        }
    }
    assert!(slots.iter().all(|&s| s < 2), "{slots:?}");
    assert!(slots.contains(&0) && slots.contains(&1), "{slots:?}");

    let page = out.join("batch_report.html");
    let html = std::fs::read_to_string(&page).expect("batch_report.html");
    assert!(
        !html.contains("<b ")
            && html.contains("wave-1 &lt;b onclick=alert(1)&gt; &amp; &quot;co&quot;"),
        "the batch id is not escaped"
    );
    let linked = check_self_contained(&html, &out);
    for (name, ..) in vms {
        assert!(
            html.contains(&format!(r#"<tr data-vm="{name}">"#)),
            "{name}"
        );
        assert!(
            linked.contains(&out.join(format!("{name}/report.json"))),
            "{name}'s report is not linked"
        );
        assert!(
            html.contains(r#"<div class="bar "#)
                && html.contains(&format!(r#"data-vm="{name}" style="#)),
            "{name} is not on the timeline"
        );
    }
    let row = |name: &str| {
        let start = html
            .find(&format!(r#"<tr data-vm="{name}">"#))
            .expect("row");
        html[start..start + html[start..].find("</tr>").expect("row end")].to_owned()
    };
    assert!(row("app01").contains(r#"<span class="status failed">failed</span>"#));
    assert!(
        row("app01").contains(r#"<td data-sort="load_manifest">load_manifest</td>"#),
        "{}",
        row("app01")
    );
    assert!(row("db01").contains(r#"<span class="status succeeded">succeeded</span>"#));
    assert!(row("db01").contains("domain XML"), "{}", row("db01"));
    assert!(html.contains("<h2>Errors (1)</h2>"));
    // The planning warning every VM shares (memory and vCPUs unset) is listed once.
    assert!(html.contains("<h2>Warnings (1)</h2>"), "{html}");
    assert!(
        html.contains("4 VMs: web02, app01, db01, cache01"),
        "{html}"
    );

    let (dom, stderr) = dump_dom(&page, "");
    check_script_ran(&dom, &stderr);
    assert_eq!(row_order(&dom), ["web02", "app01", "db01", "cache01"]);

    let (dom, stderr) = dump_dom(&page, "#sort=vm");
    check_script_ran(&dom, &stderr);
    assert_eq!(row_order(&dom), ["app01", "cache01", "db01", "web02"]);
    assert!(dom.contains(r#"data-sorted="vm""#));

    let (dom, stderr) = dump_dom(&page, "#sort=-duration");
    check_script_ran(&dom, &stderr);
    let duration = |id: &str| {
        results
            .iter()
            .find(|v| v["vm_id"] == id)
            .and_then(|v| v["duration_seconds"].as_f64())
            .expect("duration")
    };
    let order = row_order(&dom);
    assert_eq!(order.len(), 4);
    for pair in order.windows(2) {
        assert!(
            duration(&pair[0]) >= duration(&pair[1]),
            "{order:?} is not by duration, longest first"
        );
    }
    assert!(dom.contains(r#"aria-sort="descending""#));
}

/// A single run whose boot test fails (a blank disk: SeaBIOS finds nothing to boot) writes
/// report.html beside report.json: its stages on a timeline, the failed stage and its error,
/// links to the console log and the outputs, and a script that runs cleanly.
#[test]
#[cfg_attr(
    any(
        missing_tool = "qemu-img",
        missing_tool = "qemu-system-x86_64",
        missing_tool = "chromium"
    ),
    ignore = "needs qemu-img, qemu-system-x86_64 and chromium (install: scripts/install-deps.sh full)"
)]
fn vm_page_of_a_failed_boot_test() {
    if !require_tool("qemu-img") || !require_tool("qemu-system-x86_64") || !require_tool("chromium")
    {
        return;
    }
    let dir = TestDir::new();
    let disk = dir.join("blank.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("64M"),
    );
    let manifest = dir.write(
        "blank.yaml",
        &format!(
            "manifest_version: \"1.0\"\nsource: {{provider: local, vm_name: \"blank<&>\"}}\nvm: {{firmware: bios}}\npipeline:\n  convert: {{enabled: true}}\n  validate:\n    enabled: true\n    boot_test: {{enabled: true, timeout: 60, memory_mb: 256}}\ndisks:\n  - {{id: boot, source_format: raw, bytes: {}, local_path: blank.raw}}\n",
            file_size(&disk)
        ),
    );
    let r = run(hyper2kvm()
        .arg("--manifest")
        .arg(&manifest)
        .args(["--progress", "none"]));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let out = dir.join("output");
    assert!(
        r.stdout.contains(&format!(
            "Reports: {} and report.html\n",
            out.join("report.json").display()
        )),
        "{}",
        r.stdout
    );
    let report: Value = read_json(&out.join("report.json"));
    let stages = report["pipeline"]["stages"].as_object().expect("stages");
    assert!(
        stages.values().all(|s| s["start_offset"].is_f64()),
        "{report:#}"
    );

    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).expect("report.html");
    assert!(html.contains("<h1>VM blank&lt;&amp;&gt;</h1>"), "{html}");
    let linked = check_self_contained(&html, &out);
    let console = report["pipeline"]["stages"]["validate"]["result"]["boot_test"]["console_log"]
        .as_str()
        .expect("console log");
    assert!(linked.contains(&PathBuf::from(console)), "{linked:?}");
    assert!(linked.contains(&out.join("report.json")), "{linked:?}");
    assert!(linked.contains(&out.join("boot.qcow2")), "{linked:?}");
    for name in stages.keys() {
        assert!(
            html.contains(&format!(r#"<span class="label">{name}</span>"#)),
            "{name}"
        );
    }
    assert!(html.contains(r#"class="seg st-validate failed""#), "{html}");
    assert!(html.contains("<h2>Errors (1)</h2>"), "{html}");

    let (dom, stderr) = dump_dom(&page, "");
    check_script_ran(&dom, &stderr);
}
