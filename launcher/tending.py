"""The keeper's watch over a ready detached VM (:func:`tend`): it follows the console,
stops QEMU when the guest halts or panics, and reaps it. Imported by the keeper once
``startnb`` has detached, never before QEMU starts.
"""

from __future__ import annotations

import os
import time

from .proc import stop_child

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

#: How often the keeper of a detached VM reads new bytes of its serial log: at most (a
#: console that writes on is read this far apart), and where it cannot be told of writes.
POLL = 0.1
#: Told of writes and of QEMU's end, the keeper still looks this often (seconds).
IDLE = 10.0
#: A panicking guest may print its trap and debugger lines this long before QEMU stops.
PANIC_GRACE = 1.0
#: How long QEMU may take to end on SIGTERM after the guest's end, before SIGKILL.
END_GRACE = 2.0


def _child_waiter() -> Callable[[float], object]:
    """A sleep of up to the given seconds that ends the moment a child of this process
    ends: SIGCHLD blocked and waited for (no handler, no descriptor). Where there is no
    ``sigtimedwait`` (macOS), a plain sleep."""
    import _signal

    timed = getattr(_signal, "sigtimedwait", None)
    if timed is None:
        return time.sleep
    chld = {_signal.SIGCHLD}
    _signal.pthread_sigmask(_signal.SIG_BLOCK, chld)  # pending until taken: none missed
    return lambda seconds: timed(chld, seconds)


def _tend_waiter(pid: int, directory: str) -> Callable[[float | None], object] | None:
    """A wait for a detached VM's keeper that ends when QEMU ``pid`` ends (its pidfd), when
    a file of ``directory`` (the console) is written to (:func:`launcher.filewatch.watch`)
    or after the given seconds (None: :data:`IDLE`); a write is waited for no sooner than
    :data:`POLL` seconds after the last one woke it, so that an idle VM's keeper sleeps
    and a chatty console's wakes it 10 times a second. None without pidfd or inotify
    (not Linux, Linux < 5.3): then :func:`_child_waiter`. Its descriptors end with the
    keeper."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    from .filewatch import drain, watch

    try:
        pidfd = pidfd_open(pid)
    except OSError:
        return None
    watched = watch(directory)
    if watched is None:
        os.close(pidfd)
        return None
    import select

    last = [0.0]  # when a write last woke it

    def wait(seconds: float | None) -> None:
        now = time.monotonic()
        limit = now + (IDLE if seconds is None else seconds)
        calm = min(last[0] + POLL, limit)  # until then, QEMU's end only
        if now < calm and select.select([pidfd], [], [], calm - now)[0]:
            return
        woke = select.select([pidfd, watched], [], [], max(0.0, limit - time.monotonic()))[0]
        if watched in woke:
            drain(watched)
            last[0] = time.monotonic()

    return wait


def _record_end(manifest: str | None, end: tuple[str, str]) -> None:
    """Add ``guest_end`` (``{"kind": ..., "line": ...}``) to the VM's manifest (temp file
    + rename); the state directory may be gone already (``startnb stop``)."""
    if manifest is None:
        return
    import json

    try:
        with open(manifest, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    data["guest_end"] = {"kind": end[0], "line": end[1]}
    tmp = f"{manifest}.end.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, manifest)
    except OSError:
        pass


def tend(pid: int, serial_log: str | None, manifest: str | None) -> int | None:
    """The keeper's work once the VM is ready: reap QEMU ``pid``; meanwhile, with a
    ``serial_log``, read its new bytes when it is written to, at most every :data:`POLL`
    seconds (and at once when QEMU ends; see :func:`_tend_waiter`) and, on a line
    saying the guest ended (:func:`launcher.stagescan.scan_end`:
    halted, or a panic, given :data:`PANIC_GRACE` seconds to print its trap and reach
    the debugger's prompt), record ``guest_end`` in ``manifest`` and stop QEMU (SIGTERM,
    then SIGKILL). QEMU's exit status (None if it cannot be known)."""
    if serial_log is None:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    import re

    from .stagescan import DEBUGGER_PROMPT, scan_end

    wait = _tend_waiter(pid, os.path.dirname(serial_log) or ".")
    if wait is None:
        sleep = _child_waiter()
        wait = lambda seconds: sleep(POLL if seconds is None else seconds)  # noqa: E731
    log = -1
    partial = tail = b""
    end: tuple[str, str] | None = None
    deadline = 0.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if end is not None:  # a panic that ended QEMU itself (a reset, -no-reboot)
                _record_end(manifest, end)
            return os.waitstatus_to_exitcode(status)
        if log < 0:  # kept open: 'startnb stop' may remove the state directory
            try:  # noqa: SIM105 (contextlib costs milliseconds)
                log = os.open(serial_log, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        data = os.read(log, 65536) if log >= 0 else b""
        if end is None:
            partial, end = scan_end(partial, data)
            tail = partial
            deadline = time.monotonic() + PANIC_GRACE
        else:
            tail = (tail + data)[-256:]
        left = deadline - time.monotonic()
        if end is not None and (end[0] == "halted" or left <= 0 or re.search(
                DEBUGGER_PROMPT, tail.decode("utf-8", "replace").rstrip("\r\n"))):
            _record_end(manifest, end)  # first: once QEMU is gone, 'ps' forgets the VM
            return stop_child(pid, END_GRACE)
        if len(data) < 65536:
            wait(None if end is None else max(0.0, min(POLL, left)))
