"""Readiness probes over a forwarded port that only the guest can satisfy (an HTTP
status line; a TCP banner, or a connection QEMU confirms established on the guest's
side), one attempt per call, and :class:`Prober`, the thread retrying them. Why:
``launcher/README.md`` ("Ready from the network")."""

from __future__ import annotations

import errno
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


def _get(path: str, host: str, port: int) -> bytes:
    return (f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
            "User-Agent: startnb\r\nConnection: close\r\n\r\n").encode()


def probe_http(port: int, path: str = "/", host: str = "127.0.0.1",
               timeout: float = ATTEMPT_TIMEOUT) -> int | None:
    """One GET; the HTTP status code if the server answered with a status line, else None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(_get(path, host, port))
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
#: Time between two attempts of a probe.
PROBE_INTERVAL = 0.02
#: HTTP attempts waiting for an answer at once, at most.
MAX_HTTP_ATTEMPTS = 64


def first_http_answer(port: int, path: str, stop: Callable[[], bool],
                      host: str = "127.0.0.1", interval: float = PROBE_INTERVAL,
                      timeout: float = ATTEMPT_TIMEOUT) -> float | None:
    """GET ``path`` every ``interval`` seconds, each attempt waiting up to ``timeout`` for
    a status line while the next ones start (QEMU holds a connection silently while the
    guest's network is not up yet: one attempt at a time would wait that out, and see a
    server that answers meanwhile up to ``timeout`` late). The time of the first status
    line (``time.monotonic``), or None once ``stop()`` says so."""
    import selectors

    request = _get(path, host, port)
    sel = selectors.DefaultSelector()
    waiting: dict[socket.socket, tuple[float, bytearray]] = {}  # deadline, what came back

    def drop(s: socket.socket) -> None:
        sel.unregister(s)
        del waiting[s]
        s.close()

    next_attempt = time.monotonic()
    try:
        while not stop():
            now = time.monotonic()
            if now >= next_attempt and len(waiting) < MAX_HTTP_ATTEMPTS:
                next_attempt = now + interval
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                if s.connect_ex((host, port)) in (0, errno.EINPROGRESS):
                    waiting[s] = (now + timeout, bytearray())
                    sel.register(s, selectors.EVENT_WRITE)
                else:
                    s.close()
            for s in [s for s, (deadline, _) in waiting.items() if deadline <= now]:
                drop(s)
            wake = min([next_attempt, *(d for d, _ in waiting.values())])
            for key, events in sel.select(max(0.0, min(wake - time.monotonic(), interval))):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    if events & selectors.EVENT_WRITE:  # connected, or refused
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            drop(s)
                        else:
                            s.send(request)  # a few dozen bytes: one send
                            sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(256)
                except OSError:
                    drop(s)
                    continue
                got = waiting[s][1]
                got += data
                if not data or b"\n" in got or len(got) >= 256:
                    if _STATUS.match(bytes(got)):
                        return time.monotonic()
                    drop(s)
        return None
    finally:
        for s in list(waiting):
            s.close()
        sel.close()


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
        if self.ready.kind == "http":
            at = first_http_answer(self.ready.port, self.ready.path, self.stop.is_set)
            if at is not None:
                self.at = at
                os.write(self.wake, b"!")
            return
        while not self.stop.is_set():
            if probe_tcp(self.ready.port, confirm=self._confirm):
                self.at = time.monotonic()
                os.write(self.wake, b"!")
                return
            self.stop.wait(PROBE_INTERVAL)
