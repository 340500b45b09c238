//! `batch_report.html` and `report.html`: the reports as a page an admin opens in a browser,
//! built from the report structs by pure functions, like the JSON and the text summary.
//!
//! A page is one self-contained file: inline CSS, a small inline script, no fonts, images or
//! scripts from anywhere else, and a Content-Security-Policy that forbids loading any. Every
//! string from the input (VM ids, messages, paths) is escaped, and files are linked relative to
//! the page's directory, so the report directory can be copied elsewhere whole.
//!
//! The batch page has the VM table (click a header to sort; `#sort=<key>` or `#sort=-<key>` in
//! the URL sorts on load), a timeline of the worker slots with each VM's stages at their offsets,
//! the warnings and errors grouped by message, and links to each VM's report and console logs.
//! The VM page has the same for one VM's stages. The script marks `data-ready="1"` on `<body>`
//! when it ran, and `data-error` when any script failed.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::VmReport;
use super::batch::{BatchMessage, BatchReport, BatchVmStatus, VmResult, grouped};
use crate::outcome::{ArtifactKind, StageOutcome};
use crate::units::human_bytes;

/// Text made safe for HTML content and for quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

/// `target` as a link from a page in `base`: relative when both are absolute, every byte
/// outside the URL path's safe set percent-encoded (so a name holding `#`, `?` or `%` still
/// names its file).
pub fn href(target: &Path, base: &Path) -> String {
    let rel = relative(target, base);
    let mut s = String::new();
    for &b in rel.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    if s.starts_with('/') {
        s.insert_str(0, "file://");
    }
    s
}

/// The path from `base` to `target`, lexically; `target` as it is when either is relative.
fn relative(target: &Path, base: &Path) -> PathBuf {
    if !target.is_absolute() || !base.is_absolute() {
        return target.to_owned();
    }
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    rel
}

fn seconds(x: f64) -> String {
    if x < 60.0 {
        format!("{x:.2} s")
    } else {
        let whole = x.round() as u64;
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

/// Bytes per second of the run, when it read anything.
fn throughput(bytes: u64, duration: f64) -> Option<f64> {
    (bytes > 0 && duration > 0.0).then(|| bytes as f64 / duration)
}

fn rate(t: Option<f64>) -> String {
    t.map(|t| format!("{}/s", human_bytes(t as u64)))
        .unwrap_or_else(|| "—".to_owned())
}

/// What the batch page reads of a VM's report: the `pipeline_report` a batch report embeds,
/// read back from its JSON (so a merged report's page has the same as a one-process one's).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ReportView {
    errors: Vec<OriginView>,
    pipeline: PipelineView,
    artifacts: Vec<ArtifactView>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OriginView {
    stage: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct PipelineView {
    /// Stage name → what it did, in run order.
    stages: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct StageView {
    success: bool,
    start_offset: f64,
    duration: f64,
    error: Option<String>,
    result: Option<serde_json::Value>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ArtifactView {
    #[serde(rename = "type")]
    kind: String,
    path: PathBuf,
}

impl ReportView {
    fn of(report: &serde_json::Value) -> Option<ReportView> {
        serde_json::from_value(report.clone()).ok()
    }

    fn stages(&self) -> Vec<(String, StageView)> {
        self.pipeline
            .stages
            .iter()
            .map(|(name, v)| {
                (
                    name.clone(),
                    serde_json::from_value(v.clone()).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// One stage's place on a timeline.
struct Seg<'a> {
    name: &'a str,
    success: bool,
    start_offset: f64,
    duration: f64,
    error: Option<&'a str>,
}

impl<'a> From<&'a StageOutcome> for Seg<'a> {
    fn from(s: &'a StageOutcome) -> Self {
        Seg {
            name: s.stage.name(),
            success: s.success,
            start_offset: s.start_offset,
            duration: s.duration,
            error: s.error.as_deref(),
        }
    }
}

impl<'a> From<&'a (String, StageView)> for Seg<'a> {
    fn from((name, s): &'a (String, StageView)) -> Self {
        Seg {
            name,
            success: s.success,
            start_offset: s.start_offset,
            duration: s.duration,
            error: s.error.as_deref(),
        }
    }
}

/// The files a VM's report names that an admin opens: console logs and the domain XML.
fn vm_files(report: &ReportView) -> Vec<(&'static str, PathBuf)> {
    let mut files = Vec::new();
    for (_, stage) in report.stages() {
        let Some(result) = &stage.result else {
            continue;
        };
        for (key, what) in [
            ("boot_test", "boot test console"),
            ("boot", "libvirt console"),
        ] {
            if let Some(p) = result
                .get(key)
                .and_then(|b| b.get("console_log"))
                .and_then(|p| p.as_str())
            {
                files.push((what, PathBuf::from(p)));
            }
        }
    }
    for a in &report.artifacts {
        if a.kind == ArtifactKind::LibvirtDomain.name() {
            files.push(("domain XML", a.path.clone()));
        }
    }
    files
}

/// Where the VM stopped: the part of the run its first error belongs to.
fn failed_stage(v: &VmResult) -> Option<String> {
    if matches!(v.status, BatchVmStatus::Succeeded | BatchVmStatus::Skipped) {
        return None;
    }
    let report = ReportView::of(v.pipeline_report.as_deref()?)?;
    if let Some(e) = report.errors.first() {
        return Some(e.stage.clone());
    }
    let (name, _) = report.stages().into_iter().find(|(_, s)| !s.success)?;
    Some(name)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The `batch_report.html` of a batch whose report directory is `report_dir`.
pub fn batch_page(report: &BatchReport, report_dir: &Path) -> String {
    let b = &report.batch;
    let mut s = String::new();
    let _ = write!(
        s,
        "<header><h1>Batch {id}</h1><p class=\"status {status}\">{status}</p>\
         <dl><dt>Started</dt><dd>{ts}</dd><dt>Duration</dt><dd>{dur}</dd>\
         <dt>VMs</dt><dd>{total} ({ok} succeeded, {failed} failed, {skipped} skipped, \
         {ns} not started, {intr} interrupted)</dd><dt>Parallel</dt><dd>{par}</dd>\
         <dt>Read / written</dt><dd>{read} / {written}</dd><dt>Manifest</dt><dd>{manifest}</dd>\
         </dl><p class=\"links\"><a href=\"batch_report.json\">batch_report.json</a> \
         <a href=\"batch_summary.txt\">batch_summary.txt</a></p></header>",
        id = escape(&b.batch_id),
        status = escape(&b.status),
        ts = escape(&report.timestamp),
        dur = seconds(b.duration_seconds),
        total = b.total_vms,
        ok = b.successful_vms,
        failed = b.failed_vms,
        skipped = b.skipped_vms,
        ns = b.not_started_vms,
        intr = b.interrupted_vms,
        par = b.parallel_limit,
        read = human_bytes(b.bytes_read),
        written = human_bytes(b.bytes_written),
        manifest = escape(&b.manifest_path),
    );
    if let Some(m) = &report.merge {
        s.push_str("<section><h2>Shards</h2><pre class=\"shards\">");
        s.push_str(&escape(&super::batch::merge_lines(m).join("\n")));
        s.push_str("</pre></section>");
    }
    if let Some(sh) = &report.shard {
        let _ = write!(
            s,
            "<p class=\"shard\">Shard {} of {} (indexes from 0)</p>",
            sh.index, sh.count
        );
    }
    s.push_str(&vm_table(&report.vm_results, report_dir));
    s.push_str(&slot_timeline(report));
    s.push_str(&grouped_section("Errors", "error", &report.errors));
    s.push_str(&grouped_section("Warnings", "warning", &report.warnings));
    page(
        &format!("Batch {}", b.batch_id),
        &s,
        &report.hyper2kvm_version,
    )
}

fn vm_table(vms: &[VmResult], report_dir: &Path) -> String {
    let mut s = String::from(
        "<section><h2>VMs</h2><table id=\"vms\" class=\"sortable\"><thead><tr>\
         <th data-key=\"vm\">VM</th><th data-key=\"status\">Status</th>\
         <th data-key=\"failed_stage\">Failed stage</th>\
         <th data-key=\"start\" data-type=\"num\">Start</th>\
         <th data-key=\"duration\" data-type=\"num\">Duration</th>\
         <th data-key=\"bytes_read\" data-type=\"num\">Bytes read</th>\
         <th data-key=\"bytes_written\" data-type=\"num\">Bytes written</th>\
         <th data-key=\"throughput\" data-type=\"num\">Throughput</th>\
         <th data-key=\"slot\" data-type=\"num\">Slot</th>\
         <th data-key=\"error\">Error</th><th>Files</th></tr></thead><tbody>",
    );
    for v in vms {
        let stage = failed_stage(v);
        let tp = throughput(v.bytes_read, v.duration_seconds);
        let error = v.error.as_deref().unwrap_or_default();
        let mut links = String::new();
        if let Some(p) = &v.report_path {
            let _ = write!(links, "<a href=\"{}\">report.json</a>", href(p, report_dir));
        }
        let view = v.pipeline_report.as_deref().and_then(ReportView::of);
        for (what, p) in view.iter().flat_map(vm_files) {
            let _ = write!(
                links,
                " <a href=\"{}\" title=\"{}\">{what}</a>",
                href(&p, report_dir),
                escape(&p.display().to_string())
            );
        }
        let from_checkpoint = if v.from_checkpoint {
            " <small>(earlier run)</small>"
        } else {
            ""
        };
        let num = |x: Option<f64>, shown: String| match x {
            Some(x) => format!("<td class=\"num\" data-sort=\"{x}\">{shown}</td>"),
            None => "<td class=\"num\" data-sort=\"\">—</td>".to_owned(),
        };
        let _ = write!(
            s,
            "<tr data-vm=\"{id}\"><td data-sort=\"{id}\">{id}{from_checkpoint}</td>\
             <td data-sort=\"{st}\"><span class=\"status {st}\">{st}</span></td>\
             <td data-sort=\"{fs}\">{fs}</td>{start}{dur}{read}{written}{tp}{slot}\
             <td data-sort=\"{err}\" title=\"{err}\">{err1}</td><td class=\"files\">{links}</td></tr>",
            id = escape(&v.vm_id),
            st = v.status.name(),
            fs = escape(stage.as_deref().unwrap_or_default()),
            start = num(
                v.start_offset_seconds,
                format!("+{}", seconds(v.start_offset_seconds.unwrap_or_default()))
            ),
            dur = num(Some(v.duration_seconds), seconds(v.duration_seconds)),
            read = num(Some(v.bytes_read as f64), human_bytes(v.bytes_read)),
            written = num(Some(v.bytes_written as f64), human_bytes(v.bytes_written)),
            tp = num(tp, rate(tp)),
            slot = num(
                v.slot.map(|x| x as f64),
                v.slot.unwrap_or_default().to_string()
            ),
            err = escape(error),
            err1 = escape(first_line(error)),
        );
    }
    s.push_str("</tbody></table></section>");
    s
}

/// A bar's position on a timeline of `span` seconds, as CSS percentages.
fn place(offset: f64, length: f64, span: f64) -> String {
    let span = span.max(0.001);
    let left = (offset / span * 100.0).clamp(0.0, 100.0);
    let width = (length / span * 100.0).clamp(0.0, 100.0 - left);
    format!("left:{left:.3}%;width:{width:.3}%")
}

/// One stage's segment, placed within a bar of `span` seconds.
fn stage_segment(vm: &str, stage: &Seg<'_>, span: f64) -> String {
    let name = stage.name;
    let mut title = format!(
        "{vm} · {name}: {} from +{}",
        seconds(stage.duration),
        seconds(stage.start_offset)
    );
    if let Some(e) = stage.error {
        let _ = write!(title, " — failed: {}", first_line(e));
    }
    format!(
        "<div class=\"seg st-{name}{failed}\" style=\"{pos}\" title=\"{title}\"></div>",
        failed = if stage.success { "" } else { " failed" },
        pos = place(stage.start_offset, stage.duration, span),
        title = escape(&title),
    )
}

fn legend(stages: &[Seg<'_>]) -> String {
    let mut names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    names.sort_by_key(|n| crate::stage::Stage::ALL.iter().position(|s| s.name() == *n));
    names.dedup();
    let mut s = String::from("<p class=\"legend\">");
    for n in names {
        let _ = write!(s, "<span><i class=\"st-{n}\"></i>{n}</span>");
    }
    s.push_str("<span><i class=\"failed\"></i>failed</span></p>");
    s
}

fn axis(span: f64) -> String {
    let mut s = String::from("<div class=\"axis\">");
    for i in 0..=4 {
        let t = span * f64::from(i) / 4.0;
        let _ = write!(s, "<span style=\"left:{}%\">{}</span>", i * 25, seconds(t));
    }
    s.push_str("</div>");
    s
}

/// A VM on the timeline: its result, its row (shard, slot), its start and its stages.
type Placed<'a> = (&'a VmResult, (usize, usize), f64, Vec<(String, StageView)>);

fn slot_timeline(report: &BatchReport) -> String {
    // A row per worker slot; per shard and slot in a merged report, whose offsets are from the
    // first shard's start.
    let placed: Vec<Placed<'_>> = report
        .vm_results
        .iter()
        .filter_map(|v| {
            Some((
                v,
                (v.shard.unwrap_or(0), v.slot?),
                v.start_offset_seconds?,
                ReportView::of(v.pipeline_report.as_deref()?)?.stages(),
            ))
        })
        .collect();
    if placed.is_empty() {
        return String::new();
    }
    let span = placed
        .iter()
        .map(|(v, _, start, _)| start + v.duration_seconds)
        .fold(report.batch.duration_seconds, f64::max);
    let sharded = report.vm_results.iter().any(|v| v.shard.is_some());
    let lanes: std::collections::BTreeSet<(usize, usize)> = placed.iter().map(|p| p.1).collect();
    let mut s = String::from("<section><h2>Timeline</h2><div class=\"timeline\">");
    for lane in lanes {
        let label = if sharded {
            format!("shard {} slot {}", lane.0, lane.1)
        } else {
            format!("slot {}", lane.1)
        };
        let _ = write!(
            s,
            "<div class=\"row\"><span class=\"label\">{label}</span><div class=\"track\">"
        );
        for (v, _, start, stages) in placed.iter().filter(|p| p.1 == lane) {
            let id = escape(&v.vm_id);
            let title = format!(
                "{}: {} in {}, started at +{}",
                v.vm_id,
                v.status.name(),
                seconds(v.duration_seconds),
                seconds(*start)
            );
            let _ = write!(
                s,
                "<div class=\"bar {st}\" data-vm=\"{id}\" style=\"{pos}\" title=\"{title}\">",
                st = v.status.name(),
                pos = place(*start, v.duration_seconds, span),
                title = escape(&title),
            );
            for stage in stages {
                s.push_str(&stage_segment(
                    &v.vm_id,
                    &Seg::from(stage),
                    v.duration_seconds,
                ));
            }
            let _ = write!(s, "<span class=\"name\">{id}</span></div>");
        }
        s.push_str("</div></div>");
    }
    s.push_str(&axis(span));
    s.push_str("</div>");
    let all: Vec<Seg<'_>> = placed
        .iter()
        .flat_map(|p| p.3.iter().map(Seg::from))
        .collect();
    s.push_str(&legend(&all));
    s.push_str("</section>");
    s
}

fn grouped_section(title: &str, class: &str, items: &[BatchMessage]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let groups = grouped(items);
    let mut s = format!(
        "<section><h2>{title} ({})</h2><ul class=\"messages {class}\">",
        groups.len()
    );
    for (message, vms) in groups {
        let _ = write!(
            s,
            "<li><pre>{}</pre><p class=\"vms\">{} VM{}: {}</p></li>",
            escape(message),
            vms.len(),
            if vms.len() == 1 { "" } else { "s" },
            escape(&vms.join(", "))
        );
    }
    s.push_str("</ul></section>");
    s
}

/// The `report.html` of one VM, written in `report_dir` beside its `report.json` (`json_name`).
pub fn vm_page(report: &VmReport, report_dir: &Path, json_name: &str) -> String {
    let p = &report.pipeline;
    let tp = throughput(p.bytes_read, p.duration_seconds);
    let mut s = String::new();
    let _ = write!(
        s,
        "<header><h1>VM {id}</h1><p class=\"status {st}\">{st}</p>\
         <dl><dt>Started</dt><dd>{ts}</dd><dt>Duration</dt><dd>{dur}</dd>\
         <dt>Read / written</dt><dd>{read} / {written}</dd><dt>Throughput</dt><dd>{tp}</dd>\
         <dt>Manifest</dt><dd>{manifest}</dd></dl>\
         <p class=\"links\"><a href=\"{json}\">{json_text}</a>",
        id = escape(&report.vm_id),
        st = report.status.name(),
        ts = escape(&report.timestamp),
        dur = seconds(p.duration_seconds),
        read = human_bytes(p.bytes_read),
        written = human_bytes(p.bytes_written),
        tp = rate(tp),
        manifest = escape(&report.input_manifest.path),
        json = href(Path::new(json_name), report_dir),
        json_text = escape(json_name),
    );
    let view = serde_json::to_value(report)
        .ok()
        .and_then(|v| ReportView::of(&v))
        .unwrap_or_default();
    for (what, path) in vm_files(&view) {
        let _ = write!(
            s,
            " <a href=\"{}\" title=\"{}\">{what}</a>",
            href(&path, report_dir),
            escape(&path.display().to_string())
        );
    }
    s.push_str("</p></header>");

    let stages: Vec<&StageOutcome> = p.stages.0.iter().collect();
    let span = stages
        .iter()
        .map(|st| st.start_offset + st.duration)
        .fold(p.duration_seconds, f64::max);
    s.push_str("<section><h2>Stages</h2><div class=\"timeline\">");
    for st in &stages {
        let _ = write!(
            s,
            "<div class=\"row\"><span class=\"label\">{}</span><div class=\"track\">{}</div></div>",
            st.stage.name(),
            stage_segment(&report.vm_id, &Seg::from(*st), span)
        );
    }
    s.push_str(&axis(span));
    s.push_str("</div>");
    s.push_str(&legend(
        &stages.iter().map(|st| Seg::from(*st)).collect::<Vec<_>>(),
    ));
    s.push_str(
        "<table><thead><tr><th>Stage</th><th>Status</th><th>Start</th><th>Duration</th>\
         <th>Commands</th><th>Error</th></tr></thead><tbody>",
    );
    for st in &stages {
        let _ = write!(
            s,
            "<tr><td>{}</td><td><span class=\"status {ok}\">{ok}</span></td><td>+{}</td>\
             <td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            st.stage.name(),
            seconds(st.start_offset),
            seconds(st.duration),
            st.commands.len(),
            escape(st.error.as_deref().unwrap_or_default()),
            ok = if st.success { "succeeded" } else { "failed" },
        );
    }
    s.push_str("</tbody></table></section>");

    if !report.hooks.is_empty() {
        s.push_str(
            "<section><h2>Hooks</h2><table><thead><tr><th>Hook stage</th><th>Type</th>\
             <th>Target</th><th>Status</th><th>Duration</th></tr></thead><tbody>",
        );
        for h in &report.hooks {
            let ok = if h.success { "succeeded" } else { "failed" };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><span class=\"status {ok}\">{ok}</span>\
                 </td><td>{}</td></tr>",
                h.stage.name(),
                escape(h.kind),
                escape(&h.target),
                seconds(h.duration_seconds)
            );
        }
        s.push_str("</tbody></table></section>");
    }
    for (title, class, items) in [
        ("Errors", "error", &report.errors),
        ("Warnings", "warning", &report.warnings),
    ] {
        if items.is_empty() {
            continue;
        }
        let _ = write!(
            s,
            "<section><h2>{title} ({})</h2><ul class=\"messages {class}\">",
            items.len()
        );
        for m in items {
            let _ = write!(
                s,
                "<li><pre>{}</pre><p class=\"vms\">{}</p></li>",
                escape(&m.message),
                m.stage.name()
            );
        }
        s.push_str("</ul></section>");
    }
    if !report.artifacts.is_empty() {
        s.push_str(
            "<section><h2>Artifacts</h2><table><thead><tr><th>Type</th><th>Disk</th><th>File</th>\
             <th>Format</th><th>Size</th></tr></thead><tbody>",
        );
        for a in &report.artifacts {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                a.kind.name(),
                escape(&a.disk_id),
                href(&a.path, report_dir),
                escape(&a.path.display().to_string()),
                escape(&a.format),
                escape(&a.size_human)
            );
        }
        s.push_str("</tbody></table></section>");
    }
    page(
        &format!("VM {}", report.vm_id),
        &s,
        report.hyper2kvm_version,
    )
}

fn page(title: &str, body: &str, version: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} — hyper2kvm</title><style>{CSS}</style></head>\n<body>\
         <script>window.onerror=function(m){{document.body.dataset.error=String(m);}};</script>\
         {body}<footer>hyper2kvm {version}</footer><script>{JS}</script></body></html>\n",
        title = escape(title),
        version = escape(version),
    )
}

const CSS: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:1em 2em;max-width:1400px;color:#222}\
h1{font-size:1.5em;margin:.2em 0;display:inline-block}h2{font-size:1.15em;margin:1.2em 0 .5em}\
header .status{display:inline-block;margin-left:1em;vertical-align:.3em}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.5em 0}\
dt{color:#666}dd{margin:0;word-break:break-all}\
table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}th[data-key]{cursor:pointer;user-select:none}\
th[aria-sort=ascending]::after{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}\
td[title]{max-width:28em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}\
td pre,li pre{margin:0;white-space:pre-wrap;font:12px/1.3 ui-monospace,monospace}\
.status{padding:.05em .5em;border-radius:.8em;font-size:12px;background:#ddd}\
.status.succeeded{background:#cdeccd}.status.failed{background:#f7c6c6}\
.status.interrupted{background:#fde3b5}.status.skipped,.status.not_started{background:#e6e6e6}\
.links a{margin-right:.8em}td.num{white-space:nowrap;text-align:right}.files a{white-space:nowrap}\
.timeline{position:relative;padding-bottom:1.4em}\
.row{display:flex;align-items:center;height:26px;margin:3px 0}\
.label{width:10em;flex:none;color:#555;font-size:12px}\
.track{position:relative;flex:1;height:100%;background:#f7f7f7}\
.bar{position:absolute;top:0;bottom:0;background:#d8d8d8;border:1px solid #999;box-sizing:border-box;overflow:hidden}\
.bar.failed{border:2px solid #c00}.bar.interrupted{border:2px solid #d80}\
.bar .name{position:absolute;left:3px;top:3px;font-size:11px;pointer-events:none;white-space:nowrap}\
.seg{position:absolute;top:0;bottom:0;min-width:1px}.track>.seg{top:3px;bottom:3px}\
.seg.failed,.legend i.failed{background-image:repeating-linear-gradient(45deg,transparent 0 4px,#c00 4px 6px)}\
.axis{position:absolute;left:10em;right:0;bottom:0;height:1.2em;font-size:11px;color:#777}\
.axis span{position:absolute;white-space:nowrap;transform:translateX(-50%)}.axis span:first-child{transform:none}\
.axis span:last-child{transform:translateX(-100%)}\
.legend span{margin-right:1em;font-size:12px}\
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em;border:1px solid #999}\
.st-load_manifest{background-color:#8da0cb}.st-inspect{background-color:#66c2a5}\
.st-fix{background-color:#e78ac3}.st-convert{background-color:#fc8d62}\
.st-validate{background-color:#a6d854}.st-domain_xml{background-color:#ffd92f}\
.st-libvirt_integration{background-color:#e5c494}\
ul.messages{list-style:none;padding:0}ul.messages li{border-left:4px solid #999;padding:.3em .7em;margin:.4em 0;background:#fafafa}\
ul.error li{border-color:#c00}ul.warning li{border-color:#d80}.vms{margin:.2em 0 0;color:#555;font-size:12px}\
footer{margin-top:2em;color:#888;font-size:12px}";

/// Sorting the VM table: a header click, or `#sort=<key>` / `#sort=-<key>` in the URL.
const JS: &str = r#"(function(){
var table=document.getElementById('vms');
function sortBy(key,desc){
  if(!table)return false;
  var th=table.querySelector('th[data-key="'+key+'"]');
  if(!th)return false;
  var col=Array.prototype.indexOf.call(th.parentNode.children,th),num=th.dataset.type==='num';
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  function val(r){var v=r.cells[col].dataset.sort;if(!num)return v;v=parseFloat(v);return isNaN(v)?-Infinity:v;}
  rows.sort(function(a,b){var x=val(a),y=val(b),c=num?(x<y?-1:x>y?1:0):x.localeCompare(y);return desc?-c:c;});
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',desc?'descending':'ascending');
  table.dataset.sorted=(desc?'-':'')+key;
  return true;
}
function fromHash(){var m=/^#sort=(-?)(\w+)$/.exec(location.hash);if(m)sortBy(m[2],m[1]==='-');}
if(table){
  Array.prototype.forEach.call(table.querySelectorAll('th[data-key]'),function(th){
    th.addEventListener('click',function(){
      var key=th.dataset.key,desc=table.dataset.sorted===key;
      try{history.replaceState(null,'','#sort='+(desc?'-':'')+key);}catch(e){}
      sortBy(key,desc);
    });
  });
  window.addEventListener('hashchange',fromHash);
  fromHash();
}
document.body.dataset.ready='1';
})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("vm-01 ünï"), "vm-01 ünï");
    }

    #[test]
    fn links_are_relative_and_encoded() {
        let dir = Path::new("/srv/out");
        assert_eq!(
            href(Path::new("/srv/out/vm1/report.json"), dir),
            "vm1/report.json"
        );
        assert_eq!(
            href(Path::new("/srv/logs/a b#1.log"), dir),
            "../logs/a%20b%231.log"
        );
        assert_eq!(href(Path::new("/srv/out/<x>\".log"), dir), "%3Cx%3E%22.log");
        assert_eq!(href(Path::new("report.json"), dir), "report.json");
    }

    fn msg(vm: &str, text: &str) -> BatchMessage {
        BatchMessage {
            vm_id: vm.to_owned(),
            message: text.to_owned(),
            timestamp: String::new(),
        }
    }

    #[test]
    fn same_warning_across_vms_is_one_item_listing_the_vms() {
        let items = [
            msg("web01", "vm.cpu not set"),
            msg("db<1>", "disk <d0> is sparse"),
            msg("web02", "vm.cpu not set"),
            msg("web01", "vm.cpu not set"),
        ];
        assert_eq!(
            grouped(&items),
            [
                ("vm.cpu not set", vec!["web01", "web02"]),
                ("disk <d0> is sparse", vec!["db<1>"]),
            ]
        );
        let html = grouped_section("Warnings", "warning", &items);
        assert_eq!(html.matches("<li>").count(), 2, "{html}");
        assert!(html.contains("<h2>Warnings (2)</h2>"), "{html}");
        assert!(html.contains("2 VMs: web01, web02"), "{html}");
        assert!(
            html.contains("<pre>disk &lt;d0&gt; is sparse</pre>"),
            "{html}"
        );
        assert!(html.contains("1 VM: db&lt;1&gt;"), "{html}");
        assert!(!html.contains("<d0>") && !html.contains("<1>"), "{html}");
        assert_eq!(grouped_section("Errors", "error", &[]), "");
    }

    #[test]
    fn bars_stay_inside_the_track() {
        assert_eq!(place(5.0, 5.0, 10.0), "left:50.000%;width:50.000%");
        assert_eq!(place(9.0, 5.0, 10.0), "left:90.000%;width:10.000%");
        assert_eq!(place(0.0, 1.0, 0.0), "left:0.000%;width:100.000%");
    }
}
