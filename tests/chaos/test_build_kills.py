"""``smolfs build`` killed at each phase by SIGKILL, SIGTERM, SIGINT and SIGHUP.

Each case starts a build (tests/chaos/build_driver.py: the real CLI, phases made
observable), waits until it reaches the phase, delivers the signal with ``os.kill``
and then checks: the destination holds the old image, intact (or, killed just after
the rename, the complete new one); no process of the test is left (postinst scripts
and what they started included); the build's staging directory is gone once the next
build has run (at once, for the signals a build can catch); the next build succeeds
(no lock left held) and leaves nothing but the image and its manifest.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, live_processes
from smolfs.image.postinst import bwrap_problem

setsynth = pytest.importorskip("helpers.setsynth", reason="tests/helpers/setsynth.py is missing")

pytestmark = pytest.mark.chaos

DRIVER = Path(__file__).with_name("build_driver.py")
EPOCH = "1700000000"
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
#: Exit status of a build stopped by each signal (SIGKILL: killed, no say in it).
STATUS = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 128 + signal.SIGTERM,
          signal.SIGINT: 130, signal.SIGHUP: 128 + signal.SIGHUP}
#: Seconds a case may wait for any one thing (the build to reach a phase, to exit...).
WAIT = 60.0


def write_service(root: Path, name: str, postinst: str) -> None:
    (root / name / "etc").mkdir(parents=True)
    (root / name / "etc/rc").write_text("#!/bin/sh\n")
    (root / name / "postinst").mkdir()
    (root / name / "postinst/10-chaos.sh").write_text(postinst)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """The sets, the ``quick`` service (a postinst that writes one file) and an image of it
    to find at the destination (another size than the builds under test make)."""
    d = tmp_path_factory.mktemp("shared")
    sets = [setsynth.make_set(d / "rescue.tar.xz", kind="rescue"),
            setsynth.make_set(d / "etc.tar.xz", kind="etc")]
    write_service(d / "svcs", "quick", "mkdir -p var/chaos\necho built > var/chaos/ok\n")
    sets_arg = ["-x", ",".join(map(str, sets)), "-i", "img"]
    r = subprocess.run([sys.executable, "-m", "smolfs", "build", "--services-dir",
                        str(d / "svcs"), "-s", "quick", *sets_arg, "-m", "24"], cwd=d,
                       env={**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": EPOCH,
                            "MKSMOLNB_CACHE": str(d / "cache")},
                       capture_output=True, text=True, timeout=WAIT, check=False)
    assert r.returncode == 0, r.stderr
    return {"sets": sets_arg, "old": d / "img"}


def path_without_bwrap(tmp_path: Path) -> str:
    bin_dir = tmp_path / "nobwrap"
    bin_dir.mkdir()
    for tool in ("sh", "mkdir", "echo", "touch", "sleep", "setsid"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


class Build:
    """A ``smolfs build`` subprocess whose stderr is read line by line as it comes."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, wanted: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"build ended before {wanted!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line == wanted:
                return
        pytest.fail(f"no {wanted!r} within {WAIT}s:\n" + "\n".join(self.seen))

    def finish(self) -> tuple[int, str]:
        rc = self.proc.wait(timeout=WAIT)
        while (line := self.lines.get(timeout=WAIT)) is not None:
            self.seen.append(line)
        return rc, "\n".join(self.seen)


def wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def ours(needles: list[str]) -> list[tuple[int, list[bytes]]]:
    return [(pid, argv) for pid, argv in live_processes()
            if pid != os.getpid() and any(n.encode() in a for a in argv for n in needles)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def case(tmp_path: Path, shared: dict) -> Iterator[dict]:  # type: ignore[type-arg]
    """A destination holding the old image; the services in a directory of this case (so
    that every process of the case has its path in its arguments): ``quick`` and
    ``hang``, a postinst that starts three sleepers (in the background, in a new
    session, orphaned), then sleeps; each sleep's argument ends with a marker."""
    marker = str(uuid.uuid4().int)[:12]
    out = tmp_path / "out"
    out.mkdir()
    for name in ("img", "img.json"):
        shutil.copy(shared["old"].with_name(name), out / name)
    write_service(tmp_path / "svcs", "quick", "mkdir -p var/chaos\necho built > var/chaos/ok\n")
    write_service(tmp_path / "svcs", "hang",
                  f"sleep 3599.{marker}1 &\nsetsid sleep 3599.{marker}2 &\n"
                  f"( sleep 3599.{marker}3 & )\ntouch started\nsleep 3599.{marker}4\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MKSMOLNB_CACHE": str(tmp_path / "cache"),
           "SOURCE_DATE_EPOCH": EPOCH, "CHAOS_IMAGE": str(out / "img")}
    yield {"out": out, "env": env, "marker": marker, "tmp": tmp_path,
           "quick": ["--services-dir", str(tmp_path / "svcs"), "-s", "quick", *shared["sets"]],
           "hang": ["--services-dir", str(tmp_path / "svcs"), "-s", "hang", *shared["sets"]],
           "old": digest(out / "img")}
    for pid, _ in ours([marker, str(tmp_path)]):  # never leave one behind, even on failure
        os.kill(pid, signal.SIGKILL)


def check_after(c: dict, build: Build, sig: int,  # type: ignore[type-arg]
                new_is_possible: bool = False, in_log: str = "") -> None:
    """The checks of the module doc, once the signal has been sent."""
    out, old = c["out"], c["old"]
    rc, log = build.finish()
    assert rc == STATUS[sig], log
    assert "Traceback" not in log and in_log in log, log
    if sig != signal.SIGKILL:
        assert not list(out.glob(".smolfs-staging-*")), "a caught signal removes the staging"
    # the destination: the old image, or (killed after the rename) the complete new one
    after_kill = digest(out / "img")
    # nothing of the test left running (postinst scripts and their children included)
    wait_for(lambda: not ours([c["marker"], str(c["tmp"])]), "the test's processes to go")
    # the next build: succeeds (no lock held), sweeps what a SIGKILL left
    env = {**c["env"]}
    env.pop("CHAOS_PAUSE_AT", None)
    again = subprocess.run([sys.executable, "-m", "smolfs", "build", *c["quick"]], cwd=out,
                           env=env, capture_output=True, text=True, timeout=WAIT, check=False)
    assert again.returncode == 0, again.stderr
    new = digest(out / "img")
    assert new != old
    assert after_kill == (new if new_is_possible else old)
    assert sorted(p.name for p in out.iterdir()) == ["img", "img.json"]
    assert not ours([c["marker"], str(c["tmp"])])


PHASES = ["stream", "write", "rename", "renamed"]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("phase", PHASES)
def test_kill_build_at_phase(case: dict, phase: str, sig: int) -> None:  # type: ignore[type-arg]
    env = {**case["env"], "CHAOS_PAUSE_AT": phase}
    build = Build(case["quick"], case["out"], env)
    build.wait_line(f"CHAOS-PHASE {phase}")
    os.kill(build.proc.pid, sig)
    check_after(case, build, sig, new_is_possible=phase == "renamed")


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("confined", [True, False], ids=["bwrap", "no-bwrap"])
def test_kill_build_during_postinst(case: dict, confined: bool, sig: int) -> None:  # type: ignore[type-arg]
    if confined and bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    env = {**case["env"]}
    if not confined:
        env["PATH"] = path_without_bwrap(case["tmp"])
    build = Build([*case["hang"], "--postinst-timeout", "0"], case["out"], env)
    out, marker = case["out"], case["marker"]
    # the script has started its three sleepers and sleeps itself
    wait_for(lambda: list(out.glob(".smolfs-staging-*/root/started"))
             and len(ours([marker])) >= 4, "the postinst script and its sleepers")
    os.kill(build.proc.pid, sig)
    check_after(case, build, sig, in_log="" if confined else "postinst scripts run unconfined")
