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

    from smolfs import manifest

    data = manifest.read(args.image)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(manifest.format_text(data))
    return 0
