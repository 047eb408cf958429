"""``startnb -d`` from its plan to its ready report, without the ordinary path.

A plan saved by a detached run carries that run's report (``detached``: the result and the
manifest it wrote, its readiness rule, timeout and first lines; see
:func:`launcher.boot.detached_template`). :func:`finish` follows the console file and the
probe itself and, once ready, writes the manifest, prints the report and leaves QEMU to its
keeper. Anything else is handed to the ordinary path with what was seen.
"""

from __future__ import annotations

import os
import sys
import time

from . import manifest

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from .spawned import Spawned

#: How often the console file is read while waiting for readiness (seconds), where the
#: keeper cannot tell of its writes (:func:`launcher.keeper._watch_writes`).
POLL = 0.001
#: The longest wait for news of a write to the console file (then the deadline is
#: checked).
WAIT = 0.05


class _Rule:
    """A plan's readiness rule, with the attributes :class:`launcher.ready.Prober` reads."""

    def __init__(self, rule: dict[str, object]) -> None:
        self.kind = str(rule["kind"])
        self.pattern = str(rule["pattern"])
        self.port = int(rule["port"])  # type: ignore[call-overload]
        self.path = str(rule["path"])
        self.guest_port = int(rule["guest_port"])  # type: ignore[call-overload]


def _qemu_pid(reports: bytes) -> int | None:
    """QEMU's pid from the keeper's reports; -1 when they say anything else (QEMU's exit,
    an error, a signal): the ordinary path reports those."""
    pid = None
    for line in reports.split(b"\n"):
        word, _, value = line.partition(b" ")
        if word == b"pid":
            pid = int(value)
        elif word:
            return -1
    return pid


def finish(spawned: Spawned, command_start: float,
           report: Callable[[dict[str, object], str, bool], None]) -> bool:
    """Follow the detached QEMU ``spawned`` (started by the fast path from a plan with a
    ``detached`` template) to readiness; then write its manifest, call ``report(result,
    human report, as JSON)`` and detach. True when done. False when handed over (QEMU's or
    the keeper's end, a panic or halt before ready, the deadline, an error):
    ``spawned.seen``, ``.serial_pos``, ``.ready_at`` and ``.keeper_reports`` then hold what
    was seen, for the ordinary path."""
    plan, keeper, vmdir = spawned.detached, spawned.keeper, spawned.vmdir
    assert plan is not None and keeper is not None and vmdir is not None
    import re

    from .keeper import hear
    from .relay import ConsoleSeen
    from .timing import report as timing_report

    try:  # a plan of another shape: the ordinary path, as for any unusable plan
        rule = _Rule(plan["ready"])  # type: ignore[arg-type]
        pattern = re.compile(rule.pattern) if rule.kind == "console" else None
        record = dict(plan["manifest"])  # type: ignore[call-overload]
        if plan["image"] is not None:  # resolved now: a link retargeted since counts
            record["image"] = os.path.realpath(str(plan["image"]))
        notes = [str(line) for line in plan["notes"]]  # type: ignore[attr-defined]
        timeout = plan["timeout"]
        result = dict(plan["result"])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError, re.error):
        return False
    for line in notes:
        print(line, file=sys.stderr, flush=True)
    spawned.notes_said = True
    seen = spawned.seen = ConsoleSeen()
    det = seen.detector
    det.mark("exec", spawned.exec_time)
    if spawned.first_byte_at is not None:
        det.feed_bytes(spawned.first_byte_at)
    deadline = command_start + timeout if isinstance(timeout, (int, float)) else None
    prober = None
    wake_r = wake_w = -1
    fd = -1
    told = keeper.written >= 0  # the keeper tells of the console file's writes
    pid: int | None = None
    ready_at: float | None = None
    try:
        if rule.kind != "console":
            from .ready import Prober

            wake_r, wake_w = os.pipe()
            qmp = plan["qmp"]
            prober = Prober(rule, rule.guest_port, qmp, wake_w)  # type: ignore[arg-type]
            prober.start()
        while True:
            if pid is None:
                pid = _qemu_pid(spawned.keeper_reports)
                if pid == -1:
                    return False
                if pid is not None:  # as the ordinary path writes it once QEMU runs
                    manifest.write(vmdir, {**record, "pid": pid, "started": spawned.started,
                                           "ready": False, "timing": None})
            if fd < 0:
                try:  # noqa: SIM105 (contextlib costs milliseconds)
                    fd = os.open(os.path.join(vmdir, "serial.log"), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    pass
            data = os.read(fd, 65536) if fd >= 0 else b""
            if data:
                t = time.monotonic()
                spawned.serial_pos += len(data)
                lines = seen.feed(t, data)
                if pattern is not None and any(pattern.search(line) for line in lines):
                    ready_at = t
            if prober is not None and prober.at is not None:
                ready_at = prober.at
            if det.end is not None and (ready_at is None or det.end[0] == "panic"):
                return False  # the guest ended (a panic, a halt): the ordinary path says so
            if ready_at is not None and pid is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False  # the ordinary path reports the timeout
            if len(data) == 65536:
                continue
            # woken by news of a write (or told none will come: poll), the probe, the keeper
            woke, told = hear(keeper, told, WAIT if told else POLL,
                              (wake_r,) if prober is not None else ())
            if keeper.report in woke:
                got = os.read(keeper.report, 256)
                spawned.keeper_reports += got
                if not got:
                    return False  # the keeper is gone
        det.mark("ready", ready_at)
        timing = timing_report(command_start, det)
        manifest.write(vmdir, {**record, "pid": pid, "started": spawned.started,
                               "ready": True, "timing": timing.to_json()}, image_file=False)
        result.update(pid=pid, timing=timing.to_json())
        report(result, timing.human(), bool(plan["json"]))
        os.write(keeper.ctl, b"d")
        for end in (keeper.ctl, keeper.report, keeper.written):
            if end >= 0:
                os.close(end)
        spawned.keeper = None
        spawned.adopted = True
        spawned.vmdir = None  # the VM's now, not this run's to remove
        return True
    finally:
        if spawned.keeper is not None:
            spawned.ready_at = ready_at
        if prober is not None:
            prober.stop.set()
            prober.join()
        for end in (fd, wake_r, wake_w):
            if end >= 0:
                os.close(end)
