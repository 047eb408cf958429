"""Each NetBSD port mksmolnb builds and boots, with its facts in one place (:class:`Arch`):
names, console and root disk, QEMU binary, device majors. Used by the sets (which port
to fetch), the image (devices, fstab) and the launcher; imports nothing heavy.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from smolfs.errors import UsageError

#: Other spellings users type, and the ones the mirror and ``uname -m`` use.
_ALIASES = {"x86_64": "amd64", "evbarm-aarch64": "aarch64", "arm64": "aarch64"}


class Majors(NamedTuple):
    """Character (and block) majors of the devices every image gets."""

    cons: int
    ctty: int
    mem: int
    swap: int
    log: int
    filedesc: int
    rnd: int
    ld_blk: int
    ld_chr: int
    ksyms: int
    serial: int  # the console UART: com on x86 (tty00), plcom on evbarm (plcom0)


_X86 = dict(cons=0, ctty=1, mem=2, swap=4, log=7, filedesc=22, rnd=46, ld_blk=19, ld_chr=69,
            serial=8)
_MAJORS = {
    "amd64": Majors(**_X86, ksyms=85),
    "i386": Majors(**_X86, ksyms=101),
    # majors.arm32 / majors.aarch64: mem 0, swap 1, cons 2, ctty 3, log 5, filedesc 34,
    # rnd 52, ld 92 (char and block), plcom 93, ksyms 105.
    "aarch64": Majors(cons=2, ctty=3, mem=0, swap=1, log=5, filedesc=34, rnd=52, ld_blk=92,
                      ld_chr=92, ksyms=105, serial=93),
}


class Arch(enum.Enum):
    """The NetBSD ports mksmolnb builds for and boots, with their facts."""

    AMD64 = "amd64"
    I386 = "i386"
    AARCH64 = "aarch64"

    @classmethod
    def parse(cls, name: str) -> Arch:
        try:
            return cls(_ALIASES.get(name, name))
        except ValueError:
            valid = ", ".join(a.value for a in cls)
            raise UsageError(f"unknown architecture {name!r} (choose from {valid})") from None

    # -- release tree ---------------------------------------------------------------------

    @property
    def port(self) -> str:
        """The release's directory on a mirror (``NetBSD-10.1/<port>/``)."""
        return "evbarm-aarch64" if self is Arch.AARCH64 else self.value

    def set_extension(self, major: int | None) -> str:
        """``.tar.xz`` on amd64 and evbarm-aarch64 from NetBSD 10 on (``major`` None: a
        daily build of -current), ``.tgz`` before and on i386. The release's SHA512 list
        is the authority: a set published under the other name is still found."""
        newer = major is None or major >= 10
        return ".tar.xz" if self is not Arch.I386 and newer else ".tgz"

    @property
    def default_kernel(self) -> str:
        """The kernel configuration of the release that boots under QEMU."""
        return "GENERIC64" if self is Arch.AARCH64 else "GENERIC"

    def kernel_files(self, name: str) -> tuple[str, ...]:
        """The files of kernel ``name`` in ``binary/kernel/``, the one QEMU boots first.

        evbarm-aarch64 publishes ``netbsd-GENERIC64.img.gz`` (the arm64 ``Image`` QEMU's
        ``-kernel`` boots on ``-M virt``) beside ``netbsd-GENERIC64.gz`` (the ELF, whose
        symbols ``kstrip`` reads)."""
        if self is Arch.AARCH64:
            return (f"netbsd-{name}.img.gz", f"netbsd-{name}.gz")
        return (f"netbsd-{name}.gz",)

    # -- devices ---------------------------------------------------------------------------

    @property
    def majors(self) -> Majors:
        return _MAJORS[self.value]

    @property
    def disk_partitions(self) -> int:
        """Minor stride of one disk unit: 16 on amd64, 8 on i386 and aarch64."""
        return 16 if self is Arch.AMD64 else 8

    @property
    def ksyms_major(self) -> int:
        return self.majors.ksyms

    @property
    def root_disk(self) -> str:
        """The ``ld`` unit of the first virtio disk under the release's kernel.

        GENERIC64 wires ``ld0``-``ld3`` to ``sdmmc0``-``sdmmc3``, so ``ld* at virtio?``
        starts at unit 4 on evbarm-aarch64 (``root=ld4a``); x86 kernels start at 0.
        (With several virtio disks on ``-M virt``: QEMU gives the first ``-device`` the
        highest transport and the device tree lists transports from the lowest address,
        the order NetBSD attaches them in, so the first disk given gets the last unit.)"""
        return "ld4" if self is Arch.AARCH64 else "ld0"

    @property
    def serial_node(self) -> str:
        """The console UART's node: ``tty00`` (com0) on x86, ``plcom0`` (PL011) on aarch64."""
        return "plcom0" if self is Arch.AARCH64 else "tty00"

    # -- booting ---------------------------------------------------------------------------

    @property
    def qemu_binary(self) -> str:
        return "qemu-system-aarch64" if self is Arch.AARCH64 else "qemu-system-x86_64"

    @property
    def qemu_package(self) -> str:
        """Debian's package of :attr:`qemu_binary`."""
        from smolfs.run import PACKAGES

        return PACKAGES[self.qemu_binary]

    @property
    def cpu_family(self) -> str:
        """The host CPU family that runs this guest natively (``uname -m`` spelling)."""
        return "aarch64" if self is Arch.AARCH64 else "x86_64"
