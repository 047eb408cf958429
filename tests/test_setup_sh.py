"""setup.sh's choice of system packages, run with stand-ins: ``uname`` says the machine,
``gcc`` fails (no 32-bit support), ``apt-get`` records what it is asked to install. Only
the programs the script needs are on PATH, so every tested program is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

TOOLS = ("dirname", "id", "ls", "sort", "python3")


def packages(tmp_path: Path, machine: str) -> list[str]:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} not found")
        (bin_ / tool).symlink_to(real)
    log = tmp_path / "apt.log"
    stubs = {"uname": f"echo {machine}", "gcc": "exit 1", "sudo": 'exec "$@"',
             "apt-get": f'echo "$@" >> {log}'}
    for name, body in stubs.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\nexit 0\n")  # pip install: not tested here
    (venv / "python").chmod(0o755)
    bash = shutil.which("bash")
    assert bash is not None
    r = subprocess.run([bash, str(REPO / "setup.sh"), "--test"], capture_output=True,
                       text=True, check=False, timeout=60,
                       env={"PATH": str(bin_), "MKSMOLNB_VENV": str(tmp_path / "venv")})
    assert r.returncode == 0, r.stderr
    install = [line for line in log.read_text().splitlines() if line.startswith("install")]
    assert len(install) == 1, install
    return install[0].split()


def test_x86_64_host_gets_gdb_and_gcc_multilib(tmp_path: Path) -> None:
    got = packages(tmp_path, "x86_64")
    assert "gdb" in got and "gcc-multilib" in got and "qemu-system-arm" in got


def test_arm64_host_gets_gdb_but_no_gcc_multilib(tmp_path: Path) -> None:
    """Debian has no gcc-multilib on arm64: asking for it would fail the whole install
    (the x86 test kernels then skip, saying gcc cannot compile for -m32)."""
    got = packages(tmp_path, "aarch64")
    assert "gdb" in got and "gcc-multilib" not in got and "qemu-system-x86" in got
