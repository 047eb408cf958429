"""Readiness probes over a forwarded port that only the guest can satisfy (an HTTP
status line; a TCP banner, or a connection QEMU confirms established on the guest's
side), one attempt per call, and :class:`Prober`, the thread retrying them. Why:
``launcher/README.md`` ("Ready from the network")."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable

from smolfs.errors import LaunchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from .config import Ready

#: How long one attempt waits for an answer.
ATTEMPT_TIMEOUT = 1.0
#: How long a silent TCP connection must stay open before it is confirmed.
TCP_HOLD = 0.15

_STATUS = re.compile(rb"^HTTP/\d(\.\d)? \d{3}")


def probe_http(port: int, path: str = "/", host: str = "127.0.0.1",
               timeout: float = ATTEMPT_TIMEOUT) -> int | None:
    """One GET; the HTTP status code if the server answered with a status line, else None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                      "User-Agent: startnb\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            deadline = time.monotonic() + timeout
            while b"\n" not in buf and len(buf) < 256 and time.monotonic() < deadline:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    m = _STATUS.match(buf)
    return int(buf[m.end() - 3:m.end()]) if m else None


def probe_tcp(port: int, host: str = "127.0.0.1", hold: float = TCP_HOLD,
              confirm: Callable[[], bool] | None = None,
              timeout: float = ATTEMPT_TIMEOUT) -> bool:
    """One connection: a banner → True; closed or reset → False; silent and still open
    after ``hold`` seconds → ``confirm()`` (True when no confirmation is possible)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(hold)
            try:
                data = s.recv(1)
            except TimeoutError:
                return confirm() if confirm else True
            return bool(data)
    except OSError:
        return False


_USERNET = re.compile(r"^\s*TCP\[(\w+)\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)", re.M)


def usernet_established(info: str, host_port: int, guest_port: int) -> bool:
    """Does QEMU's ``info usernet`` list a forwarded connection the guest accepted?"""
    return any(state == "ESTABLISHED" and int(hp) == host_port and int(gp) == guest_port
               for state, _ha, hp, _ga, gp in _USERNET.findall(info))


#: How long a stopped prober may take to finish its attempt (one probe's timeout).
ATTEMPT_TIMEOUT_JOIN = 2.0


class Prober:
    """Retries an HTTP or TCP probe in a thread until it succeeds or is stopped."""

    def __init__(self, ready: Ready, guest_port: int, qmp: Path | None, wake: int) -> None:
        import threading  # only port readiness needs a thread

        self.ready = ready
        self.guest_port = guest_port
        self.qmp = qmp
        self.wake = wake
        self.stop = threading.Event()
        self.at: float | None = None
        self._thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=ATTEMPT_TIMEOUT_JOIN)

    def _confirm(self) -> bool:
        from .qmp import Qmp

        if self.qmp is None:
            return True
        try:
            with Qmp(self.qmp) as q:
                return usernet_established(q.hmp("info usernet"), self.ready.port,
                                           self.guest_port)
        except (OSError, ConnectionError, LaunchError, ValueError):
            return False

    def run(self) -> None:
        while not self.stop.is_set():
            if self.ready.kind == "http":
                ok = probe_http(self.ready.port, self.ready.path) is not None
            else:
                ok = probe_tcp(self.ready.port, confirm=self._confirm)
            if ok:
                self.at = time.monotonic()
                os.write(self.wake, b"!")
                return
            self.stop.wait(0.02)
