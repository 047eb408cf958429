"""quickstart.sh: on a machine that has everything, it goes straight to
`startnb rescue --strip`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO


def test_quickstart_runs_startnb_rescue_with_its_arguments(tmp_path: Path) -> None:
    if not (shutil.which("qemu-system-x86_64") and shutil.which("bwrap")):
        pytest.skip("quickstart would install packages on this machine")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "argv"
    startnb = venv / "bin" / "startnb"
    startnb.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\necho "cwd=$PWD" >> {log}\n')
    startnb.chmod(0o755)
    r = subprocess.run([str(REPO / "quickstart.sh"), "-p", "a b"], capture_output=True,
                       text=True, timeout=60, check=False, cwd=tmp_path,
                       env={**os.environ, "MKSMOLNB_VENV": str(venv)})
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == ["rescue", "--strip", "-p", "a b", f"cwd={REPO}"]
    assert "installing" not in r.stderr and "setting up" not in r.stderr
