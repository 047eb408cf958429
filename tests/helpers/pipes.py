"""Reading what a child wrote to a pipe."""

from __future__ import annotations

import os


def read_all(fd: int) -> bytes:
    """Everything until end of file on *fd*, which is then closed."""
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out
