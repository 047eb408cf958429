"""The guest's console on its way to the user (:class:`ConsoleOut`: stdout, a file or
nowhere, optionally timestamped), and :func:`relay_until_ready`, all that runs of the
launcher between a fast-path QEMU's exec and its ready line (``os``, ``select``, ``re``):
the stages and the last lines it saw (:class:`ConsoleSeen`, bounded) go to
:func:`launcher.boot.boot`."""

from __future__ import annotations

import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from .fastpath import Spawned


class ConsoleOut:
    """Where console bytes go: ``stdio``, ``file`` (``path``) or ``none``."""

    def __init__(self, kind: str, path: str | None, timestamps: bool,
                 exec_time: float) -> None:
        self.out: BinaryIO | None = None
        self.own = False
        if kind == "stdio":
            self.out = sys.stdout.buffer
        elif kind == "file" and path is not None:
            self.out = open(path, "wb")  # noqa: SIM115
            self.own = True
        self.timestamps = timestamps
        self.exec_time = exec_time
        self._at_line_start = True

    def write(self, t: float, data: bytes) -> None:
        if self.out is None:
            return
        if self.timestamps:
            stamp = f"[{t - self.exec_time:8.3f}] ".encode()
            parts = data.split(b"\n")
            chunks = []
            for i, part in enumerate(parts):
                if self._at_line_start and (part or i < len(parts) - 1):
                    chunks.append(stamp)
                    self._at_line_start = False
                chunks.append(part)
                if i < len(parts) - 1:
                    chunks.append(b"\n")
                    self._at_line_start = True
            data = b"".join(chunks)
        self.out.write(data)
        self.out.flush()

    def close(self) -> None:
        if self.own and self.out is not None:
            self.out.close()


def console_line(raw: bytes) -> str:
    """A console line as the stage detector and the ready pattern see it."""
    return raw.decode("utf-8", "replace").strip("\r")


#: Console lines kept for error messages (a timeout shows the last ones).
TAIL_LINES = 15


class ConsoleSeen:
    """What the relay saw of the console, in bounded memory however long the guest talks:
    the stage times (:class:`launcher.stagescan.StageDetector`), the last :data:`TAIL_LINES`
    complete lines and the unfinished one."""

    def __init__(self) -> None:
        from collections import deque  # loaded with re already

        from .stagescan import StageDetector

        self.detector = StageDetector()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.partial = b""

    def feed(self, t: float, data: bytes) -> list[str]:
        """Detect stages in a chunk that arrived at ``t``; its complete lines."""
        self.detector.feed_bytes(t)
        *raw, self.partial = (self.partial + data).split(b"\n")
        lines = [console_line(line) for line in raw]
        for line in lines:
            self.detector.feed_line(t, line)
        self.tail.extend(lines)
        return lines


def relay_until_ready(spawned: Spawned, relay: dict[str, object],
                      command_start: float) -> None:
    """Relay the console of ``spawned`` until its ready line, QEMU's exit, the guest's end
    (a panic or a halt: ``spawned.seen.detector.end``), or the timeout.

    ``relay``: ``console`` (kind), ``path``, ``timestamps``, ``pattern`` (the ready regex),
    ``timeout`` (seconds from ``command_start``, or None). Fills ``spawned.console``,
    ``.seen`` (stages and last lines, see :class:`ConsoleSeen`), ``.stderr_data`` and
    ``.ready_at``.
    """
    import re

    path = relay["path"]
    out = ConsoleOut(str(relay["console"]), path if isinstance(path, str) else None,
                     bool(relay["timestamps"]), spawned.exec_time)
    spawned.console = out
    seen = spawned.seen = ConsoleSeen()
    ready = re.compile(str(relay["pattern"]))
    timeout = relay["timeout"]
    deadline = command_start + timeout if isinstance(timeout, (int, float)) else None
    fds = [spawned.stdout, spawned.stderr]
    while fds:
        wait = 0.5
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return
        for fd in select.select(fds, [], [], wait)[0]:
            data = os.read(fd, 65536)
            t = time.monotonic()
            if fd == spawned.stderr:
                if data:
                    spawned.stderr_data = (spawned.stderr_data + data)[-8192:]
                else:
                    fds.remove(fd)
                continue
            if not data:
                return  # QEMU closed its console: it is exiting
            out.write(t, data)
            if any(ready.search(line) for line in seen.feed(t, data)):
                spawned.ready_at = t
                return
            if seen.detector.end is not None:
                return  # a panic, or a halt: launcher.boot reacts
