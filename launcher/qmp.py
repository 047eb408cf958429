"""QMP, QEMU's control socket: a minimal client, and stopping a QEMU the launcher did not
start (``startnb stop``: ACPI power-down, then SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from smolfs.errors import LaunchError


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
