"""A build's working directory beside its image: ``.smolfs-staging-XXXXXXXX``.

Held with a ``flock`` and an owner record while its build lives, removed by the build
however it ends but SIGKILL; :func:`sweep` removes what a killed build left, never a
live build's directory (the rules: ``smolfs/image/README.md``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from smolfs.errors import SmolError
from smolfs.log import debug

PREFIX = ".smolfs-staging-"
OWNER = "owner"
#: A directory without an owner record younger than this may be one a build is making.
YOUNG_SECONDS = 60.0


class BuildStopped(SmolError):
    """The build got SIGTERM or SIGHUP; its staging directory was removed."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"build stopped by {name}",
                         hint="nothing half-written was left: the destination holds the "
                              "old image (or none), or the complete new one")
        self.exit_code = 128 + signum


def start_time(pid: int) -> str | None:
    """When process *pid* started (clock ticks since boot, Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def owner_record(pid: int | None = None) -> str:
    """``PID START HOST`` for *pid* (default: this process); START is ``-`` when unknown."""
    pid = os.getpid() if pid is None else pid
    return f"{pid} {start_time(pid) or '-'} {socket.gethostname()}\n"


def owner_alive(record: str) -> bool:
    """Whether the process an owner record names may still run (another host's: yes)."""
    try:
        pid_s, start, host = record.split()
        pid = int(pid_s)
    except ValueError:
        return False  # unreadable: no build writes that
    if host != socket.gethostname():
        return True  # a build on another machine sharing this directory: cannot tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    return start == "-" or start_time(pid) in (start, None)


def sweep(parent: Path) -> list[Path]:
    """Remove the stale staging directories in *parent* (see ``smolfs/image/README.md``);
    which."""
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(parent) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in sorted(names):
        path = parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone, not a directory, or not ours to read
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live build holds it
            if _stale(path, os.fstat(fd).st_mtime):
                debug(f"removing {path}, left by a build that is gone")
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _stale(path: Path, mtime: float) -> bool:
    try:
        record = (path / OWNER).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return time.time() - mtime > YOUNG_SECONDS
    except OSError:
        return False
    return not owner_alive(record)


@contextlib.contextmanager
def staging_dir(parent: Path) -> Iterator[Path]:
    """A new owned staging directory in *parent*, after sweeping stale ones; removed at
    the end, whatever the end. Inside, SIGTERM and SIGHUP (unless ignored) raise
    :class:`BuildStopped`, so that the removal happens for them too."""
    from smolfs.sets.spool import write_error

    sweep(parent)
    try:
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    except OSError as err:
        raise write_error(err, "a staging directory", parent) from err
    fd = -1
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # a filesystem without locks: nobody can sweep it then
            debug(f"cannot lock {path} ({err.strerror}): it will not be swept if left")
        tmp = path / f".{OWNER}.tmp"
        tmp.write_text(owner_record(), encoding="utf-8")
        os.replace(tmp, path / OWNER)
    except OSError as err:
        shutil.rmtree(path, ignore_errors=True)
        if fd >= 0:
            os.close(fd)
        raise write_error(err, "a staging directory", parent) from err
    try:
        with _stop_on_signals():
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`BuildStopped` (main thread only; a signal the
    caller ignores, e.g. SIGHUP under nohup, stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict[int, object] = {}

    def stop(signum: int, _frame: object) -> None:
        raise BuildStopped(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            saved[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
