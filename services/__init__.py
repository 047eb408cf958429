"""Service definitions shipped with mksmolnb (package data).

A service is a directory ``<name>/`` holding ``etc/`` (copied over the image's
``/etc``; ``etc/rc`` is required), optionally ``postinst/*.sh`` (run at build
time on a staging copy of the image root) and ``service.conf`` (default sets and
size). ``common/`` is installed as ``/etc/include`` in every image.
"""

from __future__ import annotations

from pathlib import Path


def shipped_dir() -> Path:
    """The directory holding the shipped services (works from a checkout or a wheel)."""
    return Path(__file__).resolve().parent
