"""A running QEMU (:class:`Vm`): start it or adopt it (from the fast path, or a detached
VM's keeper), read its console, poll it, stop it; it never outlives a failed boot. How
attached and detached QEMUs are tied to the launcher: ``launcher/README.md`` ("Keeper")."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from smolfs.errors import LaunchError
from smolfs.spawn import spawn

from .keeper import Keeper, start_keeper
from .proc import is_qemu, stop_child
from .relay import TAIL_LINES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .qmp import Qmp


def _spawn_error(binary: str, err: OSError) -> LaunchError:
    if err.errno == errno.ENOENT:
        from smolfs.run import package_of

        pkg = package_of(binary) or "qemu-system-x86"
        return LaunchError(f"{binary} not found", hint=f"install it: apt-get install {pkg}")
    return LaunchError(f"cannot start {binary}: {err.strerror}")


class Vm:
    """One QEMU process and its console stream.

    Attached: QEMU is our child, with ``PR_SET_PDEATHSIG``. Detached (``detach=True``):
    QEMU is the child of a small keeper process (a fork of the launcher, in its own
    session; see :mod:`launcher.keeper`), with ``PR_SET_PDEATHSIG`` towards the keeper. Until
    :meth:`detach` is called, the end of file of a pipe from the launcher (the launcher
    exited, was killed, crashed) makes the keeper stop QEMU, and the end of file of the
    keeper's report pipe (the keeper died) is seen by :meth:`poll` at once:
    :attr:`lost_keeper` then says why, and QEMU is gone. :meth:`detach` tells the keeper
    to let QEMU run; it stays QEMU's parent, stops QEMU when the serial log says the
    guest halted or panicked, and writes its exit status to ``state_dir/qemu.exit``
    (``state_dir/keeper.pid`` names the keeper). A keeper forked earlier (by
    :func:`launcher.keeper.start_keeper`) is taken over with :meth:`adopt_keeper`
    instead of :meth:`start`.
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

    def adopt(self, pid: int, exec_time: float, started: float, stdout: int, stderr: int,
              stderr_data: bytes) -> None:
        """Take over a QEMU already started with this argv (by the fast path,
        :class:`launcher.spawned.Spawned`): its pid, the times of its exec, the read ends
        of its stdout and stderr pipes, and what was read of its stderr already."""
        assert not self.detach_mode
        self._pid = pid
        self.exec_time, self.started = exec_time, started
        self._console_fd, self._stderr_fd = stdout, stderr
        self._stderr = stderr_data[-8192:]

    def _start_kept(self) -> None:
        self.adopt_keeper(start_keeper(
            self.argv, str(self.state_dir) if self.state_dir is not None else None,
            str(self.qemu_log) if self.qemu_log is not None else None))

    def adopt_keeper(self, keeper: Keeper, reports: bytes = b"") -> None:
        """Take over the keeper :func:`start_keeper` forked for this argv: wait for its
        first report (QEMU's pid, or why it could not start). ``reports``: what was
        already read from its report pipe (by the fast path)."""
        self.exec_time, self.started = keeper.exec_time, keeper.started
        self._keeper, self._keeper_ctl, self._keeper_status = (keeper.pid, keeper.ctl,
                                                               keeper.report)
        if keeper.written >= 0:  # (the news of console writes: not read here)
            os.close(keeper.written)
        self._take_reports(reports)
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
        self._take_reports(data)
        return True

    def _take_reports(self, data: bytes) -> None:
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
        if self._pid is not None and self.poll() is None and not self.detach_mode:
            self._status = stop_child(self._pid, grace)
        elif self._pid is not None and self.poll() is None:
            # QEMU is the keeper's child: signalled here, its end told by the keeper.
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

    def continue_lines(self, tail: Iterable[str], partial: bytes, serial_pos: int = 0) -> None:
        """Carry on from console lines read elsewhere (the fast path's relay): the last
        complete ones and the unfinished one; ``serial_pos``: the bytes of the console
        file already read (-d)."""
        self.tail.extend(tail)
        self._partial = partial
        self._serial_pos = serial_pos

    def last_lines(self) -> list[str]:
        lines = list(self.tail)
        if self._partial.strip():
            lines.append(self._partial.decode("utf-8", "replace").strip("\r"))
        return lines[-TAIL_LINES:]

    # -- QMP ---------------------------------------------------------------------------

    def qmp(self) -> Qmp:
        from .qmp import Qmp

        if self.qmp_path is None:
            raise LaunchError("this VM has no QMP socket")
        return Qmp(self.qmp_path)


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
