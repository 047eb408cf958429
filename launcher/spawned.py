"""The QEMU the fast path started (:class:`Spawned`), handed to the ordinary path to adopt
or to stop, and :func:`relay_until_ready`, all that runs of the launcher between its exec
and its ready line. Kept to ``os``, ``time`` and :mod:`launcher.proc` at
module level: :mod:`launcher.fastpath` imports it before QEMU starts."""

from __future__ import annotations

import os
import time

from .proc import stop_child

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from .keeper import Keeper
    from .relay import ConsoleOut, ConsoleSeen


class Spawned:
    """A QEMU started by :func:`launcher.fastpath.try_fast`, handed to the ordinary path to
    adopt."""

    def __init__(self, pid: int, argv: list[str], exec_time: float, started: float,
                 stdout: int, stderr: int, interactive: bool,
                 relay: dict[str, object] | None = None, nested: bool = False) -> None:
        self.pid = pid
        self.argv = argv
        self.exec_time = exec_time
        self.started = started
        self.stdout = stdout
        self.stderr = stderr
        self.interactive = interactive
        #: The plan's argv names a CPU model because QEMU rejected ``-cpu host``.
        self.nested = nested
        self.adopted = False
        #: Filled by :func:`launcher.relay.relay_until_ready` when the plan has ``relay``.
        self.relay = relay
        self.console: ConsoleOut | None = None  # the console output already written to
        self.seen: ConsoleSeen | None = None  # what the relay saw: stages, last lines
        self.stderr_data = b""
        self.ready_at: float | None = None
        #: The private directory :data:`launcher.fastpath.RUNDIR` stands for in the plan's
        #: argv, if any.
        self.rundir: str | None = None
        #: ``-d``: the VM's state directory and the keeper that starts QEMU (no pipes
        #: then: the console is a file in that directory; ``pid`` is unknown until the
        #: keeper's first report, read when it is adopted).
        self.vmdir: str | None = None
        self.keeper: Keeper | None = None
        #: What was read of the keeper's report pipe already (``pid N``, ...).
        self.keeper_reports = b""
        #: ``-d``: the plan's report of a detached run (:mod:`launcher.detached`), and how
        #: much of the console file was read on the way to readiness.
        self.detached: dict[str, object] | None = None
        self.serial_pos = 0
        #: ``-d``: when the fast path saw the console file's first byte.
        self.first_byte_at: float | None = None
        #: The lines the command prints before the boot were printed (by the fast path).
        self.notes_said = False

    def kill(self, grace: float = 1.0) -> None:
        """Stop and reap this QEMU (it was not adopted): SIGTERM, which lets QEMU put the
        terminal back as it found it, then SIGKILL after ``grace`` seconds. Closes its
        pipes and the console output the relay opened; removes its private directory."""
        import contextlib

        if self.keeper is not None:  # -d: through its keeper
            from .vm import Vm

            vm = Vm(self.argv, detach=True)
            keeper, self.keeper = self.keeper, None
            self.adopted = True
            try:
                vm.adopt_keeper(keeper, self.keeper_reports)
            except Exception:  # QEMU did not start: the keeper is reaped already
                pass
            else:
                vm.kill(grace)
            vm.close()
            self.remove_dirs()
            return
        stop_child(self.pid, grace)
        for fd in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.console is not None:
            with contextlib.suppress(OSError):
                self.console.close()
            self.console = None
        self.adopted = True  # nothing left to clean up
        self.remove_dirs()

    def remove_dirs(self) -> None:
        """Remove the run's private directory and the state directory made for it."""
        for d in (self.rundir, self.vmdir):
            if d is None:
                continue
            try:
                for name in os.listdir(d):
                    os.unlink(os.path.join(d, name))
                os.rmdir(d)
            except OSError:
                pass
        self.rundir = self.vmdir = None


def relay_until_ready(spawned: Spawned, relay: dict[str, object],
                      command_start: float) -> None:
    """Relay the console of ``spawned`` until its ready line, QEMU's exit, the guest's end
    (a panic or a halt: ``spawned.seen.detector.end``), or the timeout.

    ``relay``: ``console`` (kind), ``path``, ``timestamps``, ``pattern`` (the ready regex),
    ``timeout`` (seconds from ``command_start``, or None). Fills ``spawned.console``,
    ``.seen`` (stages and last lines, see :class:`ConsoleSeen`), ``.stderr_data`` and
    ``.ready_at``.
    """
    import re
    import select

    from .relay import ConsoleOut, ConsoleSeen

    path = relay["path"]
    out = ConsoleOut(str(relay["console"]), path if isinstance(path, str) else None,
                     bool(relay["timestamps"]), spawned.exec_time)
    spawned.console = out
    seen = spawned.seen = ConsoleSeen()
    ready = re.compile(str(relay["pattern"]))
    timeout = relay["timeout"]
    deadline = command_start + timeout if isinstance(timeout, (int, float)) else None
    fds = [spawned.stdout, spawned.stderr]
    while fds:
        wait = 0.5
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return
        for fd in select.select(fds, [], [], wait)[0]:
            data = os.read(fd, 65536)
            t = time.monotonic()
            if fd == spawned.stderr:
                if data:
                    spawned.stderr_data = (spawned.stderr_data + data)[-8192:]
                else:
                    fds.remove(fd)
                continue
            if not data:
                return  # QEMU closed its console: it is exiting
            out.write(t, data)
            if any(ready.search(line) for line in seen.feed(t, data)):
                spawned.ready_at = t
                return
            if seen.detector.end is not None:
                return  # a panic, or a halt: launcher.boot reacts
