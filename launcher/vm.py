"""A running QEMU: start it, pump its serial console, talk QMP, stop it, never orphan it.

Attached runs give QEMU ``PR_SET_PDEATHSIG`` (SIGKILL) so even a killed launcher takes QEMU
down; Ctrl-C, SIGTERM, a timeout or an exception go through :meth:`Vm.kill` in a
``finally``. Detached runs put QEMU in its own session and leave it running only once it
is ready.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from smolfs.errors import LaunchError

#: Lines of console kept for error messages.
TAIL_LINES = 15


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


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL QEMU when the launcher dies."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)


class Vm:
    """One QEMU process and its console stream."""

    def __init__(self, argv: list[str], *, serial_log: Path | None = None,
                 qmp: Path | None = None, qemu_log: Path | None = None,
                 detach: bool = False, interactive: bool = False) -> None:
        self.argv = argv
        self.interactive = interactive
        self.serial_log = serial_log
        self.qmp_path = qmp
        self.qemu_log = qemu_log
        self.detach = detach
        self.proc: subprocess.Popen[bytes] | None = None
        self.exec_time = 0.0
        self.started = 0.0
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._stderr = b""
        self._console_fd: int | None = None
        self._serial_pos = 0

    # -- lifetime ----------------------------------------------------------------------

    def start(self) -> None:
        stderr: int | object = subprocess.PIPE
        log = None
        if self.qemu_log is not None:
            log = open(self.qemu_log, "wb")  # noqa: SIM115
            stderr = log
        preexec = None
        if self.detach:
            stdout: int | object = log if log is not None else subprocess.DEVNULL
        else:
            stdout = subprocess.PIPE
            if sys.platform.startswith("linux"):  # elsewhere: the finally blocks only
                import ctypes  # noqa: F401  (loaded before fork: the child only calls prctl)

                preexec = _die_with_parent
        from smolfs import cli

        if cli.DEBUG:
            import shlex

            print("+ " + shlex.join(self.argv), file=sys.stderr, flush=True)
        self.exec_time = time.monotonic()
        self.started = time.time()
        try:
            stdin = None if self.interactive else subprocess.DEVNULL
            self.proc = subprocess.Popen(self.argv, stdin=stdin, stdout=stdout,
                                         stderr=stderr, start_new_session=True,
                                         preexec_fn=preexec, close_fds=True)
        except FileNotFoundError as err:
            raise LaunchError(f"{self.argv[0]} not found",
                              hint="install QEMU: apt-get install qemu-system-x86") from err
        finally:
            if log is not None:
                log.close()
        if self.proc.stdout is not None:
            self._console_fd = self.proc.stdout.fileno()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait(self) -> int | None:
        return self.proc.wait() if self.proc else None

    @property
    def console_open(self) -> bool:
        """QEMU's stdout (the console of an attached run) has not reached end of file."""
        return self._console_fd is not None

    def kill(self, grace: float = 1.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; wait for the process."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            return self.proc.wait()

    def stderr_text(self) -> str:
        if self.qemu_log is not None:
            with contextlib.suppress(OSError):
                return self.qemu_log.read_text(errors="replace")
        return self._stderr.decode(errors="replace")

    # -- console -----------------------------------------------------------------------

    def read_console(self, timeout: float) -> list[tuple[float, bytes]]:
        """Wait up to ``timeout`` for console output; (arrival time, chunk) pairs."""
        assert self.proc is not None
        if self.serial_log is not None:
            return self._read_serial_file(timeout)
        fds = [fd for fd in (self._console_fd,
                             self.proc.stderr.fileno() if self.proc.stderr else None)
               if fd is not None]
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
                    self._console_fd = None
            elif data:
                self._stderr = (self._stderr + data)[-8192:]
            else:
                assert self.proc.stderr is not None
                self.proc.stderr.close()
                self.proc.stderr = None
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
            if left <= 0 or self.proc is None or self.proc.poll() is not None:
                return []
            time.sleep(min(0.002, left))

    def split_lines(self, data: bytes) -> list[str]:
        """Complete lines (without line ends) from a console chunk; keeps the tail line."""
        buf = self._partial + data
        *lines, self._partial = buf.split(b"\n")
        out = [line.decode("utf-8", "replace").strip("\r") for line in lines]
        self.tail.extend(out)
        return out

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


def stop_pid(pid: int, qmp_path: Path | None, grace: float, force: bool,
             alive: Callable[[int], bool]) -> str:
    """Stop a QEMU we did not start: ACPI power-down over QMP, SIGTERM, then SIGKILL.

    Returns how it ended: "powerdown", "sigterm" or "sigkill".
    """

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.02)
        return not alive(pid)

    if not force:
        if qmp_path is not None and qmp_path.exists():
            try:
                with Qmp(qmp_path) as q:
                    q.execute("system_powerdown")
            except (OSError, ConnectionError, LaunchError, ValueError):
                pass
            else:
                if wait(grace):
                    return "powerdown"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if wait(2.0):
            return "sigterm"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait(2.0)
    return "sigkill"


def check_host_port(proto: str, host_ip: str, port: int) -> None:
    """Raise :class:`LaunchError` if the host port cannot be bound (as QEMU would)."""
    import socket

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip, port))
        except OSError as err:
            raise LaunchError(
                f"host port {proto}:{host_ip}:{port} is not available: {err.strerror}",
                hint="pick another host port with -p HOSTPORT:GUESTPORT "
                "(see who holds it: ss -ltnp)") from err


def image_locked(image: Path) -> bool:
    """Does another process (a QEMU) hold a lock on ``image``?

    QEMU takes open-file-description locks on bytes 100-355 of every image it opens; any
    conflicting lock there means another VM uses the image.
    """
    import fcntl
    import struct

    getlk = getattr(fcntl, "F_OFD_GETLK", None)
    if getlk is None:
        return False
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        req = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 100, 256, 0)
        res = fcntl.fcntl(fd, getlk, req)
        return struct.unpack("hhqqi4x", res)[0] != fcntl.F_UNLCK
    except OSError:
        return False
    finally:
        os.close(fd)
