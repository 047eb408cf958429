"""``startnb ps``, ``startnb stop NAME|--all``, ``startnb logs NAME``: detached VMs."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from smolfs.cli import Parser, add_common

from . import state


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def ps(argv: Sequence[str]) -> int:
    p = Parser(prog="startnb ps", description="List detached VMs.")
    add_common(p)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for vm in state.all_vms():
        pid = vm.pid()
        m = vm.manifest()
        if pid is None:
            if time.time() - vm.started() > 5:  # (not one being started right now)
                state.remove(vm)  # QEMU is gone: forget the VM
            continue
        rows.append({"name": vm.name, "pid": pid, "uptime": time.time() - vm.started(),
                     "ports": m.get("ports") or [], "image": m.get("image"),
                     "ready": m.get("ready")})
    if args.json:
        import json

        print(json.dumps(rows))
        return 0
    print(f"{'NAME':16} {'PID':>7} {'UPTIME':>8}  {'PORTS':24} IMAGE")
    for r in rows:
        ports = ",".join(str(x) for x in r["ports"]) or "-"  # type: ignore[attr-defined]
        print(f"{r['name']:16} {r['pid']:>7} {_uptime(float(r['uptime'])):>8}  "  # type: ignore[arg-type]
              f"{ports:24} {r['image'] or '-'}")
    return 0


def stop(argv: Sequence[str]) -> int:
    from smolfs.errors import UsageError

    p = Parser(prog="startnb stop",
               description="Stop a detached VM (or all of them): ACPI power-down over QMP, "
               "then SIGTERM after the grace period, then SIGKILL.")
    add_common(p)
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true",
                   help="stop every detached VM (at the same time)")
    p.add_argument("--force", action="store_true", help="SIGKILL at once")
    p.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                   help="wait this long after the power-down request (5)")
    args = p.parse_args(argv)
    if args.all == (args.name is not None):
        raise UsageError("give either the name of a VM or --all",
                         hint="startnb stop NAME, or startnb stop --all; "
                         "'startnb ps' lists them")
    if not args.all:
        print(_stop_one(state.find(args.name), args.grace, args.force), file=sys.stderr)
        return 0
    vms = state.all_vms()
    if not vms:
        print("startnb: no detached VM", file=sys.stderr)
        return 0
    lines = [""] * len(vms)
    if len(vms) == 1:
        lines[0] = _stop_one(vms[0], args.grace, args.force)
    else:  # at once: n guests ignoring the power button take one grace period, not n
        import threading

        def one(i: int) -> None:
            lines[i] = _stop_one(vms[i], args.grace, args.force)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(vms))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for line in lines:
        print(line, file=sys.stderr)
    return 0


def _stop_one(vm: state.VmDir, grace: float, force: bool) -> str:
    """Stop one VM, wait for its keeper to record the end, forget it; one line."""
    from .qmp import stop_pid

    pid = vm.pid()
    if pid is None:
        vm.wait_keeper()
        state.remove(vm)
        return f"startnb: {vm.name} was not running"
    argv = vm.manifest().get("argv")
    machine = argv[argv.index("-M") + 1] if isinstance(argv, list) and "-M" in argv else ""
    button = "acpi=off" not in str(machine).split(",")  # the machine has a power button
    no_acpi = button and _kernel_without_acpi(vm, argv)  # but nobody in the guest answers
    how, why = stop_pid(pid, vm.qmp, grace, force, state.is_qemu, acpi=button and not no_acpi)
    if no_acpi:
        why = why.replace("the machine has no ACPI power button",
                          "the guest's kernel has no ACPI (no acpi0 on its console)")
    vm.wait_keeper()
    if how == "powerdown" and (other := _ended_otherwise(vm)):
        how, why = "ended", f"{other}, before the guest powered off"
    state.remove(vm)
    return f"startnb: stopped {vm.name} (pid {pid}, {how}): {why}"


def _kernel_without_acpi(vm: state.VmDir, argv: object) -> bool:
    """An x86 guest whose console shows the root mounted but no ``acpi0 at`` (NetBSD's VM
    kernels, a GENERIC that kstrip left without acpi): nobody answers the power button."""
    import re

    qemu = str(argv[0]) if isinstance(argv, list) and argv else ""
    if "x86_64" not in qemu and "i386" not in qemu:
        return False
    try:
        with vm.serial_log.open("rb") as f:
            head = f.read(1 << 20)  # autoconfiguration is at the start
    except OSError:
        return False
    return b"root file system type: " in head and \
        re.search(rb"^(\[[^]\n]*\] ?)?acpi0 at ", head, re.M) is None


def _ended_otherwise(vm: state.VmDir) -> str | None:
    """How QEMU ended while ``stop`` waited for the guest to power off, when it was not
    the guest (from the keeper's record and QEMU's log); None when it was, or unknown."""
    import re

    try:
        code: int | None = int(vm.exit_file.read_text())
    except (OSError, ValueError):
        code = None
    if code is None:
        return "QEMU was killed with its keeper" if vm.keeper_pidfile.exists() else None
    if code < 0:
        return f"QEMU was killed by signal {-code}"
    try:
        log = vm.qemu_log.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"terminating on signal (\d+)(?: from pid (\d+))?", log)
    if m is None:
        return None
    return f"QEMU ended on signal {m[1]}" + (f" from pid {m[2]}" if m[2] else "")


def logs(argv: Sequence[str]) -> int:
    p = Parser(prog="startnb logs", description="Show the serial console of a detached VM.")
    add_common(p)
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new output until the VM stops")
    args = p.parse_args(argv)
    vm = state.find(args.name)
    out = sys.stdout.buffer
    pos = 0
    while True:
        try:
            with open(vm.serial_log, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            pos += len(data)
            out.write(data)
            out.flush()
        if not args.follow:
            return 0
        if not data:
            if vm.pid() is None:
                return 0
            time.sleep(0.1)


def run(verb: str, argv: Sequence[str]) -> int:
    return {"ps": ps, "stop": stop, "logs": logs}[verb](argv)
