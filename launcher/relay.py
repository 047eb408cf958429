"""The guest's console on its way to the user (:class:`ConsoleOut`: stdout, a file or
nowhere, optionally timestamped) and what was seen of it (:class:`ConsoleSeen`: the stages
and the last lines, bounded), kept to ``sys``: the fast path relays with
them (:func:`launcher.spawned.relay_until_ready`) and :func:`launcher.boot.boot` reads
them."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


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
