"""A running QEMU: start it, pump its serial console, talk QMP, stop it, never orphan it.

Attached runs give QEMU ``PR_SET_PDEATHSIG`` (SIGKILL) so even a killed launcher takes QEMU
down; Ctrl-C, SIGTERM, a timeout or an exception go through :meth:`Vm.kill` in a
``finally``. Detached runs start QEMU under a keeper process in its own session
(:func:`start_keeper`), which stops QEMU if the launcher goes away (killed, crashed) before
the VM was ready and detached; so a detached QEMU outlives the launcher only once it is
ready. The keeper stays QEMU's parent for its whole life, and QEMU has
``PR_SET_PDEATHSIG`` towards it: QEMU never outlives both the launcher and its keeper.
Once the VM is ready the keeper also follows its serial log and stops QEMU when the guest
halts or panics (NetBSD without ACPI cannot power QEMU off).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from smolfs.errors import LaunchError

from .fastpath import MAX_FD, Spawned, is_qemu, port_error, spawn
from .fastpath import image_locked as _image_locked
from .relay import TAIL_LINES


class Qmp:
    """A minimal QMP client over a unix socket: negotiate, run commands, skip events."""

    def __init__(self, path: Path, timeout: float = 2.0) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
            self.file = self.sock.makefile("rwb")
            self._read()  # greeting
            self.execute("qmp_capabilities")
        except OSError:
            self.sock.close()
            raise

    def _read(self) -> dict[str, object]:
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QMP socket closed")
            import json

            msg = json.loads(line)
            if "event" not in msg:
                return dict(msg)

    def execute(self, command: str, **arguments: object) -> object:
        req: dict[str, object] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        import json

        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise LaunchError(f"QMP {command}: {reply['error']}")
        return reply.get("return")

    def hmp(self, command_line: str) -> str:
        return str(self.execute("human-monitor-command", **{"command-line": command_line}))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spawn_error(binary: str, err: OSError) -> LaunchError:
    if err.errno == errno.ENOENT:
        return LaunchError(f"{binary} not found",
                           hint="install QEMU: apt-get install qemu-system-x86")
    return LaunchError(f"cannot start {binary}: {err.strerror}")


def _report(fd: int, line: str) -> None:
    """Write one report line; the launcher may be gone (EPIPE): nobody to tell then."""
    with contextlib.suppress(OSError):
        os.write(fd, line.encode())


def _stop_child(pid: int, grace: float = 1.0) -> int | None:
    """SIGTERM ``pid``, SIGKILL it after ``grace`` seconds; reap it. Its exit status."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            return None
        time.sleep(0.01)


_KEEPER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Signalled(Exception):
    """The keeper got SIGINT, SIGTERM or SIGHUP: stop QEMU, then exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, _frame: object) -> None:
    raise _Signalled(signum)


def _isolate(keep: Iterable[int]) -> None:
    """In the keeper: /dev/null as 0, 1 and 2, every other descriptor but ``keep``
    closed. A keeper outlives ``startnb -d``: it must not hold the caller's pipes
    (whoever waits for their end of file would wait for the VM)."""
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
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import _ctypes

        prctl = _ctypes.dlsym(_ctypes.dlopen(None, 2), "prctl")
        _ctypes.call_function(prctl, (15, name[:15], 0, 0, 0))  # PR_SET_NAME


def _record_exit(exit_file: str | None, code: int) -> None:
    """Write QEMU's exit status (negative: the signal that killed it) to ``exit_file``
    (temp file + rename); the state directory may be gone already (``startnb stop``)."""
    if exit_file is None:
        return
    tmp = f"{exit_file}.tmp"
    with contextlib.suppress(OSError):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{code}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, exit_file)


#: How often the keeper of a detached VM reads new bytes of its serial log.
POLL = 0.1
#: A panicking guest may print its trap and debugger lines this long before QEMU stops.
PANIC_GRACE = 1.0
#: How long QEMU may take to end on SIGTERM after the guest's end, before SIGKILL.
END_GRACE = 2.0


def _child_waiter() -> Callable[[float], object]:
    """A sleep of up to the given seconds that ends the moment a child of this process
    ends: SIGCHLD blocked and waited for (no handler, no descriptor). Where there is no
    ``sigtimedwait`` (macOS), a plain sleep."""
    timed = getattr(signal, "sigtimedwait", None)
    if timed is None:
        return time.sleep
    chld = {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, chld)  # pending until taken: none missed
    return lambda seconds: timed(chld, seconds)


def _record_end(manifest: str | None, end: tuple[str, str]) -> None:
    """Add ``guest_end`` (``{"kind": ..., "line": ...}``) to the VM's manifest (temp file
    + rename); the state directory may be gone already (``startnb stop``)."""
    if manifest is None:
        return
    import json

    try:
        with open(manifest, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    data["guest_end"] = {"kind": end[0], "line": end[1]}
    tmp = f"{manifest}.end.tmp"
    with contextlib.suppress(OSError):
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, manifest)


def _tend(pid: int, serial_log: str | None, manifest: str | None) -> int | None:
    """The keeper's work once the VM is ready: reap QEMU ``pid``; meanwhile, with a
    ``serial_log``, read its new bytes every :data:`POLL` seconds (and at once when QEMU
    ends) and, on a line saying the guest ended (:func:`launcher.detect.scan_end`:
    halted, or a panic, given :data:`PANIC_GRACE` seconds to print its trap and reach
    the debugger's prompt), record ``guest_end`` in ``manifest`` and stop QEMU (SIGTERM,
    then SIGKILL). QEMU's exit status (None if it cannot be known)."""
    if serial_log is None:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    import re

    from .detect import DEBUGGER_PROMPT, scan_end

    wait = _child_waiter()
    log = -1
    partial = tail = b""
    end: tuple[str, str] | None = None
    deadline = 0.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if end is not None:  # a panic that ended QEMU itself (a reset, -no-reboot)
                _record_end(manifest, end)
            return os.waitstatus_to_exitcode(status)
        if log < 0:  # kept open: 'startnb stop' may remove the state directory
            with contextlib.suppress(OSError):
                log = os.open(serial_log, os.O_RDONLY | os.O_CLOEXEC)
        data = os.read(log, 65536) if log >= 0 else b""
        if end is None:
            partial, end = scan_end(partial, data)
            tail = partial
            deadline = time.monotonic() + PANIC_GRACE
        else:
            tail = (tail + data)[-256:]
        left = deadline - time.monotonic()
        if end is not None and (end[0] == "halted" or left <= 0 or re.search(
                DEBUGGER_PROMPT, tail.decode("utf-8", "replace").rstrip("\r\n"))):
            _record_end(manifest, end)  # first: once QEMU is gone, 'ps' forgets the VM
            return _stop_child(pid, END_GRACE)
        if len(data) < 65536:
            wait(POLL if end is None else max(0.0, min(POLL, left)))


def _keep(argv: list[str], stdin: int, log: int, ctl: int, report: int,
          exit_file: str | None = None, *, serial_log: str | None = None,
          manifest: str | None = None) -> None:
    """The keeper of a detached QEMU (runs in a forked child; never returns to the caller's
    code). QEMU is its child for its whole life, with ``PR_SET_PDEATHSIG`` (SIGKILL): the
    keeper's death, however it dies, takes QEMU with it.

    Reports ``pid N`` on ``report``, then ``exit S`` if QEMU ends before the launcher says
    ``d`` (detach) on ``ctl``, preceded by ``signal N`` if the keeper got that signal.
    Whatever goes wrong before ``d`` (the pipe's end of file: the launcher is gone; a
    failed report write; SIGINT, SIGTERM or SIGHUP; any exception) stops QEMU: SIGTERM,
    then SIGKILL. After ``d`` the keeper stays QEMU's parent: it follows ``serial_log``
    and stops QEMU when the guest halts or panics (:func:`_tend`, recording
    ``guest_end`` in ``manifest``), reaps it and writes its exit status to
    ``exit_file``; SIGINT, SIGTERM or SIGHUP stop QEMU the same way.
    """
    os.setsid()
    _isolate((stdin, log, ctl, report))
    _name_process(b"startnb-keeper")
    for sig in _KEEPER_SIGNALS:
        signal.signal(sig, _raise_signalled)
    pid: int | None = None
    code: int | None = None
    try:
        try:
            pid = spawn(argv, stdin, log, log, die_with_parent=True, new_session=False)
        except OSError as err:
            _report(report, f"error {err.errno}\n")
            return
        finally:
            for fd in {stdin, log}:
                os.close(fd)
        # QEMU keeps the caller's directory (its argv may name files relative to it);
        # the keeper moves to / so that it holds no directory of the caller's.
        with contextlib.suppress(OSError):
            os.chdir("/")
        _report(report, f"pid {pid}\n")
        while True:  # until ready: tied to the launcher
            if select.select([ctl], [], [], 0.02)[0]:
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
        code = _tend(pid, serial_log, manifest)  # detached: until QEMU ends or is stopped
    except _Signalled as sig:
        _report(report, f"signal {sig.signum}\n")
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, _KEEPER_SIGNALS)  # finish cleaning up
        if pid is not None and code is None:
            code = _stop_child(pid)
            if code is not None:
                _report(report, f"exit {code}\n")
        if code is not None:
            _record_exit(exit_file, code)


class Keeper(NamedTuple):
    """A keeper just forked by :func:`start_keeper`."""

    pid: int
    #: The write end of its control pipe: ``d`` lets QEMU run; end of file stops it.
    ctl: int
    #: The read end of its report pipe: ``pid N``, ``error E``, ``signal N``, ``exit S``.
    report: int
    #: When QEMU's start began: ``time.monotonic()`` and ``time.time()``.
    exec_time: float
    started: float


def start_keeper(argv: list[str], state_dir: Path | str | None,
                 qemu_log: Path | str | None = None) -> Keeper:
    """Fork the keeper of a detached QEMU (:func:`_keep`), which starts QEMU with
    ``argv`` (its stdout and stderr to ``qemu_log``), and name it in
    ``state_dir/keeper.pid``. Once ready it follows ``state_dir/serial.log``, records
    ``guest_end`` in ``state_dir/manifest.json`` (written before ``d``) and QEMU's exit
    status in ``state_dir/qemu.exit`` (the layout of :class:`launcher.state.VmDir`).
    :meth:`Vm.adopt_keeper` takes the keeper over."""
    log = os.open(qemu_log or os.devnull,
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    ctl_r, ctl_w = os.pipe()
    st_r, st_w = os.pipe()
    exec_time, started = time.monotonic(), time.time()
    files = {name: os.path.join(state_dir, name) if state_dir is not None else None
             for name in ("qemu.exit", "serial.log", "manifest.json")}
    keeper = os.fork()
    if keeper == 0:
        try:
            os.close(ctl_w)
            os.close(st_r)
            _keep(argv, null, log, ctl_r, st_w, files["qemu.exit"],
                  serial_log=files["serial.log"], manifest=files["manifest.json"])
        finally:
            os._exit(0)
    for fd in (ctl_r, st_w, log, null):
        os.close(fd)
    if state_dir is not None:
        with contextlib.suppress(OSError):
            fd = os.open(os.path.join(state_dir, "keeper.pid"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, f"{keeper}\n".encode())
            finally:
                os.close(fd)
    return Keeper(keeper, ctl_w, st_r, exec_time, started)


class Vm:
    """One QEMU process and its console stream.

    Attached: QEMU is our child, with ``PR_SET_PDEATHSIG``. Detached (``detach=True``):
    QEMU is the child of a small keeper process (a fork of the launcher, in its own
    session; see :func:`_keep`), with ``PR_SET_PDEATHSIG`` towards the keeper. Until
    :meth:`detach` is called, the end of file of a pipe from the launcher (the launcher
    exited, was killed, crashed) makes the keeper stop QEMU, and the end of file of the
    keeper's report pipe (the keeper died) is seen by :meth:`poll` at once:
    :attr:`lost_keeper` then says why, and QEMU is gone. :meth:`detach` tells the keeper
    to let QEMU run; it stays QEMU's parent, stops QEMU when the serial log says the
    guest halted or panicked, and writes its exit status to ``state_dir/qemu.exit``
    (``state_dir/keeper.pid`` names the keeper). A keeper forked earlier (by
    :func:`start_keeper`) is taken over with :meth:`adopt_keeper` instead of :meth:`start`.
    """

    def __init__(self, argv: list[str], *, serial_log: Path | None = None,
                 qmp: Path | None = None, qemu_log: Path | None = None,
                 detach: bool = False, interactive: bool = False,
                 state_dir: Path | None = None) -> None:
        self.argv = argv
        self.interactive = interactive
        self.serial_log = serial_log
        self.qmp_path = qmp
        self.qemu_log = qemu_log
        self.detach_mode = detach
        self._pid: int | None = None
        self._status: int | None = None
        self.exec_time = 0.0
        self.started = 0.0
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._stderr = b""
        self._console_fd: int | None = None
        self._stderr_fd: int | None = None
        self._serial_pos = 0
        self._keeper: int | None = None
        self._keeper_ctl: int | None = None
        self._keeper_status: int | None = None
        self._keeper_buf = b""
        self.state_dir = state_dir
        #: Set when the keeper died or was signalled before :meth:`detach`: one line.
        self.lost_keeper: str | None = None

    # -- lifetime ----------------------------------------------------------------------

    def _log_argv(self) -> None:
        from smolfs import cli

        if cli.DEBUG:
            import shlex

            print(f"+ {shlex.join(self.argv)}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self._log_argv()
        if self.detach_mode:
            self._start_kept()
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = 0 if self.interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.exec_time = time.monotonic()
        self.started = time.time()
        try:
            self._pid = spawn(self.argv, stdin, out_w, err_w, die_with_parent=True)
        except OSError as err:
            os.close(out_r)
            os.close(err_r)
            raise _spawn_error(self.argv[0], err) from err
        finally:
            os.close(out_w)
            os.close(err_w)
            if stdin != 0:
                os.close(stdin)
        self._console_fd, self._stderr_fd = out_r, err_r

    def adopt(self, spawned: Spawned) -> None:
        """Take over a QEMU the fast path already started with this argv."""
        assert spawned.argv == self.argv and not self.detach_mode
        spawned.adopted = True  # (logged under --debug when it was started)
        self._pid = spawned.pid
        self.exec_time, self.started = spawned.exec_time, spawned.started
        self._console_fd, self._stderr_fd = spawned.stdout, spawned.stderr
        self._stderr = spawned.stderr_data[-8192:]

    def _start_kept(self) -> None:
        self.adopt_keeper(start_keeper(self.argv, self.state_dir, self.qemu_log))

    def adopt_keeper(self, keeper: Keeper) -> None:
        """Take over the keeper :func:`start_keeper` forked for this argv: wait for its
        first report (QEMU's pid, or why it could not start)."""
        self.exec_time, self.started = keeper.exec_time, keeper.started
        self._keeper, self._keeper_ctl, self._keeper_status = (keeper.pid, keeper.ctl,
                                                               keeper.report)
        while self._pid is None and self._status is None:
            if not self._read_keeper(None):
                break
        if self._pid is None:
            self._reap_keeper()
            errno_ = self._status if self._status is not None else 0
            raise _spawn_error(self.argv[0], OSError(errno_, os.strerror(errno_)))

    def _read_keeper(self, timeout: float | None) -> bool:
        """Read the keeper's reports (``pid N``, ``exit S``, ``error E``); False at EOF."""
        fd = self._keeper_status
        if fd is None:
            return False
        if timeout is not None and not select.select([fd], [], [], timeout)[0]:
            return True
        data = os.read(fd, 256)
        if not data:
            os.close(fd)
            self._keeper_status = None
            if self._status is None and self._pid is not None:
                self._keeper_died()
            return False
        self._keeper_buf += data
        *lines, self._keeper_buf = self._keeper_buf.split(b"\n")
        for line in lines:
            word, _, value = line.decode().partition(" ")
            if word == "pid":
                self._pid = int(value)
            elif word in ("exit", "error"):
                self._status = int(value)
            elif word == "signal":
                self.lost_keeper = (f"the keeper of QEMU (pid {self._keeper}) got "
                                    f"{_signame(int(value))} before the VM was ready")
        return True

    def _keeper_died(self) -> None:
        """The keeper's report pipe ended without QEMU's exit status: the keeper died
        (SIGKILL, a crash). QEMU dies with it (``PR_SET_PDEATHSIG``); make sure of it."""
        how = "died"
        if self._keeper is not None:
            with contextlib.suppress(ChildProcessError):
                code = os.waitstatus_to_exitcode(os.waitpid(self._keeper, 0)[1])
                how = f"was killed ({_signame(-code)})" if code < 0 else f"exited ({code})"
        self.lost_keeper = (f"the keeper of QEMU (pid {self._keeper}) {how} before the VM "
                            "was ready")
        self._keeper = None
        assert self._pid is not None
        deadline = time.monotonic() + 2.0
        while is_qemu(self._pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if is_qemu(self._pid):  # not ours to reap: only the signal
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        self._status = -signal.SIGKILL

    def _reap_keeper(self) -> None:
        if self._keeper_ctl is not None:
            os.close(self._keeper_ctl)
            self._keeper_ctl = None
        if self._keeper is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._keeper, 0)
            self._keeper = None
        while self._read_keeper(None):
            pass

    def detach(self) -> None:
        """Leave QEMU running after this process exits (detached mode, once ready): the
        keeper stays its parent and outlives us."""
        if self._keeper_ctl is not None:
            os.write(self._keeper_ctl, b"d")
            os.close(self._keeper_ctl)
            self._keeper_ctl = None
        if self._keeper_status is not None:
            os.close(self._keeper_status)
            self._keeper_status = None
        self._keeper = None

    @property
    def pid(self) -> int:
        assert self._pid is not None
        return self._pid

    def poll(self) -> int | None:
        """QEMU's exit status (negative: killed by that signal), None while it runs."""
        if self._status is not None or self._pid is None:
            return self._status
        if self.detach_mode:  # QEMU is the keeper's child, never ours
            while self._keeper_status is not None and self._status is None:
                if not select.select([self._keeper_status], [], [], 0)[0]:
                    break
                self._read_keeper(None)
            if self._status is None and self._keeper_status is None and not is_qemu(
                    self._pid):
                self._status = -signal.SIGKILL  # gone, and nobody to tell us how
            return self._status
        pid, status = os.waitpid(self._pid, os.WNOHANG)
        if pid:
            self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if not self.detach_mode and deadline is None:
                _, status = os.waitpid(self.pid, 0)
                self._status = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.01)
        return self._status

    @property
    def console_open(self) -> bool:
        """QEMU's stdout (the console of an attached run) has not reached end of file."""
        return self._console_fd is not None

    def kill(self, grace: float = 1.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; wait for the process."""
        if self._pid is not None and self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)
            if self.wait(grace) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
                self.wait(5.0)
        self._reap_keeper()
        return self._status

    def close(self) -> None:
        """Close the pipes from QEMU (after it exited or was detached)."""
        for fd in (self._console_fd, self._stderr_fd):
            if fd is not None:
                os.close(fd)
        self._console_fd = self._stderr_fd = None

    def stderr_text(self) -> str:
        if self.qemu_log is not None:
            with contextlib.suppress(OSError):
                return self.qemu_log.read_text(errors="replace")
        return self._stderr.decode(errors="replace")

    # -- console -----------------------------------------------------------------------

    def read_console(self, timeout: float) -> list[tuple[float, bytes]]:
        """Wait up to ``timeout`` for console output; (arrival time, chunk) pairs."""
        if self.serial_log is not None:
            return self._read_serial_file(timeout)
        fds = [fd for fd in (self._console_fd, self._stderr_fd) if fd is not None]
        if not fds:
            time.sleep(timeout)
            return []
        ready, _, _ = select.select(fds, [], [], timeout)
        out = []
        for fd in ready:
            data = os.read(fd, 65536)
            now = time.monotonic()
            if fd == self._console_fd:
                if data:
                    out.append((now, data))
                else:
                    os.close(fd)
                    self._console_fd = None
            elif data:
                self._stderr = (self._stderr + data)[-8192:]
            else:
                os.close(fd)
                self._stderr_fd = None
        return out

    def _read_serial_file(self, timeout: float) -> list[tuple[float, bytes]]:
        assert self.serial_log is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.serial_log, "rb") as f:
                    f.seek(self._serial_pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            if data:
                self._serial_pos += len(data)
                return [(time.monotonic(), data)]
            left = deadline - time.monotonic()
            if left <= 0 or self.poll() is not None:
                return []
            time.sleep(min(0.002, left))

    def split_lines(self, data: bytes) -> list[str]:
        """Complete lines (without line ends) from a console chunk; keeps the tail line."""
        buf = self._partial + data
        *lines, self._partial = buf.split(b"\n")
        out = [line.decode("utf-8", "replace").strip("\r") for line in lines]
        self.tail.extend(out)
        return out

    def continue_lines(self, tail: Iterable[str], partial: bytes) -> None:
        """Carry on from console lines read elsewhere (the fast path's relay): the last
        complete ones and the unfinished one."""
        self.tail.extend(tail)
        self._partial = partial

    def last_lines(self) -> list[str]:
        lines = list(self.tail)
        if self._partial.strip():
            lines.append(self._partial.decode("utf-8", "replace").strip("\r"))
        return lines[-TAIL_LINES:]

    # -- QMP ---------------------------------------------------------------------------

    def qmp(self) -> Qmp:
        if self.qmp_path is None:
            raise LaunchError("this VM has no QMP socket")
        return Qmp(self.qmp_path)


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stop_pid(pid: int, qmp_path: Path | None, grace: float, force: bool,
             alive: Callable[[int], bool], acpi: bool = True) -> tuple[str, str]:
    """Stop a QEMU we did not start: ACPI power-down over QMP, SIGTERM, then SIGKILL.

    ``acpi=False`` (a machine without ACPI, such as ``microvm,acpi=off``): no power button
    to press, SIGTERM at once. Returns how it ended ("powerdown", "sigterm" or "sigkill")
    and one line saying why.
    """
    start = time.monotonic()

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.02)
        return not alive(pid)

    if force:
        why = "--force"
    else:
        why = "no QMP socket" if acpi else "the machine has no ACPI power button"
        if acpi and qmp_path is not None and qmp_path.exists():
            try:
                with Qmp(qmp_path) as q:
                    q.execute("system_powerdown")
            except (OSError, ConnectionError, LaunchError, ValueError) as err:
                why = f"QMP power-down failed ({err})"
            else:
                if wait(grace):
                    return "powerdown", (f"the guest powered off (ACPI) in "
                                         f"{time.monotonic() - start:.2f} s")
                why = f"the guest ignored the ACPI power button for {grace:g} s"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if wait(2.0):
            return "sigterm", f"{why}; QEMU ended on SIGTERM"
        why += "; QEMU ignored SIGTERM for 2 s"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait(2.0)
    return "sigkill", f"{why}; killed (SIGKILL)"


def check_host_port(proto: str, host_ip: str, port: int) -> None:
    """Raise :class:`LaunchError` if the host port cannot be bound (as QEMU would)."""
    err = port_error(proto, host_ip, port)
    if err is not None:
        raise LaunchError(
            f"host port {proto}:{host_ip}:{port} is not available: {err}",
            hint="pick another host port with -p HOSTPORT:GUESTPORT "
            "(see who holds it: ss -ltnp)")


def image_locked(image: Path) -> bool:
    """Does another process (a QEMU) hold a lock on ``image``?"""
    return _image_locked(str(image))
