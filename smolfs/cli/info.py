"""``smolfs info``: what an image was built from (its manifest, IMAGE.json), and what
its filesystem has free, read from the image itself."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Show the manifest 'smolfs build' wrote beside an image (service, sets, options) and
the inodes and space its filesystem has free, read from the image itself (so writes
a VM made since the build are counted). An image without a manifest (from
'smolfs mkfs') shows its filesystem only."""

EPILOG = """\
examples:
  smolfs info rescue-amd64.img          # readable summary
  smolfs info --json web.img | jq .sets # the manifest as JSON
  smolfs info --json root.img | jq .filesystem.free_inodes"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="an image made by 'smolfs build' "
                        "or 'smolfs mkfs'")
    parser.add_argument("--json", action="store_true",
                        help="print the manifest as JSON, with the filesystem's totals "
                             "under \"filesystem\"")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from typing import Any

    from smolfs.errors import InputError
    from smolfs.fs.fsstat import stat_image
    from smolfs.image import manifest
    from smolfs.log import warn

    image = args.image.removesuffix(manifest.SUFFIX)
    data: dict[str, Any] | None
    try:
        data = manifest.read(args.image)
    except InputError as err:
        if not os.path.isfile(image) or "no manifest" not in err.message:
            raise
        data = None  # a filesystem without a manifest: show what the image says
    fs = stat_image(image) if os.path.isfile(image) else None
    if data is None:
        warn(f"{image}: no manifest beside it (only 'smolfs build' writes one); "
             "showing its filesystem", prog="smolfs")
        data = {}
    elif os.path.isfile(image) and os.path.getsize(image) != data.get("size"):
        warn(f"{image} is {os.path.getsize(image)} bytes but was built with {data.get('size')}: "
             "it was changed after the build", prog="smolfs")
    if args.json:
        out = dict(data)
        if fs is not None:
            out["filesystem"] = fs.as_dict()
        print(json.dumps(out, indent=2))
    else:
        lines = [manifest.format_text(data)] if data else []
        if fs is not None:
            lines.append(manifest.format_fs(fs))
        print("\n".join(lines))
    return 0
