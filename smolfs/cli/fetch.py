"""``smolfs fetch``: download NetBSD sets and kernels into the cache, verified."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Download NetBSD sets (and a kernel) from a mirror into the cache, each checked
against the SHA512 list the release publishes. Files already cached are checked
again (unless unchanged since their last check: same inode, size and times) and
reused; interrupted downloads resume. Prints the path of each file.

With no SET and no --kernel, fetches the rescue set (what 'smolfs build' needs)."""

EPILOG = """\
releases:
  10.1, 9.4, ...     a release (pub/NetBSD/NetBSD-<release>/<arch>)
  current            the latest daily build of NetBSD-current (alias: HEAD)
  netbsd-10          the latest daily build of a branch (pub/NetBSD-daily/<branch>/latest)

examples:
  smolfs fetch base etc                    # NetBSD 10.1 amd64: base.tar.xz, etc.tar.xz
  smolfs fetch --release 9.4 --arch i386 --kernel GENERIC rescue
  smolfs fetch --mirror file:///srv/netbsd rescue     # a local copy of the mirror tree
  smolfs fetch --offline rescue            # only the cache, no network
  smolfs fetch --release 9.4 --list        # what the release publishes

environment:
  MKSMOLNB_MIRROR    mirror URL (default https://cdn.netbsd.org)
  MKSMOLNB_CACHE     cache directory (default $XDG_CACHE_HOME/mksmolnb or ~/.cache/mksmolnb)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sets", nargs="*", metavar="SET", help="set names (rescue, base, etc, comp, ...)"
    )
    # The default is smolfs.sets.release.DEFAULT_RELEASE (not imported here: start-up time).
    parser.add_argument(
        "--release", "-r", help="NetBSD release: 10.1 (default), 9.4, current, netbsd-10, ..."
    )
    parser.add_argument("--arch", "-a", default="amd64",
                        help="amd64, i386 or aarch64 (evbarm-aarch64) (default: amd64)")
    parser.add_argument(
        "--kernel", "-k", metavar="NAME",
        help="also fetch binary/kernel/netbsd-NAME.gz (e.g. GENERIC; on aarch64 "
        "netbsd-NAME.img.gz, e.g. GENERIC64), kept compressed; "
        "or a kernel's URL, verified against a SHA512 list or NAME.sha256 beside it",
    )
    parser.add_argument(
        "--mirror", metavar="URL", help="mirror root: https://, http://, file:// or a directory"
    )
    parser.add_argument(
        "--offline", action="store_true", help="use only the cache; never touch the network"
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="cache directory")
    parser.add_argument(
        "--list", action="store_true",
        help="list the sets and kernels the release publishes, and fetch nothing",
    )


def run(args: argparse.Namespace) -> int:
    from smolfs.sets.fetch import available, fetch
    from smolfs.sets.release import DEFAULT_RELEASE

    release = args.release or DEFAULT_RELEASE
    if args.list:
        found = available(release, args.arch, args.mirror, args.offline, args.cache_dir)
        print(f"sets:    {' '.join(found['sets'])}")
        print(f"kernels: {' '.join(found['kernels'])}")
        return 0
    sets = args.sets or ([] if args.kernel else ["rescue"])
    result = fetch(
        sets,
        release=release,
        arch=args.arch,
        kernel=args.kernel,
        mirror=args.mirror,
        offline=args.offline,
        cache_dir=args.cache_dir,
    )
    for path in result.files.values():
        print(path)
    return 0
