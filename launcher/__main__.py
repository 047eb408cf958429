"""``startnb``: boot a NetBSD kernel and image under QEMU, wait for the service, time it."""

from __future__ import annotations

import time

_START = time.monotonic()

import sys  # noqa: E402

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence

    from smolfs.cli import Parser

    from .spawned import Spawned

USAGE = "startnb [options] [KERNEL | SERVICE] [IMAGE]\n       startnb ps | stop NAME | logs NAME"
EPILOG = """\
examples:
  startnb netbsd root.img                      boot, console on the terminal
  startnb -k netbsd -i root.img -p 8080:80 --ready http:8080/ --timeout 10
  startnb -d --name web -k netbsd -i web.img --ro -p 8080:80 --ready http:8080
  startnb ps; startnb logs web -f; startnb stop web
  startnb --print-cmd netbsd root.img          show the QEMU command line only
  startnb rescue -k netbsd                     build the 'rescue' service image, boot it

readiness (--ready): console:REGEX (a console line matches), http:PORT[/PATH] (the guest
answers an HTTP request on forwarded host PORT), tcp:PORT (the guest accepts or sends a
banner). Default: the service's READY line (service.conf) for SERVICE, else
console:SERVICE READY.
"""
VERBS = ("ps", "stop", "logs")
#: Set by :func:`main` when a detached run was reported ready from its plan
#: (:mod:`launcher.detached`) and its output flushed: nothing is left for the interpreter's
#: teardown, which ``bin/startnb`` then skips.
NOTHING_LEFT = False


def _formatter(prog: str) -> object:
    """argparse's help layout at the terminal's width, found without importing shutil
    (argparse builds a formatter for every option it declares: milliseconds of start-up)."""
    import argparse
    import os

    try:
        width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(1).columns
    except (ValueError, OSError):
        width = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width, 40) - 2)


def _boot_parser() -> Parser:
    from smolfs.cli import Parser, add_common

    p = Parser(prog="startnb", usage=USAGE, description=__doc__, epilog=EPILOG,
               formatter_class=_formatter)
    add_common(p)
    p.add_argument("target", nargs="?", metavar="KERNEL|SERVICE",
                   help="kernel file, or the name of a service to build and boot")
    p.add_argument("image_pos", nargs="?", metavar="IMAGE", help="root disk image")
    p.add_argument("-k", "--kernel",
                   help="kernel file (ELF with PVH entry or multiboot, or an arm64 Image; .gz "
                   "ok); with SERVICE also a kernel name of the release to fetch (GENERIC, "
                   "the default; GENERIC64 on aarch64)")
    p.add_argument("-i", "--image", help="root disk image (raw)")
    p.add_argument("-m", "--memory", type=int, default=256, metavar="MB", help="RAM (256)")
    p.add_argument("-c", "--cpus", type=int, default=1, help="virtual CPUs (1)")
    p.add_argument("-p", "--port", action="append", default=[],
                   metavar="[tcp|udp:][HOSTIP:]HPORT:GPORT",
                   help="forward a host port (binds 127.0.0.1 unless told); repeatable")
    p.add_argument("-N", "--no-network", action="store_true", help="no network card")
    p.add_argument("--tap", metavar="IF", help="network on host tap interface IF")
    p.add_argument("-a", "--append", action="append", default=[], metavar="ARGS",
                   help="extra kernel arguments (e.g. -a smoltest.x or --append=-v)")
    p.add_argument("-r", "--root", metavar="ROOTDEV",
                   help="root device (ld0a; ld4a for aarch64 kernels)")
    p.add_argument("--ro", action="store_true",
                   help="attach the image read-only (several VMs can share it)")
    p.add_argument("--strip", action="store_true",
                   help="disable the kernel drivers a VM does not need (kstrip; cached)")
    p.add_argument("--console", default=None, metavar="stdio|file:PATH|none",
                   help="where the serial console goes (stdio; none with -d or --json)")
    p.add_argument("--timestamps", action="store_true",
                   help="prefix console lines with seconds since QEMU started")
    p.add_argument("--ready", metavar="SPEC", help="console:REGEX | http:PORT[/PATH] | tcp:PORT")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up (and stop QEMU) when not ready in time (default: none; "
                   "30 with -d)")
    p.add_argument("-d", "--detach", action="store_true",
                   help="leave the VM running once ready; see 'startnb ps'")
    p.add_argument("--name", help="name of a detached VM (default: from the image)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "hvf", "nvmm", "tcg"),
                   help="auto: the host's accelerator when it runs the guest (hardware KVM "
                   "on Linux, HVF on macOS, NVMM on NetBSD), else TCG")
    p.add_argument("--machine", default="auto", choices=("auto", "microvm", "pc", "virt"),
                   help="auto: virt for aarch64 kernels, microvm for PVH kernels with "
                   "virtio-mmio, else pc")
    from smolfs.image.options import STARTNB, add_arguments

    add_arguments(p.add_argument_group("building a SERVICE (smolfs build)"), STARTNB)
    p.add_argument("--qemu-arg", action="append", default=[], metavar="ARG",
                   help="extra QEMU argument, appended as is; repeatable")
    p.add_argument("--print-cmd", action="store_true", help="print the QEMU command, run nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return p


def _looks_like_service(target: str, services_dir: str | None) -> bool:
    """A name (not an existing file) of a service: ``<services dir>/<name>/``."""
    import os
    import re

    if os.path.exists(target) or not re.fullmatch(r"[a-z][a-z0-9_-]*", target):
        return False
    if services_dir is None:
        from services import shipped_dir

        services_dir = str(shipped_dir())
    return os.path.isdir(os.path.join(services_dir, target))


def _service_ready(service: str, ready: str, ports: Sequence[str]) -> str:
    """``--ready`` from a service's ``READY=``: a console line, or ``http:GUESTPORT[/PATH]``
    / ``tcp:GUESTPORT`` probed through the host port ``-p`` forwards to that guest port."""
    import re

    m = re.fullmatch(r"(http|tcp):(\d+)(/\S*)?", ready)
    if m is None:
        return f"console:{ready}"
    from smolfs.errors import UsageError

    from . import config as cfg

    guest = int(m[2])
    for spec in ports:
        p = cfg.parse_port(spec)
        if p.proto == "tcp" and p.guest_port == guest:
            return f"{m[1]}:{p.host_port}{m[3] or ''}"
    raise UsageError(f"service {service} is ready when guest port {guest} answers "
                     f"({ready}), and no -p forwards it",
                     hint=f"add -p HOSTPORT:{guest}, e.g. -p 8080:{guest}")


def _boot(argv: Sequence[str], plan_key: tuple[object, ...] | None = None,
          spawned: Spawned | None = None, pending: BaseException | None = None) -> int:
    if pending is not None:  # raised by the fast path's relay: reported like any error
        raise pending
    from pathlib import Path

    from smolfs.errors import UsageError

    from . import config as cfg

    args = _boot_parser().parse_args(argv)
    kernel, image, service = args.kernel, args.image, None
    positionals = [a for a in (args.target, args.image_pos) if a is not None]
    if kernel is None and positionals:
        first = positionals.pop(0)
        if _looks_like_service(first, args.services_dir):
            service = first
        else:
            kernel = first
    elif positionals and _looks_like_service(positionals[0], args.services_dir):
        service = positionals.pop(0)  # (-k: the kernel to boot it with; -i: its image)
    if positionals:
        if image is not None:
            raise UsageError("the image is given twice (positional and -i)")
        image = positionals.pop(0)
    if positionals:
        raise UsageError(f"unexpected argument {positionals[0]!r}")
    extra: dict[str, object] = {}  # what else a plan of this command depends on
    notes: list[str] = []  # the lines printed before the boot
    # (printed already when launcher.detached handed its run over: not twice)
    said = spawned is not None and spawned.notes_said
    if service is not None:
        import os

        from smolfs.image import staleness

        from .service_image import build_service

        # -k FILE boots that file; -k NAME (or nothing: GENERIC) is fetched with the sets.
        own = kernel if kernel is not None and os.path.isfile(kernel) else None
        kernel_name = kernel
        from smolfs.image.options import STARTNB

        built_image, built_kernel, service_ready, service_ro = build_service(
            service, image, say_fresh=not said, notes=notes,
            kernel=None if own else (kernel or ("GENERIC64" if args.arch == "aarch64"
                                                else "GENERIC")),
            **{name: getattr(args, name) for name in STARTNB})
        image = str(built_image)
        kernel = own or (str(built_kernel) if built_kernel else None)
        snapshot = staleness.snapshot(image)  # None: no record (a daily build): no plan
        if snapshot is None:
            plan_key = None
        # Names that must not become files: then they would name a kernel file.
        absent = [service, *([kernel_name] if kernel_name and not own else [])]
        extra["service"] = {**(snapshot or {}), "absent": absent}
        if args.ready is None and service_ready:  # what the service says makes it ready
            args.ready = _service_ready(service, service_ready, args.port)
        # A read-only root is attached read-only: the guest cannot write the image (which
        # would make it stale: rebuilt at the next start), and VMs may share it.
        args.ro = args.ro or service_ro
    if kernel is None:
        raise UsageError("no kernel given", hint="startnb KERNEL [IMAGE], or -k KERNEL")
    console = args.console or ("none" if (args.detach or args.json) else "stdio")
    timeout = args.timeout if args.timeout is not None else (30.0 if args.detach else None)
    network = "none" if args.no_network else ("tap" if args.tap else "user")
    config = cfg.LaunchConfig(
        kernel=Path(kernel), image=Path(image) if image else None, memory_mb=args.memory,
        cpus=args.cpus, ports=tuple(cfg.parse_port(p) for p in args.port), network=network,
        tap=args.tap, append=tuple(w for a in args.append for w in a.split()), root=args.root,
        readonly=args.ro, console=cfg.parse_console(console), accel=args.accel,
        machine=args.machine, ready=cfg.parse_ready(args.ready) if args.ready else None,
        timeout=timeout, detach=args.detach, qemu_args=tuple(args.qemu_arg),
    )
    from .boot import boot, prepare

    if args.print_cmd:
        plan_key = None
    prepared = prepare(config, checks=spawned is None)
    if args.strip:
        from .kernel import strip_kernel

        # The plan depends on the kernel stripped too (its stripped copy is stat'ed).
        extra["files"] = [str(config.kernel), str(prepared.kernel.path)]
        config = config._replace(kernel=strip_kernel(prepared.kernel))
        prepared = prepare(config, checks=spawned is None)
    if prepared.accel_note and not args.print_cmd:
        notes.append(f"startnb: {prepared.accel_note}")
        if not said:
            print(notes[-1], file=sys.stderr)
    from smolfs import log

    if args.detach and not log.DEBUG:  # what the next identical run prints (fast path)
        extra["detached"] = {"json": args.json, "notes": notes}

    def on_ready(result) -> None:  # type: ignore[no-untyped-def]
        report_ready(result.to_json(), result.report.human(), args.json)

    result = boot(config, command_start=_START, name=args.name, timestamps=args.timestamps,
                  print_cmd=args.print_cmd, on_ready=on_ready, prepared=prepared,
                  spawned=spawned, plan_key=plan_key, plan_extra=extra)
    if args.print_cmd or args.detach:
        return 0
    status = result.exit_status or 0
    if status:
        print(f"startnb: QEMU exited with status {status}", file=sys.stderr)
    return status


def report_ready(result: dict[str, object], human: str, as_json: bool) -> None:
    """Say that the VM is ready: ``result`` as JSON on stdout, or the ``human`` timing
    report and, for a detached VM, how to stop it, on stderr."""
    if as_json:
        import json

        print(json.dumps(result), flush=True)
        return
    print(human, file=sys.stderr, flush=True)
    name = result.get("name")
    if name:
        print(f"startnb: VM {name!r} running (pid {result['pid']}); "
              f"'startnb stop {name}' stops it", file=sys.stderr)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _save_tty() -> list[object] | None:
    """The terminal's settings when stdin is one (QEMU's interactive console makes it raw;
    a QEMU that could not restore them, killed, must not leave them so)."""
    import os

    if not os.isatty(0):
        return None
    import termios

    try:
        return list(termios.tcgetattr(0))
    except termios.error:
        return None


def _restore_tty(saved: list[object] | None) -> None:
    if saved is None:
        return
    import termios

    try:
        if termios.tcgetattr(0) != saved:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    except (termios.error, OSError):
        pass  # the terminal is gone (a hang-up): nothing to restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``startnb``. A boot first tries the fast path (:mod:`launcher.fastpath`): with a
    valid cached plan, QEMU starts before anything else is imported.

    SIGTERM and SIGHUP end the command as an exception (exit 128+N) from the start, so the
    ``finally`` blocks stop QEMU (SIGTERM first: it restores the terminal) whichever path
    started it; the terminal's settings are put back too. An error of the fast path's relay
    is handed to the ordinary path's error reporting.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in VERBS:
        from smolfs.cli import run_main

        from . import verbs

        return run_main("startnb", lambda a: verbs.run(a[0], a[1:]), args)
    import _signal  # the C module: the signal package imports enum (milliseconds)

    old_handlers = {}
    for sig in (_signal.SIGTERM, _signal.SIGHUP):
        try:
            old_handlers[sig] = _signal.signal(sig, _raise_exit)
        except ValueError:  # not the main thread: the caller handles signals
            break
    tty = _save_tty()
    spawned: Spawned | None = None
    try:
        key: tuple[object, ...] | None = None
        pending: BaseException | None = None
        try:
            from .fastpath import try_fast

            key, spawned = try_fast(args) if args else (None, None)
            if spawned is not None and "--debug" in args:
                import shlex

                print(f"+ {shlex.join(spawned.argv)}   (started from a cached plan)",
                      file=sys.stderr, flush=True)
            if spawned is not None and spawned.detached is not None:
                from .detached import finish

                if finish(spawned, _START, report_ready):
                    global NOTHING_LEFT
                    sys.stdout.flush()
                    sys.stderr.flush()
                    NOTHING_LEFT = True
                    return 0
            if spawned is not None and spawned.relay is not None:
                from .spawned import relay_until_ready

                try:
                    relay_until_ready(spawned, spawned.relay, _START)
                except OSError:
                    if spawned.console is not None:
                        raise
                    spawned.kill()  # the console output cannot be opened: the ordinary
                    spawned = None  # path checks it and says why
        except (Exception, KeyboardInterrupt) as err:
            pending = err
        from smolfs.cli import run_main

        return run_main("startnb", lambda a: _boot(a, key, spawned, pending), args)
    finally:
        if spawned is not None and not spawned.adopted:
            spawned.kill()
        _restore_tty(tty)
        for sig, handler in old_handlers.items():
            _signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
