"""``smolfs build`` with observable phases, for the kill tests (run as a script).

Prints ``CHAOS-PHASE NAME`` on stderr when the build reaches each phase, and at the
phase named by ``$CHAOS_PAUSE_AT`` sleeps (an hour) so that a test can deliver a
signal there. Phases: ``stream`` (after the first file of the first set went to the
spool), ``write`` (the image's blocks written, not yet renamed into place by the
writer), ``rename`` (the complete image about to replace the destination),
``renamed`` (just after, the manifest not written yet). The build itself is the
product's, unchanged: only these functions are wrapped.
"""

from __future__ import annotations

import os
import sys
import time

PAUSE = os.environ.get("CHAOS_PAUSE_AT", "")
IMAGE = os.path.abspath(os.environ["CHAOS_IMAGE"])
_seen: set[str] = set()


def phase(name: str) -> None:
    if name in _seen:
        return
    _seen.add(name)
    print(f"CHAOS-PHASE {name}", file=sys.stderr, flush=True)
    if name == PAUSE:
        time.sleep(3600)


def install() -> None:
    from smolfs.image import mkfs
    from smolfs.sets import spool as sources

    append = sources.Spool.append

    def spool_append(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = append(self, *args, **kwargs)
        phase("stream")
        return start

    sources.Spool.append = spool_append  # type: ignore[method-assign]

    writer = mkfs.writer

    def chaos_writer(fstype: str):  # type: ignore[no-untyped-def]
        module, options = writer(fstype)

        class Wrapped:
            def __getattr__(self, name: str) -> object:
                return getattr(module, name)

            def write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                done = module.write(*args, **kwargs)
                phase("write")
                return done

        return Wrapped(), options

    mkfs.writer = chaos_writer  # type: ignore[assignment]

    replace = os.replace

    def chaos_replace(src, dst, **kwargs):  # type: ignore[no-untyped-def]
        if os.path.abspath(dst) != IMAGE:
            return replace(src, dst, **kwargs)
        phase("rename")
        replace(src, dst, **kwargs)
        phase("renamed")
        return None

    os.replace = chaos_replace


if __name__ == "__main__":
    install()
    from smolfs.__main__ import main

    sys.exit(main(["build", *sys.argv[1:]]))
