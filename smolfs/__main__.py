"""``smolfs``: build NetBSD root filesystem images without root.

Start-up time matters: this module imports argparse and nothing heavy. Each verb
lives in its own ``smolfs.cmd_<verb>`` module that declares its arguments
(``add_arguments``) and does its work (``run``), importing what it needs there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from smolfs.cli import Parser, add_common, run_main, set_debug

#: verb → (module, one-line summary). The order is the order of --help.
VERBS: dict[str, tuple[str, str]] = {
    "build": ("smolfs.cli.build", "build a bootable NetBSD root image for a service"),
    "fetch": ("smolfs.cli.fetch", "download NetBSD sets and kernels into the cache"),
    "mkfs": ("smolfs.cli.mkfs", "write an FFS or ext2 image from directories and archives"),
    "info": ("smolfs.cli.info", "show what an image was built from"),
    "pkg": ("smolfs.cli.pkg", "look up pkgsrc binary packages (search, info, deps)"),
}

EPILOG = """\
examples:
  smolfs build                      # the rescue service, sets fetched as needed
  smolfs build -s bozohttpd -i web.img
  smolfs fetch --release 10.1 base etc
  smolfs mkfs -t ffs -s 32m root.img ./tree base.tar.xz
  smolfs info rescue-amd64.img
  smolfs pkg search caddy

Run 'smolfs VERB --help' for a verb's options. Nothing here needs root."""


def top_parser() -> Parser:
    p = Parser(
        prog="smolfs",
        description="Build minimal NetBSD root filesystem images (FFS or ext2) in pure Python.",
        epilog=EPILOG,
        usage="smolfs [--debug] VERB [options]",
    )
    add_common(p)
    p.add_argument_group(
        "verbs", "\n".join(f"{name:8} {summary}" for name, (_, summary) in VERBS.items())
    )
    p.add_argument("verb", nargs="?", help="one of: " + ", ".join(VERBS))
    return p


def _main(argv: Sequence[str]) -> int | None:
    argv = list(argv)
    # Global options may come before the verb.
    pre = []
    while argv and argv[0] == "--debug":
        set_debug(True)
        pre.append(argv.pop(0))
    if not argv or argv[0] not in VERBS:
        args = top_parser().parse_args(pre + argv)
        if args.verb is None:
            top_parser().print_help()
            return 2
        top_parser().error(f"unknown verb {args.verb!r} (choose from {', '.join(VERBS)})")
    verb = argv.pop(0)
    module_name, summary = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = Parser(
        prog=f"smolfs {verb}",
        description=getattr(module, "DESCRIPTION", summary),
        epilog=getattr(module, "EPILOG", None),
    )
    add_common(parser)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return module.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("smolfs", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
