"""``smolfs info``: what an image was built from (its manifest, IMAGE.json)."""

from __future__ import annotations

import argparse

DESCRIPTION = "Show the manifest 'smolfs build' wrote beside an image: service, sets, options."

EPILOG = """\
examples:
  smolfs info rescue-amd64.img          # readable summary
  smolfs info --json web.img | jq .sets # the manifest as JSON"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="an image made by 'smolfs build'")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from smolfs import manifest
    from smolfs.log import warn

    data = manifest.read(args.image)
    image = args.image.removesuffix(manifest.SUFFIX)
    if os.path.isfile(image) and os.path.getsize(image) != data.get("size"):
        warn(f"{image} is {os.path.getsize(image)} bytes but was built with {data.get('size')}: "
             "it was changed after the build", prog="smolfs")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(manifest.format_text(data))
    return 0
