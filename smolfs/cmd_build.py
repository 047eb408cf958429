"""``smolfs build``: a bootable NetBSD root image for a service (the old mkimg.sh)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Build a NetBSD root filesystem image for a service, as an ordinary user.

The sets are streamed from their archives straight into the image; the service's
etc/ goes over /etc and services/common/ into /etc/include; /etc/fstab, the device
nodes a kernel needs and (for a rescue-only image) the /rescue links are added;
the service's postinst/*.sh scripts run on a staging copy, confined by bubblewrap
when available. A manifest of what went in is written beside the image as
IMAGE.json (see 'smolfs info')."""

EPILOG = """\
examples:
  smolfs build                          # rescue service, rescue set, rescue-amd64.img
  smolfs build -s base -m 512           # base + etc sets, a 512 MB image
  smolfs build -s bozohttpd -i web.img  # a web server; sets fetched when not cached
  smolfs build -x ~/sets/rescue.tgz --arch i386 --fs ext2
                                        # sets from files; an ext2 image for i386
  smolfs build --offline -x base,etc    # use only sets already in the cache
  smolfs build --services-dir ./mysvcs -s hello
                                        # your own services (see services/README.md)
  SOURCE_DATE_EPOCH=1700000000 smolfs build   # reproducible: same inputs, same bytes
  smolfs build -f                       # rebuild although nothing changed
  smolfs build -s base --pkg nginx,curl # pkgsrc packages and their dependencies

An image is kept as it is when its inputs (options, sets, service files) did not change
and it was not written to since its build: run it again, it costs a few milliseconds.

The first build that reads a set keeps a zstd copy of it in the cache ("fast/", about
1.4 times the size of an xz set); later builds read that copy, several times faster
than xz. --no-fast-copy does without; deleting the directory is always safe.

Sets not in the cache are downloaded from the NetBSD mirror ($MKSMOLNB_MIRROR or
--mirror; cache in $MKSMOLNB_CACHE or $XDG_CACHE_HOME/mksmolnb). Nothing here
needs root: no mount, no loop device, no host mkfs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--service", default="rescue", metavar="SERVICE",
                        help="service to build (default: %(default)s)")
    parser.add_argument("-m", "--megabytes", type=int, default=None, metavar="MB",
                        help="image size in MiB (default: the service's SIZE_MB, else "
                             "automatic: the content plus 10%%, and for a read-write root "
                             "at least 32 MiB and 4096 inodes free)")
    parser.add_argument("-i", "--image", default=None, metavar="IMAGE",
                        help="image file to write (default: SERVICE-ARCH.img here)")
    parser.add_argument("-x", "--sets", action="append", default=None, metavar="SETS",
                        help="sets to install: names (rescue, base, etc...) or archive "
                             "files, comma- or space-separated, repeatable (default: the "
                             "service's SETS, else rescue)")
    parser.add_argument("--fs", choices=("ffs", "ext2"), default=None,
                        help="root filesystem (default: the service's FS, else ffs)")
    parser.add_argument("--arch", choices=("amd64", "i386", "aarch64"), default="amd64",
                        help="NetBSD architecture (default: %(default)s)")
    parser.add_argument("--release", default=None, metavar="R",
                        help="NetBSD release of fetched sets (default: the newest supported)")
    ro = parser.add_mutually_exclusive_group()
    ro.add_argument("--ro", action="store_const", const=True, dest="ro", default=None,
                    help="read-only root filesystem")
    ro.add_argument("--rw", action="store_const", const=False, dest="ro",
                    help="read-write root even if the service defaults to read-only")
    parser.add_argument("--services-dir", default=None, metavar="DIR",
                        help="directory of service definitions (default: the shipped ones)")
    parser.add_argument("--mirror", default=None, metavar="URL",
                        help="NetBSD mirror for sets not in the cache (https, http, file)")
    parser.add_argument("--offline", action="store_true",
                        help="never download: use only cached sets and archive files")
    parser.add_argument("-k", "--kernel", default=None, metavar="NAME",
                        help="also fetch this kernel of the release (e.g. GENERIC) and name "
                             "it in the manifest, for startnb")
    parser.add_argument("-f", "--force", action="store_true",
                        help="rebuild even when the image is up to date; allow an image "
                             "over 64 GiB")
    parser.add_argument("--pkg", action="append", default=None, metavar="NAME[,NAME...]",
                        help="pkgsrc packages to install with their dependencies: names or "
                             "patterns ('nginx>=1.24', 'py3*-flask'), repeatable (default: "
                             "the service's PKGS)")
    parser.add_argument("--pkg-repo", default=None, metavar="URL",
                        help="package repository: https, http, file URL or a directory of "
                             ".tgz (default: the service's PKG_REPO, $MKSMOLNB_PKG_REPO, else "
                             "the official one for the release and arch)")
    parser.add_argument("--no-fast-copy", action="store_false", dest="fast_copies",
                        help="read the set archives themselves: neither use nor keep the "
                             "zstd copies of sets that make later builds faster")
    parser.add_argument("--postinst-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="time limit of each postinst script: past it the script and "
                             "every process it started are killed and the build fails "
                             "(default: the service's POSTINST_TIMEOUT, else 300; 0: none)")


def _seconds(value: str) -> float:
    from smolfs.service import seconds_value as parse

    try:
        return parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("POSTINST_TIMEOUT=", "")) from None


def run(args: argparse.Namespace) -> int:
    from smolfs.build import build

    build(
        service=args.service,
        image=args.image,
        sets=args.sets,
        size_mb=args.megabytes,
        fs=args.fs,
        arch=args.arch,
        release=args.release,
        ro=args.ro,
        services_dir=args.services_dir,
        mirror=args.mirror,
        offline=args.offline,
        kernel=args.kernel,
        force=args.force,
        fast_copies=args.fast_copies,
        postinst_timeout=args.postinst_timeout,
        pkgs=args.pkg,
        pkg_repo=args.pkg_repo,
    )
    return 0
