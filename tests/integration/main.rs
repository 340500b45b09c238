//! Integration tests: the real binary against real images made per test with qemu-img and
//! qemu-io. One test binary; each module says what belongs in it.
#![allow(
    clippy::print_stderr,
    reason = "tests print a visible SKIPPED line when a tool is missing"
)]
#![allow(
    clippy::disallowed_types,
    reason = "the tests run the real binary and make and check images with the real tools, \
              outside the crate's process runner (clippy.toml)"
)]

/// Helpers: temp dirs, images, manifests, running the binary, redaction.
mod support;

/// Every supported source format converted to every output format, content compared.
mod convert;

/// The module layers of `src/`: no import points up.
mod layers;

/// Invalid manifests and configs: exit code 2, every problem named, nothing written.
mod bad_input;

/// Only real disks are sources, sources are pinned, outputs are safe and private.
mod trust_sources;

/// Runs that start and fail: corrupt sources, format mismatches, full or unwritable outputs.
mod failures;

/// Hostile documents (deep nesting, alias bombs, huge files, floods of problems) refused within
/// bounds, under an address-space limit.
mod hostile;

/// Built-in and custom profiles as seen through --dump-config.
mod profiles;

/// User-facing text: --help, dry run, summaries, exit codes.
mod text;

/// As an installed tool: -q, --version, `make install` with the man page and completions.
mod cli;

/// Batch mode: parallel VMs, isolation, ordering, reports, resume.
mod batch;

/// The HTML reports of a real batch and a single run, as text and in headless Chromium.
mod html_report;

/// What the operator sees: bars on a real pty, timestamped lines, the JSON event stream against
/// its schema, live failures, the log file.
mod progress;

/// Phony guests (built with guestfish, cached outside the checkout) for the fix tests.
mod guests;

/// Offline guest repair with libguestfs on phony guests.
mod fix;

/// Consent before a source is written (in-place repairs refused without it, whole-disk backups
/// with it), and a dry run that starts and writes nothing.
mod trust_consent;

/// A libguestfs appliance launch that hangs: killed at its timeout, relaunched once, its
/// console kept, no qemu left behind.
mod appliance;

/// Guest commands: failures seen, backups read back, a hung command killed with its appliance.
mod guest_commands;

/// The fuzz targets' short run: seeds, regressions and mutations through `hyper2kvm::fuzzing`.
mod fuzz;

/// Bounds: a hung qemu-img step or boot test is stopped and the VM fails saying why.
mod bounds;

/// SIGINT and SIGTERM during a conversion.
mod signals;

/// No orphans: SIGKILL (or a second SIGINT) during a conversion, a hook, an appliance launch or
/// the boot test leaves no process of the run behind.
mod orphans;

/// One run per output directory: the lock, its holder's pid, and a killed run's leftovers.
mod output_lock;

/// Hooks (script, python, http) through the real binary: order, data-only templates, timeouts,
/// cancellation, retries, redaction, bad input.
mod hooks;

/// A tiny HTTP listener on 127.0.0.1 that records requests, for the http hook tests.
mod http_listener;

/// Hooks are bounded: flat memory whatever a hook prints, leftover children killed, secrets in
/// URLs and env values redacted everywhere.
mod trust_hooks;

/// `--libvirt-xml` import of the fixture corpus, round trips to a defined domain, bad domain XML.
mod libvirt;

/// `--ova` and `--ovf`: VMware exports built per test, imported, converted in place; bad
/// exports refused.
mod exports;

/// `--hyperv`: Hyper-V Export-VM folders (XML configuration, VHDX disks) built per test,
/// imported, converted; bad exports refused.
mod exports_hyperv;

/// Exports converted without a manifest in between: `--ova … --run` with a profile from
/// `--config`, and batch entries that name an OVA, OVF or VMX.
mod exports_run;

/// libvirt_integration on a real libvirtd the tests start: define, pools, re-runs, conflicts,
/// rollback.
mod libvirt_host;
/// The summary survives a report that cannot be written, and the run still fails.
mod report_unwritable;

/// network_mapping and storage_mapping as they land in the converted VM and its domain XML.
mod mapping;

/// Booting converted VMs: the real Debian guest end to end (production, no fix, a batch), and
/// the boot test's bad input.
mod boot;

/// Golden report.json and batch_report.json snapshots: the report format, pinned field by field.
mod golden;

/// The batch migration features guide: every example and workflow run as written, on small
/// real disks and the phony guests, with the examples/ files it points to.
mod guide;

/// The JSON Schemas in schemas/: --print-schema, the examples, and the schemas refusing what the
/// binary refuses and accepting what it accepts.
mod schemas;

/// Manifests in the guide's and the Python tool's shapes: probed disks, `checksum: null`, the
/// generated-manifest shape, and the files and paths the loader's errors name.
mod shapes;

// Sharding, merging, the Kubernetes Job and the Ansible playbook.
mod scale_out;

// Real guests of other layouts (issue: more real guests), booted.
mod layouts;
