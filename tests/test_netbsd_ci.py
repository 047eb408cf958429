"""``.ci/run`` points the genuine-NetBSD tests at ``../shared/netbsd`` when CI lays it out
beside the clone, and leaves a directory the caller chose alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO


def run_ci(tmp_path: Path, shared: bool, env_value: str | None) -> str:
    """Run a copy of ``.ci/run`` in a fake clone whose ``test.sh`` prints the variable."""
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", clone / ".ci" / "run")
    (clone / "test.sh").write_text('#!/bin/sh\necho "dir=${MKSMOLNB_NETBSD_DIR-unset} $*"\n')
    (clone / "test.sh").chmod(0o755)
    if shared:
        (tmp_path / "shared" / "netbsd").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "MKSMOLNB_NETBSD_DIR"}
    if env_value is not None:
        env["MKSMOLNB_NETBSD_DIR"] = env_value
    r = subprocess.run([str(clone / ".ci" / "run"), "-k", "x"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip()


@pytest.mark.parametrize(("shared", "env_value", "want"), [
    (True, None, "dir={tmp}/shared/netbsd -k x"),
    (True, "/my/netbsd", "dir=/my/netbsd -k x"),
    (False, None, "dir=unset -k x"),
], ids=["shared-beside-clone", "user-dir-wins", "no-shared-dir"])
def test_ci_run_sets_netbsd_dir(tmp_path: Path, shared: bool, env_value: str | None,
                                want: str) -> None:
    assert run_ci(tmp_path, shared, env_value) == want.format(tmp=tmp_path.resolve())
