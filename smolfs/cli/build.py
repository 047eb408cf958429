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
    from smolfs.image.options import add_arguments as declare

    declare(parser)  # every option from its one declaration (smolfs.image.options.OPTIONS)


def run(args: argparse.Namespace) -> int:
    from smolfs.image.build import build
    from smolfs.image.options import BuildOptions

    build(options=BuildOptions.from_args(args))
    return 0
