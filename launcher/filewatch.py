"""Being woken when a file is written to: :func:`watch`, a descriptor that becomes
readable when someone writes to a file (Linux inotify, through
:func:`smolfs.spawn.libc`), so that whoever waits for a console line in a file wakes
when it is written instead of polling. Kept to ``os``, ``sys`` and
:mod:`smolfs.spawn`: the keeper of a detached VM uses it while a guest boots.
"""

from __future__ import annotations

import os
import sys

from smolfs.spawn import libc

#: inotify's event for a write to the watched file.
IN_MODIFY = 0x2


def watch(path: str) -> int | None:
    """A non-blocking descriptor that becomes readable when ``path`` is written to (read
    it empty with :func:`drain`, close it when done); None where that cannot be had
    (not Linux, no inotify, too many watches): poll then."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # IN_NONBLOCK and IN_CLOEXEC are O_NONBLOCK and O_CLOEXEC, by definition.
        fd = libc("inotify_init1", os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        added = libc("inotify_add_watch", fd, os.fsencode(path), IN_MODIFY)
    except (ImportError, AttributeError, OSError):
        return None
    if added < 0:
        os.close(fd)
        return None
    return fd


def drain(fd: int) -> None:
    """Read what :func:`watch`'s descriptor has to say (it is readable again only once
    the file is written to again)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
