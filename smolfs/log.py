"""Progress messages on stderr: timed, nested steps, quiet when asked."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

QUIET = False
_depth = 0


def info(msg: str) -> None:
    if not QUIET:
        print(f"{'  ' * _depth}{msg}", file=sys.stderr, flush=True)


def warn(msg: str, prog: str = "mksmolnb") -> None:
    print(f"{prog}: warning: {msg}", file=sys.stderr, flush=True)


def debug(msg: str) -> None:
    from smolfs import cli

    if cli.DEBUG:
        print(f"{'  ' * _depth}{msg}", file=sys.stderr, flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    """``with step("write image"):`` prints the title, then its duration when done."""
    global _depth
    info(f"‣ {title}")
    start = time.monotonic()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    info(f"  {title}: {time.monotonic() - start:.2f}s")
