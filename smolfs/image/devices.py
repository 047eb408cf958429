"""The device nodes a kernel and init need before ``MAKEDEV`` can run, for each port
(:class:`smolfs.arch.Arch` holds the majors; minors and sources:
``smolfs/image/README.md``). Kept free of ``dataclasses``: the launcher reads it."""

from __future__ import annotations

from typing import NamedTuple

from smolfs.arch import Arch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from smolfs.fs.tree import Kind

# NetBSD groups from /etc/group: wheel 0, kmem 2, operator 5.
WHEEL, KMEM, OPERATOR = 0, 2, 5

class DeviceNode(NamedTuple):
    name: str  # below /dev
    kind: Kind  # Kind.CHR or Kind.BLK
    major: int
    minor: int
    mode: int
    gid: int = WHEEL


def makedev(major: int, minor: int) -> int:
    """NetBSD's ``makedev``: the 32-bit device number stored in an inode."""
    return ((major << 8) & 0x000FFF00) | (minor & 0xFF) | ((minor << 12) & 0xFFF00000)


def device_nodes(arch: Arch | str) -> list[DeviceNode]:
    """The nodes every image gets, for *arch*, sorted by name."""
    from smolfs.fs.tree import Kind

    arch = Arch.parse(arch) if isinstance(arch, str) else arch
    m = arch.majors
    c, b = Kind.CHR, Kind.BLK
    nodes = [
        DeviceNode("console", c, m.cons, 0, 0o600),
        DeviceNode("constty", c, m.cons, 1, 0o600),
        DeviceNode("tty", c, m.ctty, 0, 0o666),
        DeviceNode("mem", c, m.mem, 0, 0o640, KMEM),
        DeviceNode("kmem", c, m.mem, 1, 0o640, KMEM),
        DeviceNode("null", c, m.mem, 2, 0o666),
        DeviceNode("full", c, m.mem, 11, 0o666),
        DeviceNode("zero", c, m.mem, 12, 0o666),
        DeviceNode("drum", c, m.swap, 0, 0o640, KMEM),
        DeviceNode("klog", c, m.log, 0, 0o600),
        DeviceNode(arch.serial_node, c, m.serial, 0, 0o600),
        DeviceNode("stdin", c, m.filedesc, 0, 0o666),
        DeviceNode("stdout", c, m.filedesc, 1, 0o666),
        DeviceNode("stderr", c, m.filedesc, 2, 0o666),
        DeviceNode("random", c, m.rnd, 0, 0o444),
        DeviceNode("urandom", c, m.rnd, 1, 0o644),
        DeviceNode("ksyms", c, m.ksyms, 0, 0o440, KMEM),
    ]
    units = sorted({0, int(arch.root_disk.removeprefix("ld"))})
    for unit in units:
        for part, letter in enumerate("abcd"):
            minor = unit * arch.disk_partitions + part
            nodes.append(DeviceNode(f"ld{unit}{letter}", b, m.ld_blk, minor, 0o640, OPERATOR))
            nodes.append(DeviceNode(f"rld{unit}{letter}", c, m.ld_chr, minor, 0o640, OPERATOR))
    return sorted(nodes, key=lambda n: n.name)
