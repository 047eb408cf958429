"""Progress messages on stderr: timed, nested steps, quiet when asked."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

QUIET = False
#: Set by ``--debug`` (:func:`smolfs.cli.set_debug`): log every external command.
DEBUG = bool(os.environ.get("MKSMOLNB_DEBUG"))
_depth = 0


def info(msg: str) -> None:
    if not QUIET:
        print(f"{'  ' * _depth}{msg}", file=sys.stderr, flush=True)


def warn(msg: str, prog: str = "mksmolnb") -> None:
    print(f"{prog}: warning: {msg}", file=sys.stderr, flush=True)


def debug(msg: str) -> None:
    if DEBUG:
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
