"""Helpers shared by the three command-line entry points.

Kept tiny on purpose: an entry point imports this module and argparse only, then
imports whatever its verb needs inside the verb's handler.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from smolfs import __version__ as VERSION
from smolfs import log
from smolfs.errors import SmolError, UsageError

#: Set by ``--debug`` (mirrors :data:`smolfs.log.DEBUG`): tracebacks on errors.
DEBUG = log.DEBUG


class Parser(argparse.ArgumentParser):
    """argparse with our error format: ``prog: error: msg`` and exit 2."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, hint=f"run '{self.prog} --help' for usage")


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--version`` and ``--debug``, shared by every command."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and log every external command",
    )


def set_debug(on: bool) -> None:
    global DEBUG
    DEBUG = log.DEBUG = DEBUG or on


def print_error(prog: str, err: SmolError) -> None:
    print(f"{prog}: error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"{prog}: hint: {err.hint}", file=sys.stderr)


def run_main(
    prog: str, body: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None
) -> int:
    """Run ``body(argv)`` and turn errors into a message and an exit code."""
    if argv is None:
        argv = sys.argv[1:]
    if "--debug" in argv:
        set_debug(True)
    try:
        rc = body(argv)
        return int(rc or 0)
    except SmolError as err:
        if DEBUG:
            import traceback

            traceback.print_exc()
        print_error(prog, err)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into a command that stopped reading (e.g. `| head`).
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 1
