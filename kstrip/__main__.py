"""``kstrip``: disable the drivers a VM does not need in a NetBSD kernel."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from smolfs.cli import Parser, add_common, run_main


def _main(argv: Sequence[str]) -> int:
    p = Parser(prog="kstrip", description=__doc__)
    add_common(p)
    p.add_argument("kernel")
    p.parse_args(argv)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("kstrip", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
