"""Genuine NetBSD writes into a read-write root that ``smolfs build`` sized itself.

Issue 10: an image fitted to its content's inodes ran out of inodes after about 60
small files. Here NetBSD's own kernel (``$MKSMOLNB_NETBSD_DIR/netbsd``) boots a rescue
root whose ``/etc/rc`` creates many small files, says how many it wrote and halts
(which syncs and unmounts the root: "The operating system has halted."); afterwards
the host's
checkers (NetBSD's ``fsck_ffs``, ``e2fsck``) find the image clean and the free inodes
read from the image dropped by as many.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.fsimage import fsck_ffs

from smolfs.fs.fsstat import stat_image

pytestmark = [pytest.mark.netbsd, pytest.mark.qemu, pytest.mark.slow]

FILES = 600  # the root's content takes about 150 inodes: the old fit had ~25 spare
BOOT_TIMEOUT = 300.0  # TCG on a loaded machine

RC = f"""#!/bin/sh
PATH=/rescue
export PATH
mount -u -o rw / || echo "room: cannot remount / read-write"
mkdir -p /room
i=0
while [ $i -lt {FILES} ]; do
    echo "file $i" > /room/f$i || break
    i=$((i + 1))
done
sync
echo "room: wrote $i files"
halt
"""


def boot_until(kernel: Path, image: Path, marker: bytes) -> bytes:
    """Boot *image* under TCG with the serial console on a pipe until *marker* (these
    kernels have no ACPI: a halted guest leaves QEMU running); the console output.
    QEMU is always killed."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-cpu", "qemu64", "-m", "256",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel),
            "-drive", f"file={image},if=virtio,format=raw"]
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = b""
    try:
        assert qemu.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(qemu.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline and marker not in out:
            if not sel.select(timeout=1.0):
                continue
            chunk = os.read(qemu.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    finally:
        qemu.kill()
        qemu.wait()
    return out


@pytest.mark.parametrize("fs", ["ffs", "ext2"])
def test_netbsd_writes_many_files_into_a_built_rw_root(netbsd_dir: Path, tmp_path: Path,
                                                       fs: str) -> None:
    kernel, rescue = netbsd_dir / "netbsd", netbsd_dir / "sets" / "rescue.tgz"
    if not (kernel.is_file() and rescue.is_file()):
        pytest.skip(f"netbsd: {netbsd_dir} needs netbsd and sets/rescue.tgz")
    svc = tmp_path / "svcs" / "room"
    (svc / "etc").mkdir(parents=True)
    (svc / "etc" / "rc").write_text(RC)
    (svc / "service.conf").write_text("SETS=rescue\nRO=no\n")
    image = tmp_path / "room.img"
    r = subprocess.run([sys.executable, "-m", "smolfs", "build", "-s", "room", "--services-dir",
                        str(tmp_path / "svcs"), "-x", str(rescue), "--fs", fs, "-i", str(image),
                        "--offline"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, check=False,
                       env=dict(os.environ, MKSMOLNB_CACHE=str(tmp_path / "cache")))
    assert r.returncode == 0, r.stderr
    before = stat_image(image)
    console = boot_until(kernel, image, b"has halted").decode(errors="replace")
    assert f"room: wrote {FILES} files" in console, console[-3000:]
    assert "syncing disks... done" in console and "has halted" in console, console[-3000:]
    assert "out of inodes" not in console and "file system full" not in console
    after = stat_image(image)
    assert before.free_inodes - after.free_inodes == FILES + 1  # the files and /room
    if fs == "ffs":
        fsck_ffs(image)
    else:
        e2 = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
        assert e2.returncode == 0, e2.stdout + e2.stderr
