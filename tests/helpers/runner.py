"""Runs the product's commands as a user would, each test with its own cache and state,
and makes sure no QEMU of the test outlives it (found by the test's directory in argv)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import REPO, qemu_pids


class Runner:
    """``python -m MODULE ...`` with private cache and state; ``needle`` is a path every
    QEMU of this runner carries in its argv (its kernel or image lives below it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.needle = str(workdir)
        self.state = Path(tempfile.mkdtemp(prefix="snb-", dir="/tmp"))  # short socket paths
        self.env = dict(os.environ, MKSMOLNB_STATE=str(self.state),
                        MKSMOLNB_CACHE=str(workdir / "cache"))

    def run(self, module: str, *args: str, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=self.env,
                           capture_output=True, text=True, timeout=timeout, check=False,
                           stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, f"{module} {' '.join(args)}: exit {r.returncode}\n" \
                                      f"{r.stderr}"
        return r

    def startnb(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run("launcher", *args, timeout=timeout)

    def qemu_left(self, wait: float = 0.0) -> list[int]:
        deadline = time.monotonic() + wait
        while (pids := qemu_pids(self.needle)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    def close(self) -> None:
        left = self.qemu_left()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.state, ignore_errors=True)
        assert not left, f"QEMU left running: {left}"
