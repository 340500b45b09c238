"""Python hooks that check a converted disk before it is handed over.

Each function returns {"success": bool, "output": text}: hyper2kvm fails the hook when
success is false and puts the output in the report.
"""

import os

# The first bytes of each image format (from the formats' specifications). Raw images have none.
MAGIC = {
    "qcow2": b"QFI\xfb",
    "vdi": None,  # checked at offset 64, below
    "vmdk": b"KDMV",
}
VDI_SIGNATURE = b"\x7f\x10\xda\xbe"


def verify_disk_integrity(disk_path, expected_format):
    """The file at disk_path exists, is not empty and starts like an expected_format image."""
    if not os.path.isfile(disk_path):
        return {"success": False, "output": f"{disk_path}: not a file"}
    size = os.path.getsize(disk_path)
    if size == 0:
        return {"success": False, "output": f"{disk_path}: empty"}
    with open(disk_path, "rb") as f:
        head = f.read(72)
    if expected_format == "raw":
        ok = True
    elif expected_format == "vdi":
        ok = head[64:68] == VDI_SIGNATURE
    elif expected_format in MAGIC:
        ok = head.startswith(MAGIC[expected_format])
    else:
        return {"success": False, "output": f"unknown format {expected_format!r}"}
    verdict = "is" if ok else "is not"
    return {"success": ok, "output": f"{disk_path} {verdict} a {expected_format} image ({size} bytes)"}


def verify_qcow2(disk):
    """Shorthand: the disk is a qcow2 image."""
    return verify_disk_integrity(disk, "qcow2")
