"""Free host ports on 127.0.0.1 for the tests' port forwards and probes."""

from __future__ import annotations

import contextlib
import socket


def free_ports(n: int) -> list[int]:
    """*n* distinct ports nobody listens on (each socket is held until all are chosen:
    a port freed and asked for again may come back)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    """A port nobody listens on (connections to it are refused)."""
    return free_ports(1)[0]
