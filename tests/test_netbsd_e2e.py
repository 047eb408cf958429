"""Genuine NetBSD end to end, as a user runs it: ``smolfs build`` makes images from
NetBSD's own sets, ``startnb`` boots them with NetBSD's own kernel until the service is
ready, and ``startnb stop`` ends them (the shared kernels have no ACPI: their console shows
no ``acpi0``, and stop sends SIGTERM at once). kstrip on GENERIC: test_netbsd_kstrip.py.

Reads ``$MKSMOLNB_NETBSD_DIR`` (skipped without it; each test names the file it lacks):

- ``netbsd`` or ``netbsd.gz``: an amd64 kernel QEMU boots (MICROVM, or GENERIC);
- ``sets/``: the release's sets as published (``rescue.tgz`` or ``rescue.tar.xz``;
  ``httpd`` beside it for the web server).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ports import free_port

from conftest import REPO, qemu_pids

pytestmark = [pytest.mark.netbsd, pytest.mark.qemu, pytest.mark.slow]

BOOT_TIMEOUT = "180"  # TCG on a loaded CI machine; a boot here takes about a second


def first(directory: Path, *names: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    pytest.skip(f"netbsd: {directory} has none of {', '.join(names)}")


def set_file(netbsd_dir: Path, name: str) -> Path:
    return first(netbsd_dir / "sets", f"{name}.tgz", f"{name}.tar.xz")


class Session:
    """Runs the commands with private cache and state; kills any QEMU left behind."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = Path(tempfile.mkdtemp(prefix="snb-", dir="/tmp"))  # short socket paths
        self.env = dict(os.environ, MKSMOLNB_STATE=str(self.state),
                        MKSMOLNB_CACHE=str(workdir / "cache"))

    def run(self, module: str, *args: str, timeout: float = 300) -> dict | None:
        r = subprocess.run([sys.executable, "-m", module, *args], cwd=self.workdir,
                           env=self.env, capture_output=True, text=True, timeout=timeout,
                           check=False)
        assert r.returncode == 0, f"{module} {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
        out = r.stdout.strip()
        if not out.startswith("{"):
            return None
        try:
            return json.loads(out)
        except json.JSONDecodeError:  # a report line, then more output
            return json.loads(out.splitlines()[0])

    def qemu_left(self) -> list[int]:
        return qemu_pids(str(self.workdir))

    def close(self) -> None:
        left = self.qemu_left()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        for log in self.state.glob("*/serial.log"):
            print(f"--- {log}\n{log.read_text(errors='replace')}")
        assert not left, f"QEMU left running: {left}"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = Session(tmp_path)
    try:
        yield s
    finally:
        s.close()



def boot_detached(session: Session, name: str, kernel: Path, image: Path,
                  *args: str) -> dict:
    report = session.run("launcher", "-d", "--name", name, "-k", str(kernel), "-i", str(image),
                         "--json", "--timeout", BOOT_TIMEOUT, *args)
    assert report is not None
    stages = report["timing"]["stages"]
    assert stages["banner"] is not None and stages["root"] is not None, stages
    assert stages["ready"] >= stages["root"], stages
    return report


def stop(session: Session, name: str) -> None:
    session.run("launcher", "stop", name, "--grace", "1")
    assert not session.qemu_left()


def test_rescue_from_genuine_set_boots_to_its_shell(session: Session, netbsd_dir: Path) -> None:
    kernel = first(netbsd_dir, "netbsd", "netbsd.gz")
    rescue = set_file(netbsd_dir, "rescue")
    image = session.workdir / "rescue.img"
    session.run("smolfs", "build", "-s", "rescue", "-x", str(rescue), "-i", str(image),
                "--offline")
    info = session.run("smolfs", "info", "--json", str(image))
    assert info is not None and info["service"] == "rescue"
    boot_detached(session, "rescue", kernel, image, "--ro", "-N",
                  "--ready", "console:rescue: ready")
    stop(session, "rescue")


def test_web_server_from_genuine_sets_answers_http(session: Session, netbsd_dir: Path) -> None:
    """The shipped bozohttpd service on the rescue set and NetBSD's httpd alone (no base or
    etc set): httpd looks up uid 0 at start, in ``/etc/pwd.db``, which the service's own
    ``etc/`` brings here (a build with packages writes it from ``master.passwd``)."""
    from smolfs.pkg import pwdb

    kernel = first(netbsd_dir, "netbsd", "netbsd.gz")
    sets = ",".join(str(set_file(netbsd_dir, name)) for name in ("rescue", "httpd"))
    services = session.workdir / "services"
    shutil.copytree(REPO / "services" / "bozohttpd", services / "bozohttpd")
    pwd, _ = pwdb.databases(["root:*:0:0::0:0:Charlie &:/root:/bin/sh"])
    (services / "bozohttpd" / "etc" / "pwd.db").write_bytes(pwd)
    image = session.workdir / "web.img"
    session.run("smolfs", "build", "-s", "bozohttpd", "--services-dir", str(services),
                "-x", sets, "-i", str(image), "--offline")
    port = free_port()
    # The second start is from the first one's plan: QEMU, readiness and report without
    # the ordinary path (launcher.detached), probing HTTP itself.
    for fast in (False, True):
        report = boot_detached(session, "web", kernel, image, "-p", f"{port}:80",
                               "--ready", f"http:{port}/")
        assert report["fast_path"] is fast
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
            assert answer.status == 200
        stop(session, "web")
