"""Every external program goes through one of two doors: :func:`run` for a program
whose end we wait for, :func:`spawn` for a long-lived child (both on
:func:`smolfs.spawn.spawn`, which the launcher's fast path calls itself for QEMU).

A list argv (never a shell string), stdin closed, ``+ command`` logged under
``--debug``, a missing program turned into "X not found (install package Y)" and a
failure into :class:`~smolfs.errors.ExternalCommandError` with the stderr tail.

``contain=True`` runs the program under :mod:`smolfs.guard`: in a process group of
its own, and nothing it starts survives it, its time limit, a Ctrl-C, or the death
of this process (even by SIGKILL).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from smolfs.errors import ExternalCommandError
from smolfs.log import debug

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the launcher imports this module
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Debian package that provides each program we may call: the one table of them.
PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-i386": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "bwrap": "bubblewrap",
    "sh": "dash",
    "sysctl": "procps",
}


def package_of(program: str) -> str | None:
    """The Debian package providing *program* (a name or a path), if we know it."""
    return PACKAGES.get(program.rsplit("/", 1)[-1])


def _not_found(argv: list[str]) -> ExternalCommandError:
    pkg = package_of(argv[0])
    hint = f"install it: apt-get install {pkg}" if pkg else None
    return ExternalCommandError(f"{argv[0]} not found", argv=argv, hint=hint)

#: The supervisor that ``contain=True`` puts between this process and the program.
GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.py")
#: How long a contained program's guard may take to kill it all once told to.
TEARDOWN_WAIT = 30.0


class CommandTimeout(ExternalCommandError):
    """A program ran past its time limit (and, when contained, everything it started
    was killed)."""

    def __init__(self, message: str, argv: list[str], timeout: float,
                 stderr_tail: str = "") -> None:
        super().__init__(message, argv=argv, stderr_tail=stderr_tail)
        self.timeout = timeout


def run(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    contain: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run *argv*; raise :class:`CommandTimeout` past *timeout* seconds (None: no limit).

    *contain*: see the module doc (output is always captured then)."""
    argv = [str(a) for a in argv]
    debug("+ " + shlex.join(argv))
    if contain:
        return _check(argv, _run_contained(argv, cwd, env, timeout), check)
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
        raise _not_found(argv) from err
    except subprocess.TimeoutExpired as err:
        raise CommandTimeout(f"{argv[0]} did not finish within {timeout:g}s", argv,
                             timeout or 0) from err
    return _check(argv, proc, check)


def spawn(argv: Sequence[str], *, stdin: int | None = None, stdout: int = 1,
          stderr: int = 2, die_with_parent: bool, new_session: bool = True) -> int:
    """Start *argv* as a long-lived child and return its pid without waiting.

    The door for programs that outlive the call (QEMU, a detached VM's QEMU), through
    :func:`smolfs.spawn.spawn` as the launcher uses it: a list argv, the program found on
    ``$PATH``, ``+ command`` logged under ``--debug``, the given descriptors as its 0, 1, 2
    (stdin: ``/dev/null`` unless given) and no other, a missing program turned into "X not
    found (install package Y)", any other failure to start it into
    :class:`~smolfs.errors.ExternalCommandError`. *die_with_parent* and *new_session*
    are :func:`smolfs.spawn.spawn`'s. Waiting for the child and stopping it are the
    caller's business: it knows how its program wants to be told.
    """
    import shutil

    from smolfs.spawn import spawn as fork_exec

    argv = [str(a) for a in argv]
    debug("+ " + shlex.join(argv))
    path = shutil.which(argv[0])
    if path is None:
        raise _not_found(argv)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) if stdin is None else None
    try:
        return fork_exec([path, *argv[1:]], stdin if null is None else null, stdout, stderr,
                         die_with_parent=die_with_parent, new_session=new_session)
    except FileNotFoundError as err:
        raise _not_found(argv) from err
    except OSError as err:
        raise ExternalCommandError(f"{argv[0]} cannot be started: {err.strerror}",
                                   argv=argv) from err
    finally:
        if null is not None:
            os.close(null)


def _check(argv: list[str], proc: subprocess.CompletedProcess[str],
           check: bool) -> subprocess.CompletedProcess[str]:
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


def _run_contained(argv: list[str], cwd: str | None, env: Mapping[str, str] | None,
                   timeout: float | None) -> subprocess.CompletedProcess[str]:
    """*argv* under the guard; the write end of its watch pipe stays here only."""
    import shutil

    if shutil.which(argv[0], path=(env or os.environ).get("PATH")) is None:
        raise _not_found(argv)
    watch, hold = os.pipe()  # both close-on-exec: only the guard gets *watch*
    try:
        proc = subprocess.Popen(
            [_python(), "-I", "-S", GUARD, str(watch), *argv],
            cwd=cwd, env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", pass_fds=(watch,), start_new_session=True)
    except BaseException:
        os.close(hold)
        raise
    finally:
        os.close(watch)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.close(hold)
        hold = -1
        out, err = _finish(proc)
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise CommandTimeout(f"{argv[0]} did not finish within {timeout:g}s", argv,
                             timeout or 0, stderr_tail=tail) from None
    except BaseException:  # Ctrl-C, SIGTERM turned into an exception...
        os.close(hold)
        hold = -1
        _finish(proc)
        raise
    finally:
        if hold >= 0:
            os.close(hold)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _python() -> str:
    """This Python: by its path, else (a user who cannot reach it by path, e.g. a venv
    under another user's home, after dropping privileges) through /proc/self/exe."""
    if os.access(sys.executable, os.X_OK) or not os.path.exists("/proc/self/exe"):
        return sys.executable
    return "/proc/self/exe"


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for a guard told to stop (its watch pipe closed); SIGKILL it if it hangs."""
    try:
        return proc.communicate(timeout=TEARDOWN_WAIT)
    except BaseException:
        proc.kill()
        out, err = proc.communicate()
        return out or "", err or ""
