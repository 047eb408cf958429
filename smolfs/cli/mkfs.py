"""``smolfs mkfs``: write an FFS or ext2 image, the way NetBSD's ``makefs`` does.

Only argparse-level imports here; the work is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write an FFS (UFS1/UFS2) or ext2 filesystem image from directories and tar archives,
as an ordinary user: owners, modes and device nodes come from the sources' metadata
and an optional mtree spec, never from chown or mknod. Modelled on NetBSD's makefs:
-t, -o, -s, -M, -m, -F, -f and -b mean what they mean there."""

EPILOG = """\
sources:
  Each SOURCE is a directory or a tar archive (.tar, .tgz, .tar.xz, .tar.zst, .tar.bz2,
  recognised by content), or a pkgsrc binary package (a .tgz whose first member is
  +CONTENTS: installed as pkg_add would, with its package database entry; its
  dependencies are not fetched, name them too). Sources are merged in order: later
  entries replace earlier ones, directories merge. The spec (-F) is applied last.

options (-o, comma-separated, repeatable):
  ffs:   version=1|2 (UFS1 default), bsize=N, fsize=N, density=N (bytes per inode),
         inodes=N (at least N inodes in all),
         minfree=PCT, label=NAME, ...
  ext2:  revision=0|1, bsize=1024|2048|4096, density=N, inodes=N, label=NAME, ...
  Each writer lists its keys when given an unknown one.

examples:
  smolfs mkfs -t ffs root.img ./rootdir
  smolfs mkfs -t ffs -o version=2 -s 64m root.img base.tar.xz etc.tar.xz ./overlay
  smolfs mkfs -t ext2 -F devices.spec root.img rescue.tar.xz
  SOURCE_DATE_EPOCH=1700000000 smolfs mkfs root.img ./rootdir   # same bytes every time

inodes and free space:
  A fixed size (-s) gets inodes as newfs (ffs) or mke2fs (ext2) would give it: one per
  2 KiB below 20 MiB, 4 KiB below 1000 MiB, 8 KiB below 128 GiB (ffs); one per 8 KiB
  below 3 MiB, 4 KiB below 512 MiB, 16 KiB beyond (ext2); -o density=N wins. An
  automatic size gets the content's inodes plus free ones in proportion to the free
  space, at the same density. -f and -b ask for at least that many free inodes and
  free bytes on top of the content (N%% of the content's inodes or size with a %%).
  'smolfs info IMAGE' reads what is free from the image.

A size too small fails before anything is written and names the minimum that fits; a
size over 64 GiB (a typo such as 1t for 1g?) needs --force. Nothing is left at IMAGE
when anything fails."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--type", dest="fstype", default="ffs", metavar="TYPE",
                        help="filesystem type: ffs (default) or ext2")
    parser.add_argument("-o", "--options", action="append", default=[], metavar="KEY=VAL,...",
                        help="filesystem options, makefs style (repeatable)")
    parser.add_argument("-s", "--size", metavar="SIZE",
                        help="image size, e.g. 20m, 512k, 1g (default: content plus headroom)")
    parser.add_argument("-M", "--min-size", metavar="SIZE",
                        help="smallest automatic size (as makefs -M)")
    parser.add_argument("-m", "--max-size", metavar="SIZE",
                        help="largest automatic size; fail if the content needs more (makefs -m)")
    parser.add_argument("-f", "--free-files", metavar="N[%]",
                        help="at least N free inodes, or N%% of the content's (makefs -f)")
    parser.add_argument("-b", "--free-space", metavar="SIZE[%]",
                        help="at least SIZE free (512k, 8m; a bare number is bytes), or N%% "
                             "of the content's size (makefs -b)")
    parser.add_argument("--force", action="store_true",
                        help="write an image over 64 GiB")
    parser.add_argument("-F", "--spec", metavar="SPEC",
                        help="mtree spec setting owners, modes, device nodes (as makefs -F)")
    parser.add_argument("--headroom", type=float, default=10.0, metavar="PCT",
                        help="free space added to an automatic size, in percent (default 10)")
    parser.add_argument("--owner", metavar="UID:GID",
                        help="owner of every entry read from a directory source "
                             "(default: the host's owners, as makefs)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.add_argument("image", metavar="IMAGE", help="image file to write")
    parser.add_argument("sources", metavar="SOURCE", nargs="+",
                        help="directory or tar archive")


def parse_options(values: list[str]) -> dict[str, str]:
    """``["version=2,bsize=16384", "label=root"]`` → a dict; bare keys map to ``"1"``."""
    from smolfs.errors import UsageError

    out: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, val = item.partition("=")
            if not key:
                raise UsageError(f"invalid option {item!r}: write -o key=value")
            out[key.strip()] = val.strip() if eq else "1"
    return out


def parse_owner(text: str) -> tuple[int, int]:
    from smolfs.errors import UsageError

    uid, sep, gid = text.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise UsageError(f"invalid --owner {text!r}: write numeric UID:GID, e.g. 0:0")
    return int(uid), int(gid)


def run(args: argparse.Namespace) -> int:
    from smolfs import log
    from smolfs.fs.sizes import format_size
    from smolfs.image.mkfs import mkfs

    log.QUIET = log.QUIET or args.quiet
    result = mkfs(
        args.image,
        args.sources,
        fstype=args.fstype,
        size=args.size,
        options=parse_options(args.options),
        spec=args.spec,
        headroom=args.headroom / 100.0,
        owner=parse_owner(args.owner) if args.owner else None,
        progress=True,
        min_size=args.min_size,
        max_size=args.max_size,
        free_files=args.free_files,
        free_space=args.free_space,
        force=args.force,
    )
    print(f"{result.image}: {result.fstype}, {format_size(result.size)}, "
          f"{result.files} files, {format_size(result.data_bytes)} of data, "
          f"{format_size(result.free_bytes)} and {result.free_inodes} inodes free "
          f"({result.seconds:.2f}s)")
    return 0
