"""The files that describe a detached VM in its state directory, each replaced atomically:
``manifest.json`` (what ``startnb ps`` shows; the keeper adds the guest's end) and ``image``
(``ro``/``rw`` and the image's path, read by the fast path). Kept to ``os`` (and ``json``
when writing): the fast path writes them too (:mod:`launcher.detached`)."""

from __future__ import annotations

import os

from smolfs.fileutil import write_atomic

MANIFEST = "manifest.json"
IMAGE = "image"


def write(vmdir: str, data: dict[str, object], *, image_file: bool = True) -> None:
    """Write ``data`` as the manifest of the VM in ``vmdir``, and its ``image`` file when
    it names an image (``image_file=False``: written already, the same)."""
    import json

    write_atomic(os.path.join(vmdir, MANIFEST),
                 (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    image = data.get("image")
    if image and image_file:
        mode = b"ro" if data.get("readonly") else b"rw"
        write_atomic(os.path.join(vmdir, IMAGE), mode + b"\n" + os.fsencode(str(image)) + b"\n")
