#!/usr/bin/env python3
"""hyper2kvm's benchmark: every figure is a ratio against a baseline measured in the same run.

Run it through `make bench` (scripts/bench.sh installs hyperfine and the other tools first and
builds the release binary). It generates its source images once (cached, outside the checkout),
times the tool and its baselines with hyperfine, interleaving the commands of a comparison round
by round so that load on the machine hits both sides alike, measures peak memory with
`/usr/bin/time -v`, and writes docs/performance.md.

Environment:
  BENCH_QUICK=1     small images and two rounds, for trying the harness out (not for figures)
  BENCH_ROUNDS=N    rounds per comparison (default 5, quick 2)
  BENCH_DIR=DIR     image cache and scratch space (default ~/.cache/hyper2kvm-bench)
  BENCH_OUT=FILE    the report (default docs/performance.md)
  BENCH_ONLY=1,3    run only these items
  BENCH_V2V=0|1     item 7 (hyper2kvm fix+convert vs virt-v2v); default on, off in quick mode
  BENCH_TEST_GUEST_SCRIPT=PATH  the script that builds the real test guest and prints its VMDK
                    as the last line of stdout (default scripts/build-test-guest.sh)
  HYPER2KVM=PATH    the binary (default target/release/hyper2kvm)
  BENCH_PAGE_REPORTING=keep  leave the guest kernel's free page reporting as it is (by default
                    it is paused for the run where it exists and can be set; see free_pages_kept)
  BENCH_RENDER=FILE measure nothing: write the report again from a run's raw results (after
                    editing scripts/bench-notes.md; BENCH_QUICK and BENCH_ROUNDS as in that run)

Python standard library only.
"""

import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2" if QUICK else "5"))
CACHE = Path(os.environ.get("BENCH_DIR", Path.home() / ".cache" / "hyper2kvm-bench"))
OUT = Path(os.environ.get("BENCH_OUT", ROOT / "docs" / "performance.md"))
ONLY = {int(x) for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()}
RENDER = os.environ.get("BENCH_RENDER", "")
V2V = os.environ.get("BENCH_V2V", "0" if QUICK else "1") not in ("", "0")
TOOL = Path(os.environ.get("HYPER2KVM", ROOT / "target" / "release" / "hyper2kvm"))

GIB = 1 << 30
MIB = 1 << 20
# Image geometry: (incompressible image size, sparse virtual size, sparse chunk size). The sparse
# image holds 8 chunks: 4 of incompressible data, 4 of text-like data that compresses about 2:1.
if QUICK:
    RAND_SIZE, SPARSE_SIZE, CHUNK = 256 * MIB, 4 * GIB, 16 * MIB
else:
    RAND_SIZE, SPARSE_SIZE, CHUNK = 2 * GIB, 20 * GIB, 128 * MIB
IMAGE_VERSION = 1  # bump when the generator changes, so cached images are rebuilt
BATCH_VMS = 8
DRY_RUN_VMS = 1000

# A 256-entry translation table with a skewed letter distribution: about 3.5 bits per byte.
TEXT_ALPHABET = (
    " " * 64 + "e" * 32 + "t" * 24 + "a" * 20 + "o" * 18 + "i" * 16 + "n" * 16 + "s" * 14
    + "h" * 12 + "r" * 12 + "\n" * 8 + "." * 6 + "," * 6 + "d" * 8
)
assert len(TEXT_ALPHABET) == 256


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs a command (a list) and returns its stdout; fails loudly."""
    kw.setdefault("check", True)
    return subprocess.run(cmd, stdout=subprocess.PIPE, text=True, **kw).stdout


def loadavg():
    return os.getloadavg()


def other_load(seconds=3.0):
    """How busy the machine is while the benchmark itself runs nothing: the fraction of all
    cores' time that was not idle over a few seconds, from /proc/stat. The load average cannot
    tell: it still counts the benchmark's own threads (qemu-img's compression pool) a minute
    after they end."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    total = max(total1 - total0, 1)
    return 1.0 - (idle1 - idle0) / total


# --------------------------------------------------------------------------------------------
# Images


def keystream(key_byte, size):
    """`size` bytes of AES-CTR keystream: incompressible, and the same on every machine."""
    key = f"{key_byte:02x}" * 16
    p = subprocess.Popen(
        ["openssl", "enc", "-aes-128-ctr", "-K", key, "-iv", "0", "-nosalt", "-in", "/dev/zero"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return p


def write_stream(dst, offset, size, key_byte, text):
    """Writes `size` bytes of generated data into `dst` at `offset`."""
    table = bytes.maketrans(bytes(range(256)), TEXT_ALPHABET.encode())
    p = keystream(key_byte, size)
    left = size
    with open(dst, "r+b") as f:
        f.seek(offset)
        while left:
            block = p.stdout.read(min(4 * MIB, left))
            if not block:
                raise RuntimeError("openssl ended early")
            if text:
                block = block.translate(table)
            f.write(block)
            left -= len(block)
    p.kill()
    p.wait()


def make_images(img_dir):
    """The four sources (vmdk and vhdx of each raw image), generated once and cached."""
    stamp = img_dir / "READY"
    names = {f"{kind}.{fmt}": img_dir / f"{kind}.{fmt}"
             for kind in ("rand", "sparse") for fmt in ("vmdk", "vhdx")}
    if stamp.exists() and all(p.exists() for p in names.values()):
        return names
    img_dir.mkdir(parents=True, exist_ok=True)
    need = 2 * RAND_SIZE * 3 + 8 * CHUNK * 3
    free = shutil.disk_usage(img_dir).free
    if free < need + 4 * GIB:
        sys.exit(f"bench: {img_dir} has {free / GIB:.1f} GiB free; generating the images needs "
                 f"about {(need + 4 * GIB) / GIB:.1f} GiB")
    log(f"generating source images in {img_dir}")
    rand = img_dir / "rand.raw"
    with open(rand, "wb") as f:
        f.truncate(RAND_SIZE)
    write_stream(rand, 0, RAND_SIZE, 0x11, text=False)
    sparse = img_dir / "sparse.raw"
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
    gap = SPARSE_SIZE // 8
    for i in range(8):
        # Spread out, not aligned to the chunk size, alternating incompressible and text.
        write_stream(sparse, i * gap + 37 * MIB, CHUNK, 0x20 + i, text=(i % 2 == 1))
    for kind, raw in (("rand", rand), ("sparse", sparse)):
        for fmt in ("vmdk", "vhdx"):
            dst = names[f"{kind}.{fmt}"]
            sh(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, str(raw), str(dst)])
        raw.unlink()
    stamp.write_text(json.dumps({"version": IMAGE_VERSION, "rand": RAND_SIZE,
                                 "sparse": SPARSE_SIZE, "chunk": CHUNK}))
    return names


def sha256_of(path):
    return "sha256:" + sh(["openssl", "dgst", "-sha256", "-r", str(path)]).split()[0]


# --------------------------------------------------------------------------------------------
# Manifests


def manifest(path, vm, image, fmt, out_dir, pipeline, extra=""):
    """Writes a single-disk manifest (YAML)."""
    size = image.stat().st_size
    path.write_text(
        f'manifest_version: "1.0"\n'
        f"source: {{vm_name: {vm}}}\n"
        f"{extra}"
        f"disks:\n"
        f"  - {{id: d0, source_format: {fmt}, bytes: {size}, local_path: {image}"
        f"{', checksum: ' + json.dumps(sha256_of(image)) if 'checksum' in pipeline else ''}}}\n"
        f"output: {{directory: {out_dir}}}\n"
        + pipeline.get("yaml", "")
    )
    return path


CONVERT_ONLY = {"yaml": (
    "pipeline:\n"
    "  inspect: {enabled: false}\n"
    "  fix: {enabled: false}\n"
    "  convert: {enabled: true, compress: false, check_image_integrity: false}\n"
    "  validate: {enabled: false}\n")}
CHECKSUM_ONLY = {"checksum": True, "yaml": (
    "pipeline:\n"
    "  inspect: {enabled: false}\n"
    "  fix: {enabled: false}\n"
    "  convert: {enabled: false}\n"
    "  validate: {enabled: false}\n")}
# The production profile (check, zstd-compressed convert, check + compare) without guest repair.
PRODUCTION = {"checksum": True, "yaml": ""}
PRODUCTION_EXTRA = (
    "profile: production\n"
    "profile_overrides:\n"
    "  pipeline:\n"
    "    fix: {enabled: false}\n"
    "    inspect: {collect_guest_info: false}\n")


def planned_convert(manifest_path, image, dest):
    """The qemu-img commands the tool would run to convert `image` (its `--dry-run` output:
    `qemu-img create` of the target when it writes the target through io_uring, then `convert`),
    writing `dest` instead of the tool's own `.part` file, as one argv (`sh -c` when there are
    two commands)."""
    text = sh([str(TOOL), "--manifest", str(manifest_path), "--dry-run", "--overwrite"])
    cmds = [shlex.split(line.strip()[2:]) for line in text.splitlines()
            if line.strip().startswith("$ ") and (" create " in line or " convert " in line)]
    if not cmds or cmds[-1][1] != "convert":
        raise RuntimeError(f"no convert command in the dry run of {manifest_path}")
    part = next(a for a in reversed(cmds[-1]) if ".part" in a)
    part = json.loads(part[5:])["file"]["filename"] if part.startswith("json:") else part
    cmds = [[a.replace(part, str(dest)).replace("<virtual-size>", str(virtual_size(image)))
             for a in c] for c in cmds]
    if len(cmds) == 1:
        return cmds[0]
    return ["sh", "-c", " && ".join(shlex.join(c) for c in cmds)]


def plain_convert(argv, dest):
    """A planned conversion as the one `qemu-img convert` that also creates its target (as the
    tool runs it for a compressed output): same source and flags, a plain target path."""
    if argv[0] == "sh":
        argv = shlex.split(argv[2].split(" && ")[-1])
    argv = [a for a in argv if a not in ("-n", "--target-is-zero")]
    return argv[:-1] + [str(dest)]


def flushed(argv, dest):
    """`argv`, then its output flushed to disk (`sync -d`, an fdatasync), as hyper2kvm flushes
    every image before it gives it its final name."""
    inner = argv[2] if argv[0] == "sh" else shlex.join(argv)
    return ["sh", "-c", f"{inner} && sync -d {shlex.quote(str(dest))}"]


# --------------------------------------------------------------------------------------------
# Timing


class Timer:
    """Interleaved hyperfine runs: each round runs every command once, in a rotated order."""

    def __init__(self, scratch):
        self.scratch = scratch
        self.n = 0

    def script(self, text):
        self.n += 1
        path = self.scratch / f"prep-{self.n}.sh"
        path.write_text("set -e\n" + text + "\n")
        return ["sh", str(path)]

    def compare(self, label, cmds, rounds=ROUNDS, warmup=False):
        """cmds: [(name, argv, prepare shell text)] -> {name: [{"wall","user","sys"}...]}

        With `warmup`, one more round runs first and is not counted: the first run of a command
        after other work was the slowest of a series here, by up to several times (its output
        lands in memory the machine has not written to for a while)."""
        results = {name: [] for name, _, _ in cmds}
        log(f"{label}: {rounds} round(s) of {', '.join(n for n, _, _ in cmds)}"
            f"{' after a warm-up round' if warmup else ''}")
        for r in range(-1 if warmup else 0, rounds):
            order = cmds[r % len(cmds):] + cmds[:r % len(cmds)]
            export = self.scratch / "hyperfine.json"
            argv = ["hyperfine", "-N", "--runs", "1", "--style", "none",
                    "--export-json", str(export)]
            for name, cmd, prep in order:
                argv += ["--prepare", shlex.join(self.script(prep or "true"))]
            for name, cmd, prep in order:
                argv += ["-n", name, shlex.join(cmd)]
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            for res in json.loads(export.read_text())["results"] if r >= 0 else []:
                results[res["command"]].append(
                    {"wall": res["times"][0], "user": res["user"], "sys": res["system"]})
        return results


def med(samples, key="wall"):
    return statistics.median(s[key] for s in samples)


def ratio(results, a, b, key="wall"):
    """Median over rounds of a/b, each round's pair measured back to back."""
    return statistics.median(x[key] / y[key] for x, y in zip(results[a], results[b]))


def cpu(samples):
    return statistics.median(s["user"] + s["sys"] for s in samples)


# --------------------------------------------------------------------------------------------
# The items


def rm_prep(*paths):
    return "rm -rf " + " ".join(shlex.quote(str(p)) for p in paths) + "\nsync"


def item1_convert_only(t, images, work):
    rows = []
    for key, img in images.items():
        fmt = img.suffix[1:]
        out_tool = work / f"i1-{key}-tool"
        out_bare = work / f"i1-{key}-bare"
        m = manifest(work / f"i1-{key}.yaml", "conv", img, fmt, out_tool, CONVERT_ONLY)
        bare = planned_convert(m, img, out_bare / "d0.qcow2")
        prep = rm_prep(out_bare) + f"\nmkdir -p {shlex.quote(str(out_bare))}"
        # Cheap runs, and a small overhead to resolve: more rounds than the other items.
        res = t.compare(f"1 convert only {key}", rounds=ROUNDS if QUICK else max(ROUNDS, 15),
                        warmup=True,
                        cmds=[
            ("hyper2kvm", [str(TOOL), "--manifest", str(m), "--progress", "none"],
             rm_prep(out_tool)),
            ("qemu-img+flush", flushed(bare, out_bare / "d0.qcow2"), prep),
            ("qemu-img", bare, prep),
        ])
        rows.append({"image": key, "tool": med(res["hyper2kvm"]),
                     "bare": med(res["qemu-img+flush"]),
                     "ratio": ratio(res, "hyper2kvm", "qemu-img+flush"),
                     "best": min(s["wall"] for s in res["hyper2kvm"])
                     / min(s["wall"] for s in res["qemu-img+flush"]),
                     "unflushed": med(res["qemu-img"]),
                     "ratio_unflushed": ratio(res, "hyper2kvm", "qemu-img"),
                     "cmd": shlex.join(flushed(bare, out_bare / "d0.qcow2")), "samples": res})
    return rows


def item2_flags(t, images, work):
    rows = []
    for key, img in images.items():
        fmt = img.suffix[1:]
        out = work / f"i2-{key}"
        m = manifest(work / f"i2-{key}.yaml", "flags", img, fmt, out / "tool", CONVERT_ONLY)
        ours = planned_convert(m, img, out / "ours.qcow2")
        default = ["qemu-img", "convert", "-f", fmt, "-O", "qcow2", str(img),
                   str(out / "default.qcow2")]
        prep = rm_prep(out) + f"\nmkdir -p {shlex.quote(str(out))}"
        res = t.compare(f"2 flags {key}", [("ours", ours, prep), ("default", default, prep)],
                        warmup=True)
        rows.append({"image": key, "kind": "flags", "a": med(res["ours"]),
                     "b": med(res["default"]), "ratio": ratio(res, "ours", "default"),
                     "samples": res,
                     "a_cmd": shlex.join(ours), "b_cmd": shlex.join(default)})
    for key in ("rand.vmdk", "sparse.vmdk"):
        img = images[key]
        fmt = img.suffix[1:]
        out = work / f"i2c-{key}"
        m = manifest(work / f"i2c-{key}.yaml", "flags", img, fmt, out / "tool", CONVERT_ONLY)
        base = plain_convert(planned_convert(m, img, out / "x.qcow2"), out / "x.qcow2")[:-1]
        # The same flags, codec only differs.
        zstd = base[:-1] + ["-c", "-o", "compression_type=zstd", base[-1], str(out / "zstd.qcow2")]
        zlib = base[:-1] + ["-c", base[-1], str(out / "zlib.qcow2")]
        prep = f"mkdir -p {shlex.quote(str(out))}\nrm -f {shlex.quote(str(out))}/*.qcow2\nsync"
        res = t.compare(f"2 zstd vs zlib {key}", [("zstd", zstd, prep), ("zlib", zlib, prep)],
                        rounds=max(2, min(ROUNDS, 3)))
        # One more pair outside the timing, to compare the content of both outputs.
        subprocess.run(["sh", "-c", prep], check=True)
        sh(zstd, stderr=subprocess.DEVNULL)
        sh(zlib, stderr=subprocess.DEVNULL)
        same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                               str(out / "zstd.qcow2"), str(out / "zlib.qcow2")],
                              stdout=subprocess.DEVNULL).returncode == 0
        sizes = ((out / "zstd.qcow2").stat().st_size, (out / "zlib.qcow2").stat().st_size)
        rows.append({"image": key, "kind": "codec", "a": med(res["zstd"]), "b": med(res["zlib"]),
                     "ratio": ratio(res, "zstd", "zlib"), "same": same, "sizes": sizes,
                     "samples": res,
                     "a_cmd": shlex.join(zstd), "b_cmd": shlex.join(zlib)})
    return rows


def item3_checksum(t, images, work):
    rows = []
    for key in ("rand.vmdk", "sparse.vmdk"):
        img = images[key]
        m = manifest(work / f"i3-{key}.yaml", "sum", img, img.suffix[1:], work / f"i3-{key}",
                     CHECKSUM_ONLY)
        res = t.compare(f"3 checksum {key}", [
            ("hyper2kvm", [str(TOOL), "--manifest", str(m), "--progress", "none"], None),
            ("openssl", ["openssl", "dgst", "-sha256", str(img)], None),
            ("sha256sum", ["sha256sum", str(img)], None),
        ], warmup=True)
        size = img.stat().st_size
        rows.append({"image": key, "size": size,
                     **{n: med(res[n]) for n in ("hyper2kvm", "openssl", "sha256sum")},
                     # Throughput ratio: openssl's time over ours.
                     "vs_openssl": 1 / ratio(res, "hyper2kvm", "openssl"),
                     "vs_sha256sum": 1 / ratio(res, "hyper2kvm", "sha256sum"),
                     "samples": res})
    return rows


def item4_pipeline(t, images, work):
    rows = []
    for key, img in images.items():
        fmt = img.suffix[1:]
        out_tool = work / f"i4-{key}-tool"
        out_bare = work / f"i4-{key}-bare"
        m = manifest(work / f"i4-{key}.yaml", "prod", img, fmt, out_tool, PRODUCTION,
                     PRODUCTION_EXTRA)
        bare = planned_convert(m, img, out_bare / "d0.qcow2")
        prep = rm_prep(out_bare) + f"\nmkdir -p {shlex.quote(str(out_bare))}"
        res = t.compare(f"4 pipeline {key}", [
            ("pipeline", [str(TOOL), "--manifest", str(m), "--progress", "none"],
             rm_prep(out_tool)),
            ("convert+flush", flushed(bare, out_bare / "d0.qcow2"), prep),
            ("convert", bare, prep),
        ], warmup=True)
        report = json.loads((out_tool / "report.json").read_text())
        stages = {k: v.get("duration") for k, v in report["pipeline"]["stages"].items()}
        load = report["pipeline"]["stages"]["load_manifest"]["result"]
        rows.append({"image": key, "pipeline": med(res["pipeline"]),
                     "convert": med(res["convert+flush"]),
                     "ratio": ratio(res, "pipeline", "convert+flush"),
                     "unflushed": med(res["convert"]),
                     "ratio_unflushed": ratio(res, "pipeline", "convert"),
                     "cpu_ratio": cpu(res["pipeline"]) / cpu(res["convert+flush"]),
                     "stages": stages, "checksum_s": load.get("checksum_seconds"),
                     "overlapped": load.get("checksums_verified_during_convert", False),
                     "cmd": shlex.join(flushed(bare, out_bare / "d0.qcow2")), "samples": res})
    return rows


def batch_file(work, images, parallel_label):
    """A batch of BATCH_VMS production VMs (no repair) on the sparse VMDK."""
    d = work / "i5"
    d.mkdir(parents=True, exist_ok=True)
    img = images["sparse.vmdk"]
    vms = []
    for i in range(BATCH_VMS):
        manifest(d / f"vm{i}.yaml", f"vm{i}", img, "vmdk", d / "out" / f"vm{i}", PRODUCTION,
                 PRODUCTION_EXTRA)
        vms.append(f"  - {{id: vm{i}, manifest: vm{i}.yaml}}")
    path = d / "batch.yaml"
    path.write_text('batch_version: "1.0"\n'
                    "batch_metadata: {batch_id: bench, parallel_limit: 1, continue_on_error: true}\n"
                    f"shared_config: {{output_directory: {d / 'out'}}}\n"
                    "vms:\n" + "\n".join(vms) + "\n")
    return path, d / "out"


def item5_batch(t, images, work):
    path, out = batch_file(work, images, "")
    cmds = [(f"parallel {p}", [str(TOOL), "--batch-manifest", str(path), "--batch-parallel",
                               str(p), "--progress", "none"], rm_prep(out))
            for p in (1, 2, 4)]
    res = t.compare("5 batch", cmds, rounds=max(2, min(ROUNDS, 3)))
    # CPU time over wall time: how many cores a batch keeps busy (hyperfine's user and system
    # time cover every process hyper2kvm waited for).
    busy = {str(p): statistics.median((s["user"] + s["sys"]) / s["wall"]
                                      for s in res[f"parallel {p}"])
            for p in (1, 2, 4)}
    return {"busy": busy, "p1": med(res["parallel 1"]), "p2": med(res["parallel 2"]),
            "p4": med(res["parallel 4"]),
            "speedup2": 1 / ratio(res, "parallel 2", "parallel 1"),
            "speedup4": 1 / ratio(res, "parallel 4", "parallel 1"),
            "p4_vs_p2": ratio(res, "parallel 4", "parallel 2"), "samples": res}


def peak_rss(argv):
    """(peak RSS of the whole process tree from /usr/bin/time -v, peak RSS of the first process
    alone from its VmHWM, polled) in bytes."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf.name] + argv,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hwm = 0
        child = None
        while p.poll() is None:
            if child is None:
                try:
                    kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
                    child = kids[0] if kids else None
                except OSError:
                    pass
            if child:
                try:
                    for line in Path(f"/proc/{child}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]) * 1024)
                except OSError:
                    pass
            time.sleep(0.01)
        if p.returncode != 0:
            raise RuntimeError(f"{argv} failed")
        tree = 0
        for line in Path(tf.name).read_text().splitlines():
            if "Maximum resident set size" in line:
                tree = int(line.split(":")[1]) * 1024
        return tree, hwm


def item6_memory(t, images, work):
    rows = []
    for key in ("rand.vmdk", "sparse.vmdk"):
        img = images[key]
        out = work / f"i6-{key}"
        m = manifest(work / f"i6-{key}.yaml", "mem", img, "vmdk", out, PRODUCTION,
                     PRODUCTION_EXTRA)
        shutil.rmtree(out, ignore_errors=True)
        log(f"6 peak RSS {key}")
        tree, own = peak_rss([str(TOOL), "--manifest", str(m), "--progress", "none"])
        bare_out = work / f"i6-{key}-bare.qcow2"
        bare = planned_convert(m, img, bare_out)
        bare_tree, _ = peak_rss(bare)
        bare_out.unlink()
        rows.append({"image": key, "virtual": virtual_size(img), "tree": tree, "own": own,
                     "qemu_img": bare_tree})
    # --dry-run planning of a 1,000-VM batch
    d = work / "i6-dry"
    d.mkdir(parents=True, exist_ok=True)
    img = images["rand.vmdk"]
    digest = sha256_of(img)
    entries = []
    for i in range(DRY_RUN_VMS):
        (d / f"vm{i:04}.yaml").write_text(
            f'manifest_version: "1.0"\nsource: {{vm_name: vm{i:04}}}\n{PRODUCTION_EXTRA}'
            f"disks:\n  - {{id: d0, source_format: vmdk, bytes: {img.stat().st_size}, "
            f"local_path: {img}, checksum: \"{digest}\"}}\n")
        entries.append(f"  - {{id: vm{i:04}, manifest: vm{i:04}.yaml}}")
    batch = d / "batch.yaml"
    batch.write_text('batch_version: "1.0"\n'
                     "batch_metadata: {batch_id: dry, parallel_limit: 4}\n"
                     f"shared_config: {{output_directory: {d / 'out'}}}\n"
                     "vms:\n" + "\n".join(entries) + "\n")
    res = t.compare("6 dry-run of 1,000 VMs",
                    [("dry-run", [str(TOOL), "--batch-manifest", str(batch), "--dry-run"], None)],
                    rounds=max(3, ROUNDS))
    dry_tree, _ = peak_rss([str(TOOL), "--batch-manifest", str(batch), "--dry-run"])
    return {"rows": rows, "dry_run": med(res["dry-run"]), "dry_run_max": max(
        s["wall"] for s in res["dry-run"]), "dry_run_rss": dry_tree}


def virtual_size(img):
    info = json.loads(sh(["qemu-img", "info", "--output=json", "-f", img.suffix[1:], str(img)]))
    return info["virtual-size"]


def item7_v2v(work):
    """hyper2kvm fix + convert vs virt-v2v on the real test guest, when everything is there."""
    script = Path(os.environ.get("BENCH_TEST_GUEST_SCRIPT",
                                 ROOT / "scripts" / "build-test-guest.sh"))
    missing = []
    if not V2V:
        missing.append("BENCH_V2V is off" + (" (quick mode)" if QUICK else ""))
    if not script.exists():
        missing.append(f"{script} (which builds the real test guest) does not exist")
    for tool in ("guestfish", "virt-v2v", "nbdcopy"):
        if not shutil.which(tool):
            missing.append(f"{tool} is not installed")
    if missing:
        return {"measured": False, "why": "; ".join(missing)}
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    log("7 building (or reusing) the test guest")
    built = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, env=env)
    lines = [x for x in built.stdout.splitlines() if x.strip()]
    if built.returncode != 0 or not lines:
        return {"measured": False, "why": f"scripts/build-test-guest.sh failed ({built.returncode})"}
    vmdk = Path(lines[-1].strip())
    d = work / "i7"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    m = d / "guest.yaml"
    m.write_text(
        'manifest_version: "1.0"\nsource: {vm_name: guest}\nprofile: production\n'
        "profile_overrides:\n  pipeline:\n"
        "    inspect: {collect_guest_info: false}\n"
        "    fix: {backup: false}\n"
        "    convert: {compress: false}\n"
        "    validate: {enabled: false}\n"
        f"disks:\n  - {{id: sda, source_format: vmdk, bytes: {vmdk.stat().st_size}, "
        f"local_path: {vmdk}}}\noutput: {{directory: {d / 'ours'}}}\n")
    argvs = {
        "hyper2kvm": [str(TOOL), "--manifest", str(m), "--progress", "none"],
        "virt-v2v": ["virt-v2v", "-i", "disk", str(vmdk), "-o", "local", "-os",
                     str(d / "v2v"), "-of", "qcow2"],
    }
    # TCG's speed drifts with the host's load by tens of seconds over minutes: each tool runs
    # twice, in the order A B B A, so a steady drift weighs on both alike.
    order = ["hyper2kvm", "virt-v2v", "virt-v2v", "hyper2kvm"] if not QUICK else list(argvs)
    runs = {name: [] for name in argvs}
    for name in order:
        shutil.rmtree(d / "ours", ignore_errors=True)
        shutil.rmtree(d / "v2v", ignore_errors=True)
        (d / "v2v").mkdir()
        subprocess.run(["sync"], check=True)
        log(f"7 {name} on {vmdk}")
        start = time.perf_counter()
        r = subprocess.run(argvs[name], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        # hyper2kvm says why a VM failed in its summary, on stdout.
        run = {"wall": time.perf_counter() - start, "rc": r.returncode,
               "err": r.stdout[-800:] if r.returncode else ""}
        if name == "hyper2kvm" and r.returncode == 0:
            report = json.loads((d / "ours" / "report.json").read_text())
            run["stages"] = {k: v.get("duration")
                             for k, v in report["pipeline"]["stages"].items()}
            fix = report["pipeline"]["stages"].get("fix", {}).get("result") or {}
            run["initramfs"] = ["rebuilt" if i["rebuilt"] else "kept"
                                for i in fix.get("initramfs", [])]
        runs[name].append(run)
        if r.returncode:
            break
    failed = [(k, x) for k, v in runs.items() for x in v if x["rc"]]
    ok = not failed
    total = {k: sum(x["wall"] for x in v) for k, v in runs.items()}
    return {"measured": ok, "vmdk": str(vmdk), "runs": runs,
            "ratio": total["hyper2kvm"] / total["virt-v2v"] if ok else None,
            "why": "" if ok else "; ".join(f"{k} exited {x['rc']}: {x['err']}"
                                           for k, x in failed)}


# --------------------------------------------------------------------------------------------
# The machine and the report

PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/page_reporting_order")
# One above the buddy allocator's largest order (10): no free block is large enough to report.
NO_REPORTING_ORDER = 11


@contextlib.contextmanager
def free_pages_kept():
    """Pauses free page reporting for the run, and yields what was done, for the report.

    In a virtual machine whose balloon device has free page reporting, the guest kernel hands
    memory it frees back to the host, which discards it; the next write to such a page faults on
    the host first. Every round frees the previous round's 2 GiB output (`rm`), and which of the
    next round's page-cache pages had been handed back is chance: the same conversion took
    0.6 s or 2-5 s (copy_folio_from_iter_atomic, in system time), whichever command it was.
    With reporting paused the pages freed by one round are reused by the next, and that
    conversion measured 0.62-0.68 s over 12 runs. The old setting is put back at the end."""
    try:
        old = PAGE_REPORTING.read_text().strip()
    except OSError:
        yield "no free page reporting"
        return
    if os.environ.get("BENCH_PAGE_REPORTING") == "keep":
        yield f"free page reporting left on (order {old}, BENCH_PAGE_REPORTING=keep)"
        return
    try:
        PAGE_REPORTING.write_text(f"{NO_REPORTING_ORDER}\n")
    except OSError as e:
        log(f"free page reporting stays on: {PAGE_REPORTING}: {e.strerror} (run as root)")
        yield f"free page reporting on (order {old}; could not be paused: {e.strerror})"
        return
    # A plain `kill` must also put the setting back.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield f"free page reporting paused for the run (order {old} set to {NO_REPORTING_ORDER})"
    finally:
        PAGE_REPORTING.write_text(f"{old}\n")
        signal.signal(signal.SIGTERM, previous)


def machine(bench_dir):
    def first(cmd):
        try:
            return sh(cmd, stderr=subprocess.DEVNULL).splitlines()[0].strip()
        except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
            return "unknown"
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    fs = sh(["df", "-T", str(bench_dir)]).splitlines()[-1].split()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "sha_ni": " sha_ni" in flags,
        "memory_gib": mem / GIB,
        "filesystem": f"{fs[1]} on {fs[0]}",
        "kernel": platform.release(),
        "qemu_img": first(["qemu-img", "--version"]),
        "openssl": first(["openssl", "version"]),
        "sha256sum": first(["sha256sum", "--version"]),
        "hyperfine": first(["hyperfine", "--version"]),
        "tool": first([str(TOOL), "--version"]),
        "commit": first(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def verdict(ok):
    return "met" if ok else "**missed**"


def fmt_s(x):
    return f"{x:.2f} s"


def opt_s(x):
    return fmt_s(x) if x is not None else "–"


def opt_x(x):
    return f"{x:.2f}x" if x is not None else "–"


def unflushed_note(rows, what):
    """The worst ratio against the baseline left unflushed, when the run measured it."""
    ratios = [r["ratio_unflushed"] for r in rows if r.get("ratio_unflushed") is not None]
    if not ratios:
        return ""
    return f" ({max(ratios):.2f}x against the {what} left unflushed in the page cache)"


def render(m, res, load_start, load_end):
    """docs/performance.md"""
    L = []
    w = L.append
    w("# Performance")
    w("")
    w("Generated by `make bench` (`scripts/bench.sh`, `scripts/bench.py`); do not edit the figures "
      "by hand. Every figure is a ratio against a baseline measured in the same run: the "
      "commands of one comparison run interleaved, one run each per round in a rotated order "
      f"({ROUNDS} rounds unless said otherwise), and a ratio is the median of the per-round "
      "ratios; items 1 to 4 run one more, untimed, round first. Times are wall-clock medians "
      "from hyperfine (`-N`, no shell). Sources are read "
      "from a hot page cache (they fit in memory and every round reads them); outputs are "
      "removed and `sync` runs before each timed run, outside the timing. What limits each "
      "figure, and what was tuned, is in [Notes](#notes) below.")
    w("")
    # Other work on the machine, sampled while the benchmark ran nothing.
    busy = max(load_start["other"], load_end["other"]) > 0.25
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| date | {m['date']} |")
    w(f"| CPU | {m['cpu']}, {m['nproc']} cores (`nproc`), SHA-NI {'yes' if m['sha_ni'] else 'no'} |")
    w(f"| memory | {m['memory_gib']:.1f} GiB; "
      f"{m.get('page_reporting', 'free page reporting not recorded')} |")
    w(f"| filesystem | {m['filesystem']} |")
    w(f"| kernel | {m['kernel']} |")
    w(f"| tools | {m['qemu_img']}; {m['openssl']}; {m['sha256sum']}; {m['hyperfine']} |")
    w(f"| hyper2kvm | {m['tool']} (commit {m['commit']}), release build |")
    w(f"| other work | {load_start['other']:.0%} of the CPU busy before the run, "
      f"{load_end['other']:.0%} after (sampled for 3 s while the benchmark ran nothing); "
      f"load average {load_start['avg'][0]:.2f} before, {load_end['avg'][0]:.2f} after |")
    mode = "quick mode (small images, not for figures)" if QUICK else "full"
    w(f"| run | {mode}; incompressible image {RAND_SIZE // MIB} MiB; sparse image "
      f"{SPARSE_SIZE // GIB} GiB virtual with {8 * CHUNK // MIB} MiB of data |")
    w("")
    if busy:
        w("**This run was taken under load**: the machine was shared with other heavy work "
          "(more than a quarter of the CPU was busy while the benchmark ran nothing), so absolute "
          "times are noisy "
          "and inflated. The ratios are what to read; they will be repeated on a quiet machine "
          "with `make bench`.")
        w("")
    # Summary
    w("## Summary")
    w("")
    w("| # | figure | result | target | |")
    w("|---|---|---|---|---|")
    if "1" in res:
        worst = max(r["ratio"] for r in res["1"])
        w(f"| 1 | convert only, hyper2kvm / bare `qemu-img convert` (same flags), its output "
          f"flushed to disk as hyper2kvm's is, worst image | {worst:.3f}x"
          f"{unflushed_note(res['1'], 'convert')} | ≤ 1.05x | {verdict(worst <= 1.05)} |")
    if "2" in res:
        flags = [r for r in res["2"] if r["kind"] == "flags"]
        codec = [r for r in res["2"] if r["kind"] == "codec"]
        worst = max(r["ratio"] for r in flags)
        w(f"| 2a | our default convert flags / `qemu-img convert -O qcow2` defaults, worst image | "
          f"{worst:.2f}x time | < 1 (faster) | {verdict(worst < 1)} |")
        worst_c = max(r["ratio"] for r in codec)
        same = all(r["same"] for r in codec)
        w(f"| 2b | zstd / zlib compressed convert, worst image | {worst_c:.2f}x time, content "
          f"{'identical' if same else '**differs**'} | < 1, identical | "
          f"{verdict(worst_c < 1 and same)} |")
    if "3" in res:
        worst = min(r["vs_openssl"] for r in res["3"])
        w(f"| 3 | sha256 throughput, hyper2kvm / `openssl dgst -sha256`, worst image | "
          f"{worst:.2f}x | ≥ 0.9x | {verdict(worst >= 0.9)} |")
    if "4" in res:
        worst = max(r["ratio"] for r in res["4"])
        w(f"| 4 | production pipeline without repair / bare convert, its output flushed, worst "
          f"image | {worst:.2f}x{unflushed_note(res['4'], 'convert')} | ≤ 1.5x | "
          f"{verdict(worst <= 1.5)} |")
    if "5" in res:
        b = res["5"]
        # Parallel 2 can gain at most the cores parallel 1 leaves idle.
        bound = (m["nproc"] or 1) / b["busy"]["1"]
        w(f"| 5a | batch of {BATCH_VMS}: speed-up of `--batch-parallel 2` over 1 | "
          f"{b['speedup2']:.2f}x (at most {min(bound, 2):.2f}x here: parallel 1 already keeps "
          f"{b['busy']['1']:.2f} of {m['nproc']} cores busy) | ≥ 1.5x | "
          f"{verdict(b['speedup2'] >= 1.5)} |")
        w(f"| 5b | batch of {BATCH_VMS}: `--batch-parallel 4` time / parallel 2 | "
          f"{b['p4_vs_p2']:.2f}x | ≤ 1 (never slower; 1.05 allowed for noise) | "
          f"{verdict(b['p4_vs_p2'] <= 1.05)} |")
    if "6" in res:
        rows = res["6"]["rows"]
        worst = max(r["tree"] for r in rows)
        sizes = ", ".join(f"{r['tree'] / MIB:.1f} MiB" for r in rows)
        w(f"| 6a | peak RSS converting the incompressible and the sparse image (process tree) | "
          f"{sizes} | the same, < 50 MiB | {verdict(worst < 50 * MIB)} |")
        w(f"| 6b | `--dry-run` of a {DRY_RUN_VMS:,}-VM batch | {fmt_s(res['6']['dry_run'])} "
          f"(slowest {fmt_s(res['6']['dry_run_max'])}) | < 1 s | "
          f"{verdict(res['6']['dry_run_max'] < 1)} |")
    if "7" in res:
        v = res["7"]
        if v["measured"]:
            w(f"| 7 | fix + convert of the test guest, hyper2kvm / virt-v2v | {v['ratio']:.2f}x "
              f"time | < 1 (faster) | {verdict(v['ratio'] < 1)} |")
        else:
            w(f"| 7 | fix + convert vs virt-v2v | not measured: {v['why']} | < 1 | – |")
    w("")
    # Details
    if "1" in res:
        w("## 1. Convert only: hyper2kvm against the bare qemu-img convert")
        w("")
        w("The manifest enables convert only (no inspect, no checks, no validate, no "
          "compression). The baseline is the exact qemu-img commands that `hyper2kvm --dry-run` "
          "prints for it (`qemu-img create` of the target, then `qemu-img convert -n "
          "--target-is-zero` writing it through io_uring), writing to a new file, followed by "
          "`sync -d` of that file: hyper2kvm flushes every image to disk before it renames it "
          "(qemu-img itself never flushes its target), so the baseline does too. hyper2kvm adds "
          "its start, planning, the format probe (`qemu-img info`, which also settles io_uring), "
          "the rename and the report. The last column is the same convert without the flush, its "
          "output still in the page cache when it exits. "
          f"{ROUNDS if QUICK else max(ROUNDS, 15)} rounds; *best runs* is the ratio of the two "
          "fastest runs, the least disturbed by other load.")
        w("")
        w("| image | hyper2kvm | qemu-img + flush | ratio (median of rounds) | ratio of best runs "
          "| qemu-img, not flushed | ratio to it |")
        w("|---|---|---|---|---|---|---|")
        for r in res["1"]:
            w(f"| {r['image']} | {fmt_s(r['tool'])} | {fmt_s(r['bare'])} | {r['ratio']:.3f}x | "
              f"{r['best']:.3f}x | {opt_s(r.get('unflushed'))} | "
              f"{opt_x(r.get('ratio_unflushed'))} |")
        w("")
        w(f"Baseline command (last image): `{r['cmd']}`")
        w("")
    if "2" in res:
        w("## 2. Convert flags and compression codec")
        w("")
        w("Our default flags (`-m 8 -W`, the source read and the target written through "
          "io_uring, the target created first with `qemu-img create`) against `qemu-img "
          "convert -f <fmt> -O qcow2` with qemu-img's defaults, both uncompressed; then our "
          "compressed convert (`-m 8 -W -c -o compression_type=zstd`, the source read through "
          "io_uring; qemu-img creates a compressed target itself) against the same with `-c` "
          "(zlib), "
          f"{max(2, min(ROUNDS, 3))} rounds, the two outputs compared with `qemu-img compare`.")
        w("")
        w("| image | comparison | ours | baseline | ratio (time) | output |")
        w("|---|---|---|---|---|---|")
        for r in res["2"]:
            if r["kind"] == "flags":
                w(f"| {r['image']} | defaults → ours | {fmt_s(r['a'])} | {fmt_s(r['b'])} | "
                  f"{r['ratio']:.2f}x | |")
            else:
                w(f"| {r['image']} | zlib → zstd | {fmt_s(r['a'])} | {fmt_s(r['b'])} | "
                  f"{r['ratio']:.2f}x | {'identical content' if r['same'] else 'DIFFERS'}; "
                  f"{r['sizes'][0] / MIB:.0f} vs {r['sizes'][1] / MIB:.0f} MiB |")
        w("")
    if "3" in res:
        w("## 3. Disk checksum (SHA-256)")
        w("")
        w("hyper2kvm runs a manifest with every stage disabled and a `checksum` on the disk, so "
          "it loads, plans, hashes and writes its report. Throughput ratios are the other "
          "tool's time over ours (above 1: we are faster).")
        w("")
        w("| file | size | hyper2kvm | openssl | sha256sum | vs openssl | vs sha256sum |")
        w("|---|---|---|---|---|---|---|")
        for r in res["3"]:
            gbs = r["size"] / r["hyper2kvm"] / 1e9
            w(f"| {r['image']} | {r['size'] / MIB:.0f} MiB | {fmt_s(r['hyper2kvm'])} "
              f"({gbs:.2f} GB/s) | {fmt_s(r['openssl'])} | {fmt_s(r['sha256sum'])} | "
              f"{r['vs_openssl']:.2f}x | {r['vs_sha256sum']:.2f}x |")
        w("")
    if "4" in res:
        w("## 4. The production pipeline without guest repair against a bare convert")
        w("")
        w("`profile: production` with `fix` and guest inspection off: checksum verification, "
          "`qemu-img check` of the source, the zstd-compressed convert, then `qemu-img check` "
          "and `qemu-img compare` of the output. The baseline is that convert command alone, "
          "its output flushed with `sync -d` (as in item 1); *not flushed* is the convert "
          "without it. Stage times are from the last run's report (the checksum runs alongside "
          "inspect and convert, so it is not a stage of its own).")
        w("")
        w("| image | pipeline | convert + flush | ratio | CPU-time ratio | not flushed | "
          "ratio to it | checksum | inspect | convert | validate |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in res["4"]:
            st = r["stages"]
            w(f"| {r['image']} | {fmt_s(r['pipeline'])} | {fmt_s(r['convert'])} | "
              f"{r['ratio']:.2f}x | {r['cpu_ratio']:.2f}x | {opt_s(r.get('unflushed'))} | "
              f"{opt_x(r.get('ratio_unflushed'))} | "
              f"{(r['checksum_s'] or 0):.2f} s{' (overlapped)' if r['overlapped'] else ''} | "
              f"{st.get('inspect', 0):.2f} s | {st.get('convert', 0):.2f} s | "
              f"{st.get('validate', 0):.2f} s |")
        w("")
    if "5" in res:
        b = res["5"]
        w(f"## 5. Batch of {BATCH_VMS} VMs")
        w("")
        w(f"{BATCH_VMS} VMs, each the pipeline of item 4 on the sparse VMDK, "
          f"{max(2, min(ROUNDS, 3))} rounds.")
        w("")
        w("*Cores busy* is CPU time (user + system, every process hyper2kvm waited for) over "
          "wall time.")
        w("")
        w("| `--batch-parallel` | time | speed-up over 1 | cores busy |")
        w("|---|---|---|---|")
        w(f"| 1 | {fmt_s(b['p1'])} | 1.00x | {b['busy']['1']:.2f} |")
        w(f"| 2 | {fmt_s(b['p2'])} | {b['speedup2']:.2f}x | {b['busy']['2']:.2f} |")
        w(f"| 4 | {fmt_s(b['p4'])} | {b['speedup4']:.2f}x | {b['busy']['4']:.2f} |")
        w("")
    if "6" in res:
        w("## 6. Memory and planning")
        w("")
        w("Peak RSS of the item 4 pipeline. *Process tree* is `/usr/bin/time -v`'s maximum "
          "resident set size, which covers hyper2kvm and every `qemu-img` it waited for (the "
          "largest of them); *hyper2kvm alone* is its own `VmHWM`, polled while it runs; "
          "*qemu-img alone* is the bare convert under `/usr/bin/time -v`.")
        w("")
        w("| image | virtual size | process tree | hyper2kvm alone | qemu-img alone |")
        w("|---|---|---|---|---|")
        for r in res["6"]["rows"]:
            w(f"| {r['image']} | {r['virtual'] / GIB:.0f} GiB | {r['tree'] / MIB:.1f} MiB | "
              f"{r['own'] / MIB:.1f} MiB | {r['qemu_img'] / MIB:.1f} MiB |")
        w("")
        w(f"`hyper2kvm --batch-manifest <{DRY_RUN_VMS:,} VMs> --dry-run` (each VM its own "
          f"manifest file, production profile, a checksum each): median "
          f"{fmt_s(res['6']['dry_run'])}, slowest {fmt_s(res['6']['dry_run_max'])}, peak RSS "
          f"{res['6']['dry_run_rss'] / MIB:.1f} MiB.")
        w("")
    if "7" in res:
        v = res["7"]
        w("## 7. Guest repair and convert against virt-v2v")
        w("")
        if v["measured"]:
            runs = {k: x if isinstance(x, list) else [x] for k, x in v["runs"].items()}
            h, x = runs["hyper2kvm"], runs["virt-v2v"]
            w(f"{len(h)} run(s) each, on the same VMDK (`scripts/build-test-guest.sh`), "
              "libguestfs with `LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg`. "
              "hyper2kvm: production profile with guest inspection, backup and validate off and "
              "an uncompressed output (what virt-v2v writes); virt-v2v: `-i disk -o local -of "
              "qcow2`. "
              + ("The runs go hyper2kvm, virt-v2v, virt-v2v, hyper2kvm, so that a drift in the "
                 "machine's speed weighs on both alike; the ratio is total time over total "
                 "time. " if len(h) > 1 else "")
              + "*Fix stage* is hyper2kvm's guest repair, and *initramfs* what it did with the "
              "guest's initramfs, both from its report (virt-v2v always rebuilds it).")
            w("")
            w("| run | hyper2kvm | of it, fix stage | initramfs | virt-v2v |")
            w("|---|---|---|---|---|")
            for i, (a, b) in enumerate(zip(h, x), 1):
                fix = (a.get("stages") or {}).get("fix")
                initramfs = ", ".join(a.get("initramfs") or []) or "–"
                w(f"| {i} | {fmt_s(a['wall'])} | {opt_s(fix)} | {initramfs} | "
                  f"{fmt_s(b['wall'])} |")
            w(f"| total | {fmt_s(sum(a['wall'] for a in h))} | | | "
              f"{fmt_s(sum(b['wall'] for b in x))} (ratio {v['ratio']:.2f}x) |")
        else:
            w(f"Not measured in this run: {v['why']}.")
        w("")
    notes = ROOT / "scripts" / "bench-notes.md"
    if notes.exists():
        w(notes.read_text().rstrip())
        w("")
    return "\n".join(L)


def main():
    if RENDER:
        raw = json.loads(Path(RENDER).read_text())
        if raw["quick"] != QUICK or raw["rounds"] != ROUNDS:
            sys.exit(f"bench: {RENDER} was a run with BENCH_QUICK={int(raw['quick'])} "
                     f"BENCH_ROUNDS={raw['rounds']}; set them the same to render it")
        load_start, load_end = raw["load"]
        OUT.write_text(render(raw["machine"], raw["results"], load_start, load_end) + "\n")
        log(f"wrote {OUT} from {RENDER}")
        return
    if not TOOL.exists():
        sys.exit(f"bench: {TOOL} does not exist; run `cargo build --release` first")
    if " " in str(CACHE):
        sys.exit("bench: BENCH_DIR must not contain spaces (commands run without a shell)")
    CACHE.mkdir(parents=True, exist_ok=True)
    img_dir = CACHE / (f"images-v{IMAGE_VERSION}-" + ("quick" if QUICK else "full"))
    images = make_images(img_dir)
    images = {"rand.vmdk": images["rand.vmdk"], "rand.vhdx": images["rand.vhdx"],
              "sparse.vmdk": images["sparse.vmdk"], "sparse.vhdx": images["sparse.vhdx"]}
    work = CACHE / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    free = shutil.disk_usage(work).free
    need = (BATCH_VMS + 4) * 8 * CHUNK + 6 * RAND_SIZE
    if free < need:
        sys.exit(f"bench: {work} has {free / GIB:.1f} GiB free; the run needs about "
                 f"{need / GIB:.1f} GiB")
    with free_pages_kept() as reporting:
        run(images, work, reporting)


def run(images, work, reporting):
    t = Timer(work)
    m = machine(CACHE)
    m["page_reporting"] = reporting
    load_start = {"avg": loadavg(), "other": other_load()}
    log(f"machine: {m['cpu']}, {m['nproc']} cores, load {load_start['avg'][0]:.2f}, "
        f"{load_start['other']:.0%} busy before the run; rounds {ROUNDS}")
    res = {}
    steps = [(1, lambda: item1_convert_only(t, images, work)),
             (2, lambda: item2_flags(t, images, work)),
             (3, lambda: item3_checksum(t, images, work)),
             (4, lambda: item4_pipeline(t, images, work)),
             (5, lambda: item5_batch(t, images, work)),
             (6, lambda: item6_memory(t, images, work)),
             (7, lambda: item7_v2v(work))]
    for n, step in steps:
        if ONLY and n not in ONLY:
            continue
        res[str(n)] = step()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    subprocess.run(["sync"], check=True)
    load_end = {"avg": loadavg(), "other": other_load()}
    raw = CACHE / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw.write_text(json.dumps({"machine": m, "quick": QUICK, "rounds": ROUNDS,
                               "load": [load_start, load_end], "results": res}, indent=2))
    text = render(m, res, load_start, load_end) + "\n"
    # The bounds section is scripts/bench_bounds.py's: keep it as it is.
    old = OUT.read_text() if OUT.exists() else ""
    marker = "<!-- bounds benchmark: generated by scripts/bench_bounds.py -->"
    if marker in old:
        text += "\n" + old[old.index(marker):]
    OUT.write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {OUT} (raw results: {raw})")


if __name__ == "__main__":
    main()
