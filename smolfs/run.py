"""Every external program goes through :func:`run`.

A list argv (never a shell string), stdin closed, ``+ command`` logged under
``--debug``, a missing program turned into "X not found (install package Y)" and a
failure into :class:`~smolfs.errors.ExternalCommandError` with the stderr tail.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence

from smolfs.errors import ExternalCommandError
from smolfs.log import debug

#: Debian package that provides each program we may call.
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-i386": "qemu-system-x86",
    "bwrap": "bubblewrap",
    "sh": "dash",
}


def run(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in argv]
    debug("+ " + shlex.join(argv))
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except FileNotFoundError as err:
        pkg = PACKAGES.get(argv[0].rsplit("/", 1)[-1])
        hint = f"install it: apt-get install {pkg}" if pkg else None
        raise ExternalCommandError(f"{argv[0]} not found", argv=argv, hint=hint) from err
    except subprocess.TimeoutExpired as err:
        raise ExternalCommandError(
            f"{argv[0]} did not finish within {timeout:g}s", argv=argv
        ) from err
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
        raise ExternalCommandError(
            f"{shlex.join(argv)} exited with status {proc.returncode}"
            + (f": {tail.splitlines()[-1]}" if tail else ""),
            argv=argv,
            returncode=proc.returncode,
            stderr_tail=tail,
        )
    return proc
