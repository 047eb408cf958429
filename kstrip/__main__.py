"""``kstrip``: disable the drivers a VM does not need in a NetBSD kernel."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from smolfs.cli import Parser, add_common, run_main

DESCRIPTION = """\
Disable, in a NetBSD kernel file, every driver a QEMU VM does not need, so that the
kernel does not spend boot time probing hardware that is not there. The kernel's
autoconfiguration table (cfdata) is patched the way NetBSD's own userconf 'disable'
does it. The input (plain or gzip-compressed, i386, amd64 or aarch64, NetBSD 9 and 10
layouts) is never changed; the output is an uncompressed kernel.

An arm64 Image (aarch64's bootable netbsd-GENERIC64.img) has no symbol table: give its
ELF with --symbols. The driver table is found in the ELF and patched in the image at the
same virtual addresses (the image holds each loaded byte at its load address minus the
lowest one); the image's bytes there must equal the ELF's. The output is the patched
image, bootable as the original.
"""

EPILOG = """\
default keep list: {keep}
default keep list for aarch64 kernels (QEMU -M virt): {virt}

examples:
  kstrip netbsd-GENERIC.gz                 # writes netbsd-GENERIC.stripped
  kstrip netbsd-GENERIC.gz -o netbsd-vm    # choose the output
  kstrip --list netbsd-GENERIC.gz          # every entry and what would happen to it
  kstrip --add vio9p netbsd-GENERIC        # the default list plus one driver
  kstrip --keep mainbus,cpu,pci,virtio,ld,com,isa,pcib,pchb,ioapic netbsd-GENERIC
  kstrip --disable vioif netbsd-GENERIC    # the default list without networking
  kstrip --symbols netbsd-GENERIC64.gz netbsd-GENERIC64.img.gz   # aarch64 Image
"""


def _parser() -> Parser:
    from kstrip.defaults import DEFAULT_KEEP, VIRT_KEEP

    p = Parser(prog="kstrip", description=DESCRIPTION,
               epilog=EPILOG.format(keep=" ".join(DEFAULT_KEEP), virt=" ".join(VIRT_KEEP)))
    add_common(p)
    p.add_argument("kernel", metavar="KERNEL",
                   help="NetBSD kernel (ELF or arm64 Image, may be .gz)")
    p.add_argument("--symbols", metavar="ELF",
                   help="for an arm64 Image KERNEL: the ELF of the same kernel, whose "
                        "symbols locate the driver table")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="where to write the stripped kernel (default: KERNEL.stripped, "
                        "without a .gz suffix)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--keep", metavar="A,B,C", action="append",
                       help="drivers to keep, replacing the default list (repeatable)")
    group.add_argument("--keep-file", metavar="FILE",
                       help="read the keep list from FILE (names separated by spaces, "
                            "commas or lines; '#' starts a comment)")
    p.add_argument("--add", metavar="A,B", action="append", default=[],
                   help="keep these drivers too (on top of the default or --keep list)")
    p.add_argument("--disable", metavar="A,B", action="append", default=[],
                   help="disable these drivers even if the keep list has them")
    p.add_argument("--layout", type=int, choices=(9, 10),
                   help="table layout, overriding the kernel's version string: 9 for "
                        "NetBSD 9 and older, 10 for NetBSD 10 and newer")
    p.add_argument("--list", action="store_true",
                   help="print every entry and what kstrip would do; write nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="decide and report, write nothing")
    return p


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)

    import json

    from kstrip.api import parse_names, strip
    from kstrip.report import format_table
    from smolfs.errors import InputError
    from smolfs.log import warn

    keep: list[str] | None = None
    if args.keep is not None:
        keep = [n for item in args.keep for n in parse_names(item)]
    elif args.keep_file:
        try:
            with open(args.keep_file, encoding="utf-8") as f:
                keep = parse_names(f.read())
        except OSError as err:
            raise InputError(f"{args.keep_file}: cannot read keep file: "
                             f"{err.strerror or err}") from None
    add = [n for item in args.add for n in parse_names(item)]
    disable = [n for item in args.disable for n in parse_names(item)]

    result = strip(args.kernel, out=args.output, keep=keep, disable=disable,
                   dry_run=args.dry_run or args.list, layout=args.layout, add=add,
                   symbols=args.symbols)
    for w in result.warnings:
        warn(w, prog="kstrip")
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    if args.list:
        print(format_table(result))
        return 0
    print(f"kstrip: {result.kernel}: {result.summary()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("kstrip", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
