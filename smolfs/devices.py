"""Device nodes a NetBSD kernel and init need before ``MAKEDEV`` can run.

``init(8)`` opens ``/dev/console``; a rescue-only image carries no ``MAKEDEV``
script, so every node its ``/etc/rc`` uses must be in the image. The table holds
NetBSD's majors (``sys/arch/*/conf/majors.*``); only the ``ld`` disk minors and
the ``ksyms`` major differ between amd64 and i386.

The tree stores ``(major, minor)``; the filesystem writers encode it with
NetBSD's ``makedev`` (see :func:`makedev`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smolfs.errors import UsageError
from smolfs.tree import Kind

# NetBSD groups from /etc/group: wheel 0, kmem 2, operator 5.
WHEEL, KMEM, OPERATOR = 0, 2, 5


class Arch(enum.Enum):
    """The NetBSD ports mksmolnb builds for, with their per-port device facts."""

    AMD64 = "amd64"
    I386 = "i386"

    @classmethod
    def parse(cls, name: str) -> Arch:
        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(a.value for a in cls)
            raise UsageError(f"unknown architecture {name!r} (choose from {valid})") from None

    @property
    def disk_partitions(self) -> int:
        """Partitions per disk unit (``MAXPARTITIONS``): the ``ld`` minor stride."""
        return 16 if self is Arch.AMD64 else 8

    @property
    def ksyms_major(self) -> int:
        return 85 if self is Arch.AMD64 else 101


@dataclass(frozen=True)
class DeviceNode:
    name: str  # below /dev
    kind: Kind  # Kind.CHR or Kind.BLK
    major: int
    minor: int
    mode: int
    gid: int = WHEEL


_LD_BLOCK, _LD_CHAR = 19, 69


def makedev(major: int, minor: int) -> int:
    """NetBSD's ``makedev``: the 32-bit device number stored in an inode."""
    return ((major << 8) & 0x000FFF00) | (minor & 0xFF) | ((minor << 12) & 0xFFF00000)


def device_nodes(arch: Arch | str) -> list[DeviceNode]:
    """The nodes every image gets, for *arch*, sorted by name."""
    arch = Arch.parse(arch) if isinstance(arch, str) else arch
    c, b = Kind.CHR, Kind.BLK
    nodes = [
        DeviceNode("console", c, 0, 0, 0o600),
        DeviceNode("constty", c, 0, 1, 0o600),
        DeviceNode("tty", c, 1, 0, 0o666),
        DeviceNode("mem", c, 2, 0, 0o640, KMEM),
        DeviceNode("kmem", c, 2, 1, 0o640, KMEM),
        DeviceNode("null", c, 2, 2, 0o666),
        DeviceNode("full", c, 2, 11, 0o666),
        DeviceNode("zero", c, 2, 12, 0o666),
        DeviceNode("drum", c, 4, 0, 0o640, KMEM),
        DeviceNode("klog", c, 7, 0, 0o600),
        DeviceNode("tty00", c, 8, 0, 0o600),
        DeviceNode("stdin", c, 22, 0, 0o666),
        DeviceNode("stdout", c, 22, 1, 0o666),
        DeviceNode("stderr", c, 22, 2, 0o666),
        DeviceNode("random", c, 46, 0, 0o444),
        DeviceNode("urandom", c, 46, 1, 0o644),
        DeviceNode("ksyms", c, arch.ksyms_major, 0, 0o440, KMEM),
    ]
    unit = 0
    for part, letter in enumerate("abcd"):
        minor = unit * arch.disk_partitions + part
        nodes.append(DeviceNode(f"ld{unit}{letter}", b, _LD_BLOCK, minor, 0o640, OPERATOR))
        nodes.append(DeviceNode(f"rld{unit}{letter}", c, _LD_CHAR, minor, 0o640, OPERATOR))
    return sorted(nodes, key=lambda n: n.name)
