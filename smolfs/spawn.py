"""Starting a long-lived child (QEMU, a detached VM's QEMU): :func:`spawn`, fork + exec
with chosen descriptors, in a session of its own, killed when this process dies if asked;
:func:`spawn_in_group`, the same for a process that holds a terminal
(:func:`hold_terminal`): its children die with it without a fork of Python.

The one implementation behind :func:`smolfs.run.spawn` and the launcher. Only ``os``,
``errno``, ``sys`` and C modules (``_signal``, ``_ctypes``) are imported: the launcher's
fast path uses it before QEMU starts.
"""

from __future__ import annotations

import errno
import os
import sys

#: Above any descriptor number a process has (``close_range`` takes the whole range).
MAX_FD = 0x7FFFFFFF
#: Signals Python ignores (``SIG_IGN`` survives exec).
IGNORED_BY_PYTHON = ("SIGPIPE", "SIGXFSZ")


def libc(function: str, *args: int | bytes) -> int:
    """Call the C library's ``function`` (one Python's ``os`` lacks: ``prctl``, inotify)
    with int and bytes (``char *``) arguments; its int result. Through ``_ctypes``
    directly: the ``ctypes`` package costs milliseconds. Raises ``AttributeError`` where
    there is no such function."""
    import _ctypes

    return int(_ctypes.call_function(_ctypes.dlsym(_ctypes.dlopen(None, 2), function), args))


def _set_pdeathsig() -> None:
    """In the child: SIGKILL it when its parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    libc("prctl", 1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def _default_signals() -> None:
    """In the child: the default action for the signals Python ignores, as a program
    started from a shell expects (QEMU writing to a closed pipe must die of SIGPIPE)."""
    import _signal

    for name in IGNORED_BY_PYTHON:
        sig = getattr(_signal, name, None)
        try:
            if sig is not None and _signal.getsignal(sig) == _signal.SIG_IGN:
                _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int, *,
          die_with_parent: bool, new_session: bool = True) -> int:
    """fork + exec ``argv`` (``argv[0]`` a path: no ``$PATH`` search) with the given
    descriptors as 0, 1, 2 and no other; return the pid.

    ``new_session``: the child leads a session of its own (a Ctrl-C at the terminal does
    not reach it). ``die_with_parent``: SIGKILL the child when this process dies, however
    it dies (Linux; elsewhere the caller's ``finally`` blocks are all there is). Raises
    ``OSError`` from the child's ``execv`` (``FileNotFoundError`` when the binary is
    missing).
    """
    import _signal  # noqa: F401  (loaded before the fork: the child only uses it)

    if die_with_parent and sys.platform.startswith("linux"):
        import _ctypes  # noqa: F401  (likewise)
    else:
        die_with_parent = False
    parent = os.getpid()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python clean-up may run here
        try:
            os.close(err_r)
            if new_session:
                os.setsid()
            if die_with_parent:
                _set_pdeathsig()
                if os.getppid() != parent:
                    os._exit(1)
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                if fd != target:
                    os.dup2(fd, target)
            # Nothing else of the caller's reaches the program: an inherited pipe end
            # would keep whoever waits for its end of file waiting as long as it runs.
            os.closerange(3, err_w)
            os.closerange(err_w + 1, MAX_FD)
            _default_signals()
            os.execv(argv[0], argv)
        except BaseException as err:
            code = err.errno if isinstance(err, OSError) and err.errno else errno.EINVAL
            os.write(err_w, str(code).encode())
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        failure = os.read(err_r, 32)
    finally:
        os.close(err_r)
    if failure:
        os.waitpid(pid, 0)
        code = int(failure)
        raise OSError(code, os.strerror(code), argv[0])
    return pid


def hold_terminal() -> tuple[int, int] | None:
    """In a session leader with no controlling terminal: make a new pseudo-terminal its
    controlling terminal. When this process ends, however it ends (SIGKILL too), the
    system sends SIGHUP to the terminal's foreground process group, this process's
    (POSIX, for the controlling process of a terminal): what :func:`spawn_in_group`
    starts ends with it. Returns the terminal's two descriptors, to keep open for life
    (closing them hangs the group up); None where no pseudo-terminal can be had."""
    try:
        master, slave = os.openpty()
    except OSError:
        return None
    try:
        if sys.platform.startswith("linux"):
            # A session leader acquires the first terminal it opens without O_NOCTTY
            # (os.openpty opens its side with it).
            os.close(os.open(os.ttyname(slave), os.O_RDWR | os.O_CLOEXEC))
        else:
            import fcntl
            import termios

            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        if os.tcgetpgrp(slave) == os.getpgrp():  # fails unless it is ours now
            return master, slave
    except OSError:
        pass
    os.close(master)
    os.close(slave)
    return None


def spawn_in_group(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """``posix_spawn`` ``argv`` (``argv[0]`` a path) in this process's session and process
    group, with the given descriptors as 0, 1, 2 and no other, the default action for
    every signal Python ignores and none blocked; return the pid. No fork of this process
    (its memory is not copied): the program runs within a millisecond. Raises ``OSError``
    when it cannot be started."""
    import _signal

    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, fd, target)
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)) if fd != target]
    for name in os.listdir("/dev/fd"):  # what is not closed on exec: closed for it
        fd = int(name)
        try:
            if fd > 2 and fd not in (stdin, stdout, stderr) and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:
            pass  # the directory's own descriptor, closed by now
    default = [getattr(_signal, name) for name in IGNORED_BY_PYTHON
               if hasattr(_signal, name)]
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions,
                          setsigdef=default, setsigmask=())
