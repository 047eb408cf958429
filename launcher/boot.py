"""Boot a kernel and image to readiness: the Python API behind ``startnb``.

``boot(config)`` checks everything it can before QEMU starts (QEMU installed, kernel
bootable, image present and not in use, host ports free), starts QEMU, pumps its serial
console through :class:`~launcher.stagescan.StageDetector`, runs the readiness probe, and
returns a :class:`BootResult` with the timing report. QEMU never outlives a failed boot.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from smolfs.errors import InputError

from . import endings, state
from .checks import Prepared, prepare
from .config import LaunchConfig, Ready
from .kernel import KernelInfo
from .qemu import RunPaths, qemu_argv
from .ready import Prober
from .relay import ConsoleOut
from .spawned import Spawned
from .vm import Vm

__all__ = ["BootResult", "Prepared", "boot", "prepare"]

if TYPE_CHECKING:
    from .timing import TimingReport


class BootResult(NamedTuple):
    """What happened: the VM's name (detached), its pid, its exit status (attached)."""

    argv: list[str]
    pid: int | None
    ready: bool
    report: TimingReport
    name: str | None = None
    state_dir: Path | None = None
    exit_status: int | None = None
    kernel: KernelInfo | None = None
    accel_note: str | None = None
    #: QEMU was started by the fast path from a cached plan (see :mod:`launcher.fastpath`).
    fast_path: bool = False
    accel: str | None = None  # the accelerator chosen (kvm, hvf, nvmm, tcg)
    #: How an attached run ended: "halted" (the kernel said so; QEMU stopped), else None.
    guest_end: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "ready": self.ready,
                "exit_status": self.exit_status,
                "state_dir": str(self.state_dir) if self.state_dir else None,
                "timing": self.report.to_json(), "argv": self.argv,
                "kernel": self.kernel.describe() if self.kernel else None,
                "accel": self.accel, "accel_reason": self.accel_note,
                "accel_note": self.accel_note, "fast_path": self.fast_path,
                "guest_end": self.guest_end}


def open_console(config: LaunchConfig, timestamps: bool, exec_time: float) -> ConsoleOut:
    path = config.console.path
    try:
        return ConsoleOut(config.console.kind, str(path) if path else None, timestamps,
                          exec_time)
    except OSError as err:
        raise InputError(f"cannot write the console file {path}: {err.strerror}") from err


def _in_main_thread() -> bool:
    threading = sys.modules.get("threading")  # not imported: there is one thread
    return threading is None or threading.current_thread() is threading.main_thread()


def _raise_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def boot(config: LaunchConfig, *, command_start: float | None = None, name: str | None = None,
         timestamps: bool = False, print_cmd: bool = False,
         on_ready: Callable[[BootResult], None] | None = None,
         prepared: Prepared | None = None, spawned: Spawned | None = None,
         plan_key: tuple[object, ...] | None = None,
         plan_extra: dict[str, object] | None = None) -> BootResult:
    """Boot and wait for readiness; attached runs then wait for QEMU to exit.

    ``config.ready`` None means the default console line ``SERVICE READY``, without a
    timeout unless ``config.timeout`` is set. Raises :class:`ReadyTimeout` (QEMU stopped,
    the last console lines in the message) or :class:`LaunchError`. When QEMU rejects
    ``-cpu host`` before the guest printed anything, boots again with a named CPU model.

    ``spawned``: a QEMU :func:`launcher.fastpath.try_fast` started; adopted when its argv
    is the one computed here, else stopped and replaced. ``plan_key``: save the argv as a
    plan under this key (see :mod:`launcher.fastpath`) for the next identical command;
    ``plan_extra``: what else the plan depends on (``files``: more files to stat,
    ``service``: the image's staleness snapshot), passed to ``make_plan``.
    """
    start = command_start if command_start is not None else time.monotonic()
    prep = prepared or prepare(config, checks=spawned is None)
    if spawned is not None and spawned.nested:  # a plan saved after the fallback below
        prep = prep._replace(host=prep.host._replace(nested=True))
    try:
        return _boot(config, start, prep, name, timestamps, print_cmd, on_ready, spawned,
                     plan_key, plan_extra)
    except endings.CpuModelRejected:
        print("startnb: QEMU rejected -cpu host; using a named CPU model", file=sys.stderr)
        prep = prep._replace(host=prep.host._replace(nested=True))
        return _boot(config, start, prep, name, timestamps, print_cmd, on_ready, None,
                     plan_key, plan_extra)


def _save_plan(key: tuple[object, ...], config: LaunchConfig, prep: Prepared,
               argv: list[str], interactive: bool, ready: Ready, timestamps: bool,
               extra: dict[str, object] | None, rundir: str | None,
               vmdir: state.VmDir | None, vm: Vm, qmp: Path | None) -> None:
    from .fastpath import RUNDIR, make_plan, save_plan

    extra = extra or {}
    files = [str(config.kernel), str(prep.kernel.path), *extra.get("files", ())]  # type: ignore[misc]
    if rundir is not None:  # made afresh for each run (see fastpath.RUNDIR)
        argv = [a.replace(rundir, RUNDIR) for a in argv]
    relay: dict[str, object] | None = None
    # -d: no relay; the launcher's imports overlap the boot, so that the report is ready
    # with the VM (measured: about 70 ms sooner here than deferring them to readiness).
    if ready.kind == "console" and vmdir is None:
        path = config.console.path
        relay = {"console": config.console.kind, "path": str(path) if path else None,
                 "timestamps": timestamps, "pattern": ready.pattern,
                 "timeout": config.timeout}
    image = None
    if config.image is not None:  # its content may change (a read-write root): not stat'ed
        image = (str(config.image), str(config.image.resolve()))
    save_plan(key, make_plan(argv, argv[0], files,
                             [(p.proto, p.host_ip, p.host_port) for p in config.ports],
                             image, config.readonly, interactive, relay,
                             nested=prep.host.nested,
                             service=extra.get("service"),  # type: ignore[arg-type]
                             vmdir=str(vmdir.path) if vmdir is not None else None,
                             detached=detached_template(config, prep, argv, ready, vm, vmdir,
                                                        qmp, extra.get("detached"))))


def detached_template(config: LaunchConfig, prep: Prepared, argv: list[str], ready: Ready,
                      vm: Vm, vmdir: state.VmDir | None, qmp: Path | None,
                      output: object) -> dict[str, object] | None:
    """``-d``: what :func:`launcher.detached.finish` needs to report the next identical
    run as this one will be reported: the result and the manifest as :func:`boot` makes
    them (pid, start and timing filled in then; ``image`` as given, resolved then), the
    readiness rule, the timeout, the QMP
    socket, and ``output`` (from the command: ``json``, and ``notes``, the lines it printed
    before the boot). None when the run is not detached, keeps a console, or has no
    ``output``."""
    if vmdir is None or config.console.kind != "none" or not isinstance(output, dict):
        return None
    from .stagescan import StageDetector
    from .timing import report

    guest = next((p.guest_port for p in config.ports
                  if p.proto == "tcp" and p.host_port == ready.port), 0)
    result = BootResult(argv, None, True, report(0.0, StageDetector()), name=vmdir.name,
                        state_dir=vmdir.path, kernel=prep.kernel, accel_note=prep.accel_note,
                        fast_path=True, accel=prep.accel)
    return {"result": result.to_json(),
            "manifest": _manifest(vmdir, vm, config, argv, ready=False),
            "image": str(config.image) if config.image else None,
            "ready": {"kind": ready.kind, "pattern": ready.pattern, "port": ready.port,
                      "path": ready.path, "guest_port": guest},
            "qmp": str(qmp) if qmp is not None else None, "timeout": config.timeout,
            "json": bool(output.get("json")), "notes": list(output.get("notes", ()))}


def _boot(config: LaunchConfig, start: float, prep: Prepared, name: str | None,
          timestamps: bool, print_cmd: bool,
          on_ready: Callable[[BootResult], None] | None, spawned: Spawned | None,
          plan_key: tuple[object, ...] | None,
          plan_extra: dict[str, object] | None = None) -> BootResult:
    vmdir: state.VmDir | None = None
    tmpdir: str | None = None
    ready = config.ready or Ready("console", pattern="SERVICE READY")
    if config.detach and not print_cmd:
        if spawned is not None and spawned.vmdir is not None:  # made by the fast path
            vmdir = state.VmDir(os.path.basename(spawned.vmdir), Path(spawned.vmdir))
            spawned.vmdir = None  # this run's now, whether it adopts that QEMU or not
        else:
            stem = config.image.stem if config.image else config.kernel.stem
            vmdir = state.create(name, stem)
        paths = RunPaths(pidfile=vmdir.pidfile, qmp=vmdir.qmp, serial_log=vmdir.serial_log)
    elif ready.kind == "tcp" and not print_cmd:
        if spawned is not None and spawned.rundir is not None:  # made by the fast path
            tmpdir, spawned.rundir = spawned.rundir, None
        else:
            import tempfile

            tmpdir = tempfile.mkdtemp(prefix="startnb-")
        paths = RunPaths(qmp=Path(tmpdir) / "qmp.sock")
    else:
        paths = RunPaths()
    if not config.detach and config.console.kind == "stdio" and sys.stdin.isatty():
        paths = paths._replace(interactive=True)
    argv = qemu_argv(config, prep.host, prep.kernel, paths)
    if print_cmd:
        from .timing import StageDetector, report

        print(shlex.join(argv))
        return BootResult(argv, None, False, report(start, StageDetector()),
                          kernel=prep.kernel, accel_note=prep.accel_note, accel=prep.accel)
    vm = Vm(argv, serial_log=paths.serial_log, qmp=paths.qmp,
            qemu_log=vmdir.qemu_log if vmdir else None, detach=config.detach,
            interactive=paths.interactive, state_dir=vmdir.path if vmdir else None)
    console = None
    prober = None
    wake_r, wake_w = os.pipe()
    is_ready = detached = False
    old_handlers = {}
    if _in_main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old_handlers[sig] = signal.signal(sig, _raise_on_signal)
    try:
        fast = spawned is not None and spawned.argv == argv
        if fast and spawned is not None and spawned.keeper is not None:  # -d: its keeper
            keeper, spawned.keeper, spawned.adopted = spawned.keeper, None, True
            vm.adopt_keeper(keeper, spawned.keeper_reports)
        elif fast:
            assert spawned is not None and spawned.argv == vm.argv
            spawned.adopted = True  # (logged under --debug when it was started)
            vm.adopt(spawned.pid, spawned.exec_time, spawned.started, spawned.stdout,
                     spawned.stderr, spawned.stderr_data)
        else:
            if spawned is not None:
                spawned.kill()  # (and closes the console output its relay opened)
            vm.start()
        # Saved once QEMU is seen alive (its first console byte, or ready), not before: a
        # QEMU that rejects its argv leaves no plan behind.
        save_key = plan_key if not fast else None
        if vmdir is not None and vmdir.name != (name or _first_name(config)):
            save_key = None  # web-2 because web was taken: the next run would pick web
        from .timing import StageDetector, report  # after the exec: not on QEMU's path

        det = StageDetector()
        if fast and spawned is not None and spawned.seen is not None:
            det = spawned.seen.detector  # what the relay saw (already relayed)
            vm.continue_lines(spawned.seen.tail, spawned.seen.partial, spawned.serial_pos)
            if spawned.ready_at is not None and det.mark("ready", spawned.ready_at):
                is_ready = True
        det.mark("exec", vm.exec_time)
        if spawned is not None and fast and spawned.console is not None:
            console = spawned.console
        else:
            console = open_console(config, timestamps, vm.exec_time)
        if vmdir is not None:
            vmdir.write_manifest(_manifest(vmdir, vm, config, argv, ready=False))
        pattern = re.compile(ready.pattern) if ready.kind == "console" else None
        if ready.kind != "console":
            guest = next(p.guest_port for p in config.ports
                         if p.proto == "tcp" and p.host_port == ready.port)
            prober = Prober(ready, guest, paths.qmp, wake_w)
            prober.start()
        deadline = start + config.timeout if config.timeout else None
        while not is_ready:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                endings.timeout(vm, config, ready)
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - now))
            if prober is not None:
                import select

                r, _, _ = select.select([wake_r], [], [], 0)
                if r or prober.at is not None:
                    det.mark("ready", prober.at or time.monotonic())
                    is_ready = True
                    break
            for t, chunk in vm.read_console(wait if prober is None else min(wait, 0.005)):
                det.feed_bytes(t)
                if save_key is not None:  # QEMU is alive: its first console byte
                    _save_plan(save_key, config, prep, argv, paths.interactive, ready,
                               timestamps, plan_extra, tmpdir, vmdir, vm, paths.qmp)
                    save_key = None
                console.write(t, chunk)
                for line in vm.split_lines(chunk):
                    det.feed_line(t, line)
                    if pattern is not None and pattern.search(line) and det.mark("ready", t):
                        is_ready = True
            if det.end is not None and (not is_ready or det.end[0] == "panic"):
                endings.guest_ended(vm, det, console, ready_seen=is_ready)
            if not is_ready and vm.poll() is not None:
                # QEMU is gone; what it wrote last may still be in the pipe, and may be
                # the ready line (a guest that prints it and powers off at once).
                is_ready = endings.drain(vm, det, console, pattern)
                if not is_ready:
                    if det.exited() is not None:  # a panic that reset the machine, say
                        endings.guest_ended(vm, det, console, ready_seen=False)
                    endings.exited(vm, config, first_byte="first_byte" in det.times)
        if det.end is not None and (not is_ready or det.end[0] == "panic"):
            endings.guest_ended(vm, det, console, ready_seen=is_ready)  # seen by the relay
        if save_key is not None:  # ready without a console byte (a port answered)
            _save_plan(save_key, config, prep, argv, paths.interactive, ready, timestamps,
                       plan_extra, tmpdir, vmdir, vm, paths.qmp)
        result = BootResult(argv, vm.pid, True, report(start, det),
                            name=vmdir.name if vmdir else None,
                            state_dir=vmdir.path if vmdir else None, kernel=prep.kernel,
                            accel_note=prep.accel_note, fast_path=fast,
                            accel=prep.accel)
        if vmdir is not None:
            vmdir.write_manifest(_manifest(vmdir, vm, config, argv, ready=True,
                                           timing=result.report.to_json()))
        if on_ready is not None:
            on_ready(result)
        if config.detach:
            vm.detach()
            detached = True
            if prober is not None:
                prober.stop.set()
                prober.join()
            return result
        while det.end is None and (vm.poll() is None or vm.console_open):
            for t, chunk in vm.read_console(0.2):
                console.write(t, chunk)
                for line in vm.split_lines(chunk):
                    det.feed_line(t, line)
            if not vm.console_open:
                vm.wait()
        if det.end is not None:  # a halted guest's QEMU runs on: stop it; a panic fails
            endings.guest_ended(vm, det, console, ready_seen=True)
            return result._replace(exit_status=0, guest_end="halted")
        return result._replace(exit_status=vm.poll())
    finally:
        if prober is not None:
            prober.stop.set()
        if not detached:  # a failure, a timeout, Ctrl-C, or an attached run ending
            vm.kill()
            if vmdir is not None:
                state.remove(vmdir)
        vm.close()
        if console is not None:
            console.close()
        os.close(wake_r)
        os.close(wake_w)
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def _first_name(config: LaunchConfig) -> str:
    """The name :func:`launcher.state.create` tries first for a VM without ``--name``."""
    stem = config.image.stem if config.image else config.kernel.stem
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem)[:30] or "vm"


def _manifest(vmdir: state.VmDir, vm: Vm, config: LaunchConfig, argv: list[str], *,
              ready: bool, timing: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "name": vmdir.name, "pid": vm.pid, "started": vm.started, "ready": ready,
        "kernel": str(config.kernel),
        "image": str(config.image.resolve()) if config.image else None,
        "readonly": config.readonly, "ports": [str(p) for p in config.ports],
        "argv": argv, "timing": timing,
    }

