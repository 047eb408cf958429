"""Service definitions shipped with mksmolnb (package data): one directory per service,
and ``common/``, installed as ``/etc/include`` in every image. What a service holds:
``services/README.md``."""

from __future__ import annotations

from pathlib import Path


def shipped_dir() -> Path:
    """The directory holding the shipped services (works from a checkout or a wheel)."""
    return Path(__file__).resolve().parent
