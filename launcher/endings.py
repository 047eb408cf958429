"""How a boot ends before its service is ready, or an attached run at its end: a timeout,
QEMU exiting, the guest halting or panicking; each stops QEMU and raises the error that
says what happened, with the console's last lines."""

from __future__ import annotations

import re
import sys
import time

from smolfs.errors import GuestEnded, LaunchError, ReadyTimeout

from .config import LaunchConfig, Ready
from .relay import ConsoleOut
from .tending import PANIC_GRACE
from .vm import Vm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .stagescan import StageDetector


class CpuModelRejected(Exception):
    """QEMU refused ``-cpu host`` (seen on nested hosts: ``failed to set MSR``)."""


def drain(vm: Vm, det: StageDetector, console: ConsoleOut,
           pattern: re.Pattern[str] | None) -> bool:
    """Relay what an exited QEMU left in the console pipe; whether it held the ready line."""
    ready = False
    for t, chunk in vm.read_console(0.05):
        console.write(t, chunk)
        for line in vm.split_lines(chunk):
            det.feed_line(t, line)
            if pattern is not None and pattern.search(line) and det.mark("ready", t):
                ready = True
    return ready


def guest_ended(vm: Vm, det: StageDetector, console: ConsoleOut, ready_seen: bool) -> None:
    """The console said the guest ended (``det.end``): stop QEMU. A panic raises
    :class:`GuestEnded` with its line, after the console's last lines; so does a halt
    before the service was ready. A halt after it returns (the attached run's end)."""
    from .stagescan import DEBUGGER_PROMPT

    assert det.end is not None
    kind, line = det.end
    if kind == "panic":
        deadline = time.monotonic() + PANIC_GRACE
        while time.monotonic() < deadline and vm.poll() is None:
            last = vm.last_lines()
            if last and re.search(DEBUGGER_PROMPT, last[-1]):
                break
            for t, chunk in vm.read_console(0.05):
                console.write(t, chunk)
                vm.split_lines(chunk)
    vm.kill()
    if kind == "halted" and ready_seen:
        print("startnb: the guest halted; QEMU stopped", file=sys.stderr)
        return
    print(f"startnb: last console lines:\n{tail_text(vm)}", file=sys.stderr)
    if kind == "panic":
        raise GuestEnded(f"the guest's kernel panicked ({line.strip()}); QEMU stopped",
                         hint="the console's last lines are above; a GENERIC kernel may "
                         "boot once stripped (startnb --strip, or kstrip)")
    raise GuestEnded("the guest halted before the service was ready; QEMU stopped",
                     hint="the console's last lines are above (a failing /etc/rc?)")


def tail_text(vm: Vm) -> str:
    lines = vm.last_lines()
    return "\n".join(f"  | {line}" for line in lines) if lines else "  (no console output)"


def timeout(vm: Vm, config: LaunchConfig, ready: Ready) -> None:
    vm.kill()
    print(f"startnb: last console lines:\n{tail_text(vm)}", file=sys.stderr)
    raise ReadyTimeout(f"not ready after {config.timeout:g} s (waiting for --ready {ready}); "
                       "QEMU stopped",
                       hint="raise --timeout, or check the service with --console stdio")


def exited(vm: Vm, config: LaunchConfig, first_byte: bool) -> None:
    status = vm.poll()
    if vm.lost_keeper:  # a detached VM's keeper died or was signalled: QEMU is gone too
        raise LaunchError(f"{vm.lost_keeper}; QEMU stopped")
    err = vm.stderr_text().strip()
    cpu = vm.argv[vm.argv.index("-cpu") + 1] if "-cpu" in vm.argv else None
    if cpu == "host" and not first_byte and re.search(r"MSR|-cpu host|CPU model", err):
        raise CpuModelRejected(err)
    if re.search(r'Failed to get ".*" lock', err) and config.image is not None:
        raise LaunchError(f"image {config.image} is locked by another VM",
                          hint="stop that VM, or boot with --ro to share the image read-only")
    print(f"startnb: last console lines:\n{tail_text(vm)}", file=sys.stderr)
    last = err.splitlines()[-1] if err else "no message"
    raise LaunchError(f"QEMU exited with status {status} before the service was ready: {last}")
