"""Run one command so that nothing it starts outlives it, or outlives the caller.

Started by :func:`smolfs.run.run` (``contain=True``), never by hand:
``python -I -S guard.py FD COMMAND [ARG...]``. Standard library only, no smolfs import:
it starts once per postinst script. How it kills what the command left (a subreaper, a
pipe from the caller): ``smolfs/README.md``."""

import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: How long the guard keeps killing and reaping before it gives up on stragglers.
TEARDOWN_SECONDS = 10.0


def _prctl() -> object | None:
    """libc's prctl on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _exec_child(argv: list[str], guard: int, watch: int, prctl: object | None) -> None:
    """In the forked child: die with the guard, own process group, exec *argv*."""
    try:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # type: ignore[operator]
        if os.getppid() != guard:  # the guard died before prctl took effect
            os._exit(137)
        os.setpgid(0, 0)
        os.close(watch)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; exec keeps that
            signal.signal(sig, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except OSError as err:
        os.write(2, f"{argv[0]}: {err.strerror}\n".encode())
        os._exit(127)
    except BaseException:
        os._exit(127)


def _leftovers(me: int, group: int) -> list[int]:
    """Live processes that are the guard's children or in the command's process group."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
        if state not in (b"Z", b"X") and (ppid == me or pgrp == group):
            found.append(int(entry))
    return found


def _reap() -> list[tuple[int, int]]:
    """Collect every child that has ended: [(pid, status)]."""
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        done.append((pid, status))
    return done


def _teardown(group: int, me: int, linux_proc: bool) -> None:
    """SIGKILL the command's process group and everything re-parented to the guard,
    until nothing is left (or :data:`TEARDOWN_SECONDS` passed)."""
    deadline = time.monotonic() + TEARDOWN_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if not linux_proc:
                _reap()
                return  # elsewhere: done once the group is empty
        left = _leftovers(me, group) if linux_proc else []
        for pid in left:
            try:  # noqa: SIM105 (contextlib costs milliseconds to import)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _reap()
        if linux_proc and not left:
            return
        time.sleep(0.005)


def _status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[1].isdigit():
        print("usage: guard.py FD COMMAND [ARG...]", file=sys.stderr)
        return 2
    watch, command = int(argv[1]), argv[2:]
    me = os.getpid()
    prctl = _prctl()
    linux_proc = False
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # type: ignore[operator]
        linux_proc = prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0  # type: ignore[operator]
        linux_proc = linux_proc and os.path.isdir("/proc/self")

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)

    child = os.fork()
    if child == 0:
        _exec_child(command, me, watch, prctl)
    try:  # noqa: SIM105
        os.setpgid(child, child)
    except OSError:
        pass  # the child did it first, or already exec'd
    status: int | None = None
    while status is None and not stop:
        for pid, st in _reap():
            if pid == child:
                status = st
        if status is not None or stop:
            break
        try:
            ready, _, _ = select.select([watch, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 512)
        if watch in ready and not os.read(watch, 512):
            break  # the caller closed its end (or died)
    _teardown(child, me, linux_proc)
    if status is None:
        return 137
    return _status(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
