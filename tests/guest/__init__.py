"""Static NetBSD programs of ours, compiled at test time with the host's gcc: a guest's
userland where NetBSD's own cannot serve (an i386 init, a network service). See
README.md beside this file.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent

#: ``-m64`` / ``-m32``: the NetBSD architecture a program is built for.
ARCH_FLAG = {"amd64": "-m64", "i386": "-m32"}
_CFLAGS = ("-static", "-nostdlib", "-ffreestanding", "-fno-pie", "-no-pie",
           "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-ident", "-Os",
           "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-Wl,-z,noexecstack")


class ToolchainMissing(Exception):
    """gcc (or its 32-bit support for i386) is not installed."""


def build(name: str, arch: str, outdir: Path) -> Path:
    """Compile ``NAME.c`` for ``arch`` (amd64, i386) into ``outdir/NAME-ARCH``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ToolchainMissing("gcc not installed (Debian: gcc gcc-multilib)")
    out = outdir / f"{name}-{arch}"
    r = subprocess.run([gcc, ARCH_FLAG[arch], *_CFLAGS, "-o", str(out),
                        str(SOURCE_DIR / f"{name}.c")],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        if arch == "i386" and ("cannot find" in r.stderr or "No such file" in r.stderr):
            raise ToolchainMissing(f"gcc cannot build i386 programs (Debian: gcc-multilib): "
                                   f"{r.stderr.strip().splitlines()[-1]}")
        raise RuntimeError(f"gcc {name}.c for {arch} failed:\n{r.stderr}")
    return out


def as_set(files: dict[str, Path], out: Path) -> Path:
    """A tar archive (an extra "set" for ``smolfs build -x``) holding ``files``: image
    path (``sbin/init``) → program; directories root:wheel 0755, programs 0555."""
    with tarfile.open(out, "w") as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(f"./{d}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, program in sorted(files.items()):
            data = program.read_bytes()
            info = tarfile.TarInfo(f"./{path}")
            info.size, info.mode = len(data), 0o555
            tar.addfile(info, io.BytesIO(data))
    return out
