"""The build's staging directory: owned while it lives, removed at the end, and the stale
ones of killed builds removed by the next build (never a live build's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smolfs.image.staging import (
    OWNER,
    PREFIX,
    YOUNG_SECONDS,
    BuildStopped,
    owner_alive,
    owner_record,
    staging_dir,
    sweep,
)


def fake_staging(parent: Path, name: str, record: str | None) -> Path:
    d = parent / f"{PREFIX}{name}"
    (d / "root/etc").mkdir(parents=True)
    (d / "root/etc/motd").write_text("x\n")
    if record is not None:
        (d / OWNER).write_text(record)
    return d


def dead_record() -> str:
    """The owner record of a process that has ended."""
    p = subprocess.Popen(["sleep", "30"])
    record = owner_record(p.pid)
    p.kill()
    p.wait()
    return record


def test_owner_record_names_this_process() -> None:
    pid, start, host = owner_record().split()
    assert int(pid) == os.getpid() and start.isdigit() and host
    assert owner_alive(owner_record())
    assert not owner_alive(dead_record())
    assert not owner_alive(f"{os.getpid()} 1 {host}\n")  # same pid, another start: reused
    assert owner_alive(f"{os.getpid()} 1 another-host.example\n")  # cannot tell: kept
    assert not owner_alive("garbage\n")


def test_sweep_removes_only_stale_directories(tmp_path: Path) -> None:
    dead = fake_staging(tmp_path, "dead", dead_record())
    live = fake_staging(tmp_path, "live", owner_record())
    young = fake_staging(tmp_path, "young", None)
    old = fake_staging(tmp_path, "old", None)
    past = time.time() - YOUNG_SECONDS - 10
    os.utime(old, (past, past))
    mine = tmp_path / "not-staging"
    mine.mkdir()
    assert sweep(tmp_path) == [old.parent / f"{PREFIX}dead", old]
    assert not dead.exists() and not old.exists()
    assert live.exists() and young.exists() and mine.exists()


def test_sweep_never_touches_a_locked_directory(tmp_path: Path) -> None:
    """A directory whose lock is held is a live build's, whatever its owner record says."""
    d = fake_staging(tmp_path, "held", dead_record())
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n", str(d)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert sweep(tmp_path) == [] and (d / "root/etc/motd").exists()
    finally:
        holder.kill()
        holder.wait()
    assert sweep(tmp_path) == [d] and not d.exists()


def test_staging_dir_is_owned_and_removed_at_the_end(tmp_path: Path) -> None:
    stale = fake_staging(tmp_path, "stale", dead_record())
    with staging_dir(tmp_path) as d:
        assert not stale.exists()  # swept first
        assert d.parent == tmp_path and d.name.startswith(PREFIX)
        assert (d / OWNER).read_text() == owner_record()
        assert sweep(tmp_path) == [] and d.exists()  # locked: never swept
        (d / "root").mkdir()
    assert not d.exists()
    with pytest.raises(RuntimeError), staging_dir(tmp_path) as d:
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_build_and_remove_its_staging(tmp_path: Path,
                                                                 sig: int) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(BuildStopped) as exc, staging_dir(tmp_path):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # interrupted by the signal
    assert exc.value.exit_code == 128 + sig
    assert exc.value.message == f"build stopped by {signal.Signals(sig).name}"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(sig) == before


def test_an_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """nohup smolfs build: a hangup does not stop it."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with staging_dir(tmp_path) as d:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            assert d.exists()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


@pytest.mark.parametrize("name", ["root", "home", "tmp", "owner", "image"])
def test_an_image_may_bear_the_name_of_a_staging_entry(tmp_path: Path, name: str) -> None:
    from smolfs.image.build import build

    setsynth = pytest.importorskip("helpers.setsynth")
    rescue = setsynth.make_set(tmp_path / "rescue.tar.xz", kind="rescue")
    out = tmp_path / "out"
    out.mkdir()
    build(service="bozohttpd", image=out / name, sets=[rescue], fast_copies=False)
    assert sorted(p.name for p in out.iterdir()) == [name, f"{name}.json"]


def test_a_staging_directory_that_cannot_be_made_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    from smolfs.sets.spool import WriteError

    def full(**_: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(WriteError) as exc, staging_dir(tmp_path):
        pass
    assert exc.value.message == (f"no space left on device in {tmp_path} "
                                 "(writing a staging directory)")
