"""``startnb``: boot a NetBSD kernel and image under QEMU."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from smolfs.cli import Parser, add_common, run_main


def _main(argv: Sequence[str]) -> int:
    p = Parser(prog="startnb", description=__doc__)
    add_common(p)
    p.add_argument("kernel")
    p.parse_args(argv)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("startnb", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
