"""The end of a detached guest, seen on its serial log once startnb has returned.

NetBSD on a machine without ACPI cannot power QEMU off: ``halt -p`` prints ``The operating
system has halted.`` and QEMU runs on, forever, as does a guest whose kernel panicked into
its debugger. :func:`watch` forks a small watcher (its own session, no terminal) when a
detached VM is ready: it follows the serial log from its start, and on such a line
(:func:`launcher.detect.guest_end`) stops QEMU (SIGTERM, then SIGKILL) and records
``guest_end`` in the VM's manifest; ``startnb ps`` then forgets the VM. It exits as soon
as QEMU is gone, however that happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .detect import guest_end
from .fastpath import is_qemu

#: How often the watcher looks at the log and at QEMU.
POLL = 0.1
#: A panicking guest may print its trap and debugger lines this long before QEMU stops.
PANIC_GRACE = 1.0


def watch(pid: int, serial_log: Path, manifest: Path) -> int:
    """Fork the watcher of QEMU ``pid``; its pid."""
    child = os.fork()
    if child:
        return child
    try:  # the watcher: never returns to the caller's code
        os.setsid()
        os.chdir("/")  # holds no directory of the caller's
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _close_others()  # the caller waits for its pipes' end of file: none kept open
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        end = follow(pid, serial_log)
        if end is not None:
            stop(pid, end, manifest)
    finally:
        os._exit(0)


def _close_others() -> None:
    """Close every descriptor but 0, 1 and 2."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the descriptors a process usually has
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def follow(pid: int, serial_log: Path) -> tuple[str, str] | None:
    """Read the log while QEMU ``pid`` lives; the first end line seen as ``(kind, line)``,
    or None once QEMU is gone."""
    import select

    position = 0
    partial = b""
    try:  # readable the moment QEMU exits: the watcher does not outlive it by a poll
        exited: list[int] = [os.pidfd_open(pid)]
    except (AttributeError, OSError):
        exited = []
    while is_qemu(pid):
        try:
            with open(serial_log, "rb") as f:
                f.seek(position)
                data = f.read()
        except OSError:
            data = b""
        position += len(data)
        *lines, partial = (partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip("\r")
            kind = guest_end(line)
            if kind is not None:
                return kind, line
        if not data:
            select.select(exited, [], [], POLL)
    return None


def stop(pid: int, end: tuple[str, str], manifest: Path) -> None:
    """Stop QEMU ``pid`` after the guest's end, and say why in its manifest."""
    if end[0] == "panic":
        time.sleep(PANIC_GRACE)  # the trap and the debugger's prompt, for 'startnb logs'
    _record(manifest, end)
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        if not is_qemu(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and is_qemu(pid):
            time.sleep(0.02)


def _record(manifest: Path, end: tuple[str, str]) -> None:
    import json

    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return
    data["guest_end"] = {"kind": end[0], "line": end[1]}
    tmp = manifest.with_suffix(".watch.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(manifest)
