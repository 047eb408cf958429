"""Readiness probes against real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers.ports import free_port

from launcher.ready import probe_http, probe_tcp, usernet_established


@contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A listening socket on 127.0.0.1; each accepted connection goes to ``handle``."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                handle(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield port
    finally:
        stop.set()
        t.join()
        srv.close()



@contextmanager
def http_server(status: int) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(self.path.encode())

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def close_at_once(conn: socket.socket) -> None:
    """What QEMU's user network does when the guest refuses: accept, then close."""


def silent(conn: socket.socket) -> None:
    """What QEMU's user network does when the guest does not answer: hold, say nothing."""
    conn.recv(1024)
    threading.Event().wait(0.5)


def banner(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.0\r\n")


def test_http_probe() -> None:
    with http_server(200) as port:
        assert probe_http(port, "/health") == 200
    with http_server(503) as port:
        assert probe_http(port) == 503  # a guest answered: it is up, even if unhappy
    with tcp_server(close_at_once) as port:
        assert probe_http(port) is None
    with tcp_server(silent) as port:
        assert probe_http(port, timeout=0.2) is None
    with tcp_server(banner) as port:
        assert probe_http(port) is None  # not an HTTP status line
    assert probe_http(free_port()) is None


def test_tcp_probe() -> None:
    with tcp_server(banner) as port:
        assert probe_tcp(port, confirm=lambda: False)  # a banner needs no confirmation
    with tcp_server(close_at_once) as port:
        assert not probe_tcp(port)
    assert not probe_tcp(free_port())
    with tcp_server(silent) as port:
        assert probe_tcp(port, hold=0.1)  # no way to confirm: open means up
        assert not probe_tcp(port, hold=0.1, confirm=lambda: False)
        assert probe_tcp(port, hold=0.1, confirm=lambda: True)


USERNET = """Hub -1 (n0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[SYN_SENT]      13       127.0.0.1 18080       10.0.2.15    80     0     0
  TCP[HOST_FORWARD]   8       127.0.0.1 18080       10.0.2.15    80     0     0
  TCP[ESTABLISHED]   14       127.0.0.1  2222       10.0.2.15    22     0     0
"""


def test_usernet_parsing() -> None:
    assert not usernet_established(USERNET, 18080, 80)  # SYN sent: the guest never answered
    assert usernet_established(USERNET, 2222, 22)
    assert not usernet_established(USERNET, 2222, 23)


def test_http_readiness_is_seen_as_soon_as_the_guest_answers() -> None:
    """QEMU holds a connection silently while the guest's network is not up: connections
    made before the server answers are held without a word (up to the attempt's 1 s),
    later ones answered. The prober sees the answer within a few attempts' interval, not
    after the held attempt's timeout."""
    import time

    from launcher.ready import first_http_answer

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    up_at = time.monotonic() + 0.3
    held: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        srv.settimeout(0.01)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            if time.monotonic() < up_at:
                held.append(conn)  # the network not up yet: say nothing
                continue
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        at = first_http_answer(port, "/", lambda: time.monotonic() > up_at + 5)
    finally:
        done.set()
        t.join()
        for conn in held:
            conn.close()
        srv.close()
    assert at is not None and held
    assert up_at <= at < up_at + 0.15, at - up_at


def test_http_readiness_gives_up_when_stopped_and_ignores_other_answers() -> None:
    import time

    from launcher.ready import first_http_answer

    for handler in (banner, close_at_once, silent):
        with tcp_server(handler) as port:
            end = time.monotonic() + 0.3
            assert first_http_answer(port, "/", lambda e=end: time.monotonic() > e) is None
    end = time.monotonic() + 0.1
    assert first_http_answer(free_port(), "/", lambda: time.monotonic() > end) is None
