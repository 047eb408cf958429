"""``startnb SERVICE``'s image, imported only for that form: :func:`build_service` first
asks :func:`smolfs.image.staleness.fresh` (the stat of the inputs the last build recorded:
no builder imported, nothing hashed); only a stale or unknown image makes it call
``smolfs.image.build.build`` with the build options ``startnb`` forwards by name and the
kernel name, which fetches what is missing and reuses the image when its inputs (sets,
service files, options, kernel) did not change.
"""

from __future__ import annotations

from pathlib import Path

from smolfs.errors import LaunchError


def build_service(service: str, image: str | None, *, kernel: str | None = "GENERIC",
                  say_fresh: bool = True, notes: list[str] | None = None,
                  **forwarded: object) -> tuple[Path, Path | None, str | None, bool]:
    """Build (or reuse) the image of ``service``: (image, kernel named by the build or
    None, the console regular expression the service declares as ready or None, whether
    its root filesystem is read-only).

    ``kernel`` is a kernel name of the release (``GENERIC``) or a URL, fetched with the
    sets; None when the caller boots a kernel file of its own. ``forwarded``: the build
    options ``startnb`` has (:data:`smolfs.image.options.OPTIONS` marked ``startnb``), by name.
    ``say_fresh``: say that an image up to date is (:func:`up_to_date_note`); ``notes``
    receives that line whether this image was up to date or not (what the next run, from a
    plan, says: :mod:`launcher.detached`), unless messages are off.
    """
    from smolfs.cli import VERSION
    from smolfs.image import staleness
    from smolfs.image.options import BuildOptions
    from smolfs.image.options import request as options_request

    options = BuildOptions(service=service, image=image, kernel=kernel, **forwarded)
    dest = image or f"{service}-{options.arch}.img"
    asked = staleness.request(options_request(options))
    manifest = staleness.fresh(dest, asked, VERSION)
    from smolfs import log

    if notes is not None and not log.QUIET:
        notes.append(up_to_date_note(dest))
    if manifest is not None:  # up to date: the builder is not even imported
        if say_fresh:
            log.info(up_to_date_note(dest))
        return _built(dest, manifest)
    try:
        from smolfs.image.build import build
    except ImportError as err:
        raise LaunchError(f"cannot build service {service!r}: smolfs.image.build is not available",
                          hint="give a kernel file and an image instead") from err
    result = build(options=options.replace(image=Path(image) if image else None))
    return _built(result.image, result.manifest if isinstance(result.manifest, dict) else {})


def up_to_date_note(image: str | Path) -> str:
    """What ``startnb SERVICE`` says of an image it found up to date."""
    return f"{image}: up to date (same inputs, not modified since)"


def _built(image: str | Path, manifest: dict[str, object]
           ) -> tuple[Path, Path | None, str | None, bool]:
    built, ready = manifest.get("kernel"), manifest.get("ready")
    return (Path(image), Path(str(built)) if built else None, str(ready) if ready else None,
            manifest.get("ro") is True)
