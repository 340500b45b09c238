#!/usr/bin/env python3
"""Writes the fuzz seed corpus, fuzz/corpus/<target>/: our own examples, profiles and fixtures,
plus hostile seeds (deep nesting, alias chains, long values, many problems, JSON named .yaml).

The first byte of a seed picks the file name's extension the entry point writes it under:
'0' .json, '1' .yaml, '2' none (for template: '0' {{ var }} only, '1' with ${ENV}). Run it from
anywhere; it replaces the generated seeds and keeps nothing else. Crashes found by a campaign
are kept in fuzz/regressions/<target>/ instead, which this script never touches."""
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"
JSON, YAML, NOEXT = b"0", b"1", b"2"


def seeds():
    s = {t: {} for t in ["manifest", "config", "batch", "profile", "template", "libvirt_xml",
                         "vmware_export"]}
    ext = {".json": JSON, ".yaml": YAML, ".yml": YAML}
    for f in sorted((ROOT / "examples").glob("*")):
        if f.is_file():
            target = "config" if "config" in f.name else "manifest"
            s[target][f"example-{f.name}"] = ext.get(f.suffix, NOEXT) + f.read_bytes()
    for f in sorted(list((ROOT / "profiles").glob("*.yaml")) + list((ROOT / "examples/profiles").glob("*.yaml"))):
        s["profile"][f"profile-{f.name}"] = YAML + f.read_bytes()
    for f in sorted((ROOT / "tests/fixtures/libvirt").glob("*.xml")):
        s["libvirt_xml"][f"fixture-{f.name}"] = f.read_bytes()
    for f in sorted((ROOT / "tests/fixtures/exports").glob("*")):
        s["vmware_export"][f"fixture-{f.name}"] = f.read_bytes()
    s["vmware_export"]["digests.mf"] = (b"SHA256(app01.ovf)= " + b"ab" * 32 + b"\nSHA1(app01-disk1.vmdk)= "
                                       + b"cd" * 20 + b"\n")
    gen2 = (ROOT / "tests/fixtures/exports/hyperv-gen2.xml").read_text()
    s["vmware_export"]["hyperv-gen2-utf16.xml"] = b"\xff\xfe" + gen2.replace("\n", "\r\n").encode("utf-16-le")
    s["vmware_export"]["many-disks.ovf"] = (
        b"<Envelope><VirtualSystem><VirtualHardwareSection>"
        + b"<Item><ResourceType>17</ResourceType><HostResource>ovf:/disk/d</HostResource></Item>" * 3000
        + b"</VirtualHardwareSection></VirtualSystem></Envelope>")

    disk = {"id": "d0", "source_format": "raw", "local_path": "disk0.raw"}
    vm = {"manifest_version": "1.0", "disks": [disk], "pipeline": {"convert": {"enabled": True}}}
    hooks = {"pre_convert": [{"type": "script", "path": "/bin/true", "args": ["{{ vm_name }}"],
                              "env": {"A": "{{ stage }}"}},
                             {"type": "http", "url": "https://h/{{ stage }}",
                              "headers": {"X-T": "${TOKEN}"}, "body": {"a": "{{ output_path }}"}}]}
    s["manifest"]["hooks.json"] = JSON + json.dumps({**vm, "hooks": hooks}).encode()
    s["manifest"]["json-named-yaml"] = YAML + json.dumps(vm).encode()
    s["manifest"]["profile-overrides.yaml"] = YAML + b"manifest_version: '1.0'\nprofile: production\nprofile_overrides: {pipeline: {fix: {enabled: false}}, disks: []}\ndisks: [{id: d0, source_format: vmdk, local_path: x.vmdk}]\n"
    s["manifest"]["many-problems.json"] = JSON + json.dumps({"manifest_version": "9", "disks": [
        {"id": i, "source_format": "nope", "bytes": -1, "local_path": 3, "extra": True} for i in range(300)],
        "nics": [{"mac": "zz"}] * 50, "unknown_top": 1}).encode()
    s["manifest"]["long-value.yaml"] = YAML + b"manifest_version: '" + b"9" * 20000 + b"'\ndisks: [{id: '" + b"x" * 20000 + b"'}]\n"
    s["manifest"]["deep-json"] = NOEXT + b'{"a":' * 200 + b"1" + b"}" * 200
    s["manifest"]["deep-yaml-flow.yaml"] = YAML + b"a: " + b"[" * 500 + b"]" * 500 + b"\n"
    s["manifest"]["deep-yaml-block.yaml"] = YAML + b"".join(b" " * i + b"k:\n" for i in range(300))
    laughs = [b"a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        b"a%d: &a%d [" % (i, i) + b", ".join([b"*a%d" % (i - 1)] * 10) + b"]" for i in range(1, 9)]
    s["manifest"]["alias-bomb.yaml"] = YAML + b"\n".join(laughs) + b"\nmanifest_version: '1.0'\n"
    s["manifest"]["alias-chain.yaml"] = YAML + b"d: &d {id: d0, source_format: raw, local_path: '" + b"y" * 2000 + b"'}\nmanifest_version: '1.0'\ndisks: [" + b", ".join([b"*d"] * 200) + b"]\n"
    s["manifest"]["not-utf8.json"] = JSON + b'{"manifest_version": "\xff\xfe"}'
    s["manifest"]["empty"] = NOEXT
    s["manifest"]["yaml-tags.yaml"] = YAML + b"!!map {? !!str manifest_version : !!str '1.0', disks: !!seq []}\n--- \nsecond: doc\n"

    s["config"]["options.yaml"] = YAML + b"output_dir: out\nprogress: lines\nverbose: 2\nbatch_parallel: 0\ncmd: libvirt-xml\ndry_run: true\n"
    s["config"]["config-is-manifest.json"] = JSON + json.dumps({**vm, "verbose": 9, "progress": "x"}).encode()
    s["config"]["layer.yaml"] = YAML + b"profile: fast\npipeline: {convert: {compress: true}}\noutput: {format: qcow2}\n"
    s["config"]["deep.yaml"] = YAML + b"x: " + b"{a: " * 300 + b"1" + b"}" * 300 + b"\n"

    batch = {"batch_version": "1.0", "batch_metadata": {"batch_id": "b", "parallel_limit": 2,
             "continue_on_error": True},
             "shared_config": {"output_directory": "out", "pipeline": {"convert": {"enabled": True}}},
             "vms": [{"manifest": "vm.json", "id": "web", "priority": 1, "overrides": {"output": {"format": "qcow2"}}},
                     {"manifest": "vm.json", "id": "db", "enabled": False}]}
    s["batch"]["batch.json"] = JSON + json.dumps(batch).encode()
    s["batch"]["batch-problems.yaml"] = YAML + b"batch_version: \"1.0\"\nbatch_metadata: {parallel_limit: 0, batch-id: x}\nvms:\n  - {manifest: a.yaml, id: web}\n  - {manifest: b.yaml, id: web}\n  - {id: no-manifest}\nshared_config: {disks: []}\nextra: true\n"
    s["batch"]["many-vms.json"] = JSON + json.dumps({"batch_version": "1.0", "vms": [
        {"manifest": "vm.json", "id": "v%d" % i, "priority": -i, "overrides": {"bad": i}} for i in range(400)]}).encode()

    s["profile"]["extends-base.yaml"] = YAML + b"extends: base\npipeline: {convert: {compress: true}}\n\0extends: production\noutput: {format: qcow2}\n"
    s["profile"]["cycle.yaml"] = YAML + b"extends: base\n\0extends: fuzz\n"
    s["profile"]["bad-keys.json"] = JSON + b'{"extends": 3, "disks": [], "pipelin": {}}\0{"extends": "nope"}'

    for name, text in {
        "vars": b"0{{ vm_name }}-{{stage}}/{{  output_path  }}",
        "env": b"1Bearer ${TOKEN} {{ vm_id }} ${A_B}",
        "unclosed": b"0{{ vm_name } {{ {{",
        "malformed": b"1{{ .Id }} ${} ${1x} $(reboot) }}{{",
        "many-placeholders": b"0" + b"{{ nope }}" * 2000,
    }.items():
        s["template"][name] = text

    dom = b"<domain type='kvm'><name>%s</name><memory unit='KiB'>1048576</memory><devices>%s</devices></domain>"
    s["libvirt_xml"]["deep.xml"] = dom % (b"d", b"<a>" * 2000 + b"</a>" * 2000)
    s["libvirt_xml"]["entities.xml"] = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><domain><name>&b;</name></domain>'
    s["libvirt_xml"]["many-disks.xml"] = dom % (b"m", b"".join(b"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nonexistent/%d.qcow2'/><target dev='vd%d'/></disk>" % (i, i) for i in range(300)))
    s["libvirt_xml"]["long-name.xml"] = dom % (b"n" * 30000, b"")
    return s


def main():
    for target, files in seeds().items():
        d = OUT / target
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"{OUT}: {total} bytes")


if __name__ == "__main__":
    main()
