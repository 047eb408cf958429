"""The keeper of a detached VM: a fork of ``startnb -d`` that starts QEMU and stays its
parent for life (QEMU ends with it: SIGHUP from the terminal the keeper holds, or
``PR_SET_PDEATHSIG``), stops it if the launcher goes away before the VM is ready, follows
the serial log once detached (a halt or panic ends QEMU), reaps it and records its exit
status. The lifecycle is in ``launcher/README.md`` ("Keeper").

Only ``os``, ``time``, :mod:`launcher.proc` and :mod:`smolfs.spawn` are imported here: the
fast path forks the keeper before anything else of the launcher is loaded; whatever else
the keeper needs is imported inside it, after the fork.
"""

from __future__ import annotations

import os
import time

from smolfs.spawn import MAX_FD, hold_terminal, libc, spawn, spawn_in_group

from .proc import stop_child

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterable

#: SIGINT, SIGTERM, SIGHUP (the numbers are the same on every POSIX system).
KEEPER_SIGNALS = (2, 15, 1)


class Keeper(tuple):  # type: ignore[type-arg]  (a NamedTuple would import typing)
    """A keeper just forked by :func:`start_keeper`: (pid, ctl, report, exec_time,
    started, written). ``ctl`` is the write end of its control pipe (``d`` lets QEMU run;
    end of file stops it), ``report`` the read end of its report pipe (``pid N``, ``error
    E``, ``signal N``, ``exit S``); ``exec_time``/``started``: when QEMU's start began
    (``time.monotonic()``, ``time.time()``); ``written``: the read end of a pipe that
    gets a byte when a file of the state directory (the console) is written to, until
    ``d``, and its end of file at once where the keeper cannot be told of writes (then
    poll); whoever adopts the keeper reads it or closes it."""

    __slots__ = ()

    def __new__(cls, pid: int, ctl: int, report: int, exec_time: float,
                started: float, written: int = -1) -> Keeper:
        return tuple.__new__(cls, (pid, ctl, report, exec_time, started, written))

    pid = property(lambda self: self[0])
    ctl = property(lambda self: self[1])
    report = property(lambda self: self[2])
    exec_time = property(lambda self: self[3])
    started = property(lambda self: self[4])
    written = property(lambda self: self[5])


class Signalled(BaseException):
    """The keeper got SIGINT, SIGTERM or SIGHUP: stop QEMU, then exit. Not an
    ``Exception``: no ``except Exception`` on the way (naming the process, say) may
    swallow it and leave the keeper running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, _frame: object) -> None:
    raise Signalled(signum)


def _report(fd: int, line: str) -> None:
    """Write one report line; the launcher may be gone (EPIPE): nobody to tell then."""
    try:  # noqa: SIM105 (contextlib costs milliseconds)
        os.write(fd, line.encode())
    except OSError:
        pass


def _isolate(keep: Iterable[int]) -> None:
    """In the keeper: /dev/null as 0, 1 and 2, every other descriptor but ``keep`` closed.
    A keeper outlives ``startnb -d``: it must not hold the caller's pipes (whoever waits
    for their end of file would wait for the VM)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, MAX_FD)


def _name_process(name: bytes) -> None:
    """The name ``ps -e`` and ``top`` show (Linux ``PR_SET_NAME``); elsewhere nothing."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:  # noqa: SIM105 (contextlib costs milliseconds)
        libc("prctl", 15, name[:15], 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass


def _record_exit(exit_file: str | None, code: int) -> None:
    """Write QEMU's exit status (negative: the signal that killed it) to ``exit_file``
    (temp file + rename); the state directory may be gone already (``startnb stop``)."""
    if exit_file is None:
        return
    tmp = f"{exit_file}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{code}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, exit_file)
    except OSError:
        pass


def _watch_writes(serial_log: str | None, written: int) -> int | None:
    """In the keeper: a descriptor readable when a file of the state directory is written
    to (:func:`launcher.filewatch.watch`), whose news go to the launcher on ``written``
    (the launcher reads them there: the descriptor's teardown, 10-20 ms, is the keeper's,
    not the command's). None, and ``written`` closed (its end of file: poll), when there
    is none."""
    from .filewatch import watch

    watched = watch(os.path.dirname(serial_log)) if serial_log and written >= 0 else None
    if watched is None and written >= 0:
        os.close(written)
    return watched


def _tell_written(watched: int, written: int) -> bool:
    """Pass on that the state directory was written to (a full pipe already says so);
    False once nobody listens (the ordinary path closes its end: it does not wait so)."""
    from .filewatch import drain

    drain(watched)
    try:
        os.write(written, b"w")
    except BlockingIOError:  # the launcher has not read the last news yet
        pass
    except OSError:
        return False
    return True


def read_news(written: int) -> bool:
    """In the launcher: read the keeper's news of writes (:attr:`Keeper.written`, found
    readable); False at their end: none will come, poll instead."""
    try:
        return bool(os.read(written, 4096))
    except BlockingIOError:
        return True


def hear(keeper: Keeper, told: bool, timeout: float, also: tuple[int, ...] = ()
         ) -> tuple[list[int], bool]:
    """In the launcher: wait up to ``timeout`` seconds for ``keeper``'s report, for the
    descriptors ``also`` and, while ``told``, for its news of console writes (read here:
    :func:`read_news`). (The descriptors found readable, ``told`` now: False once the news
    ended, poll then.)"""
    import select

    watched = [keeper.report, *also] + ([keeper.written] if told else [])
    woke = select.select(watched, [], [], timeout)[0]
    if told and keeper.written in woke:
        told = read_news(keeper.written)
    return woke, told


def keep(argv: list[str], stdin: int, log: int, ctl: int, report: int,
         exit_file: str | None = None, *, serial_log: str | None = None,
         manifest: str | None = None, written: int = -1) -> None:
    """The keeper of a detached QEMU (runs in a forked child; never returns to the caller's
    code). QEMU is its child for its whole life and ends with it, however it dies: the
    keeper leads a session whose controlling terminal it holds
    (:func:`smolfs.spawn.hold_terminal`), and QEMU, spawned into its process group
    (:func:`smolfs.spawn.spawn_in_group`: no fork of Python), gets SIGHUP when it ends;
    where no pseudo-terminal can be had, QEMU is forked with ``PR_SET_PDEATHSIG``. QEMU
    starts in the caller's working directory (relative paths in ``argv``); the keeper
    then moves to ``/``.

    Until ``d`` it writes a byte to ``written`` when a file of ``serial_log``'s directory
    is written to (:func:`_watch_writes`). Reports ``pid N`` on ``report``, then ``exit
    S`` if QEMU ends before the launcher says ``d`` (detach) on ``ctl``, preceded by
    ``signal N`` if the keeper got that signal. Whatever goes wrong before ``d`` (the
    pipe's end of file: the launcher is gone; a failed report write; SIGINT, SIGTERM or
    SIGHUP; any exception) stops QEMU: SIGTERM, then SIGKILL. After ``d`` the keeper
    stays QEMU's parent: it follows ``serial_log`` and stops QEMU when the guest halts or
    panics (:func:`tend`, recording ``guest_end`` in ``manifest``), reaps it and writes
    its exit status to ``exit_file``; SIGINT, SIGTERM or SIGHUP stop QEMU the same way.
    """
    import _signal

    os.setsid()
    _isolate((stdin, log, ctl, report, written))
    if written >= 0:
        os.set_blocking(written, False)
    for sig in KEEPER_SIGNALS:
        _signal.signal(sig, _raise_signalled)
    pid: int | None = None
    code: int | None = None
    tied = hold_terminal() is not None  # (its two descriptors are held until the end)
    try:
        try:
            if tied:
                pid = spawn_in_group(argv, stdin, log, log)
            else:
                pid = spawn(argv, stdin, log, log, die_with_parent=True, new_session=False)
        except OSError as err:
            _report(report, f"error {err.errno}\n")
            return
        finally:
            for fd in {stdin, log}:
                os.close(fd)
        _report(report, f"pid {pid}\n")
        # Not before the spawn: QEMU resolves relative paths from the caller's directory.
        try:  # noqa: SIM105 (contextlib costs milliseconds)
            os.chdir("/")
        except OSError:
            pass
        _name_process(b"startnb-keeper")
        watched = _watch_writes(serial_log, written)
        if watched is None:
            written = -1  # (closed: the launcher polls)
        import select

        while True:  # until ready: tied to the launcher
            woke = select.select([ctl] if watched is None else [ctl, watched], [], [], 0.02)[0]
            if watched in woke and not _tell_written(watched, written):
                os.close(watched)  # (its teardown takes a while: nobody waits for it now)
                os.close(written)
                watched, written = None, -1
            if ctl in woke:
                if os.read(ctl, 1) != b"d":
                    return  # the launcher is gone before QEMU was ready: stop it
                break
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                _report(report, f"exit {code}\n")
                return
        os.close(ctl)
        os.close(report)
        report = -1
        if watched is not None:  # (its teardown takes a while: nobody waits for it now)
            os.close(written)
            os.close(watched)
            written = -1
        from .tending import tend

        code = tend(pid, serial_log, manifest)  # detached: until QEMU ends or is stopped
    except Signalled as sig:
        _report(report, f"signal {sig.signum}\n")
    finally:
        _signal.pthread_sigmask(_signal.SIG_BLOCK, KEEPER_SIGNALS)  # finish cleaning up
        if pid is not None and code is None:
            code = stop_child(pid)
            if code is not None:
                _report(report, f"exit {code}\n")
        if code is not None:
            _record_exit(exit_file, code)


def start_keeper(argv: list[str], state_dir: str | None,
                 qemu_log: str | None = None) -> Keeper:
    """Fork the keeper of a detached QEMU (:func:`keep`), which starts QEMU with ``argv``
    (its stdout and stderr to ``qemu_log``), and name it in ``state_dir/keeper.pid``.
    Once ready it follows ``state_dir/serial.log``, records ``guest_end`` in
    ``state_dir/manifest.json`` (written before ``d``) and QEMU's exit status in
    ``state_dir/qemu.exit`` (the layout of :class:`launcher.state.VmDir`).
    :meth:`launcher.vm.Vm.adopt_keeper` takes the keeper over (reads its first report)."""
    log = os.open(qemu_log or os.devnull,
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    ctl_r, ctl_w = os.pipe()
    st_r, st_w = os.pipe()
    wr_r, wr_w = os.pipe()
    files = {name: os.path.join(state_dir, name) if state_dir is not None else None
             for name in ("qemu.exit", "serial.log", "manifest.json")}
    import _signal  # noqa: F401  (loaded before the fork: the keeper uses it)

    exec_time, started = time.monotonic(), time.time()
    keeper = os.fork()
    if keeper == 0:
        try:
            for fd in (ctl_w, st_r, wr_r):
                os.close(fd)
            keep(argv, null, log, ctl_r, st_w, files["qemu.exit"],
                 serial_log=files["serial.log"], manifest=files["manifest.json"],
                 written=wr_w)
        finally:
            os._exit(0)
    for fd in (ctl_r, st_w, log, null, wr_w):
        os.close(fd)
    if state_dir is not None:
        try:
            fd = os.open(os.path.join(state_dir, "keeper.pid"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, f"{keeper}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            pass
    return Keeper(keeper, ctl_w, st_r, exec_time, started, wr_r)
