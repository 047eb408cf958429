"""The plan cache: QEMU spawned from the argv an earlier identical command computed.

:func:`try_fast` looks the raw command line up in ``<cache>/plans.marshal``; when every
input the plan was computed from still matches and the checks that cannot be cached pass,
QEMU starts before anything else is imported (``-d``: under its keeper,
:mod:`launcher.keeper`). Kept to ``os``, ``sys``, ``marshal``, :mod:`launcher.proc`,
:mod:`smolfs.spawn` and :mod:`smolfs.cachedir` until QEMU starts. The design is in
``launcher/README.md`` ("The fast path").
"""

from __future__ import annotations

import marshal
import os
import time

from smolfs.cachedir import cache_root
from smolfs.spawn import spawn

from .proc import image_locked, image_users, kvm_state, port_error, which

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from .keeper import Keeper
    from .spawned import Spawned

#: Bump when the plan format or what the argv depends on changes.
PLAN_VERSION = 2
#: Plans kept (most recently written first).
MAX_PLANS = 32
#: What a plan's ``detached`` holds (see :func:`launcher.detached.finish`).
DETACHED_KEYS = ("result", "manifest", "image", "ready", "qmp", "timeout", "json", "notes")
#: What a plan's ``relay`` holds (see :func:`launcher.spawned.relay_until_ready`).
RELAY_KEYS = ("console", "path", "timestamps", "pattern", "timeout")
#: The modules the argv is computed by (paths from this package's directory): the
#: launcher's, the service lookup, the builder's version and its staleness rule.
CODE_FILES = ("__main__.py", "boot.py", "checks.py", "config.py", "fastpath.py", "service_image.py",
              "host.py", "kernel.py", "proc.py", "qemu.py", "stripcache.py", "detached.py",
              "../smolfs/cli/__init__.py", "../smolfs/image/service.py",
              "../smolfs/image/staleness.py", "../smolfs/image/options.py",
              "../services/__init__.py")
#: Environment variables the QEMU argv (or the files it names) depends on.
ENV_KEYS = ("MKSMOLNB_QEMU", "MKSMOLNB_QEMU_AARCH64", "PATH", "MKSMOLNB_CACHE",
            "XDG_CACHE_HOME", "HOME", "MKSMOLNB_STATE", "XDG_RUNTIME_DIR",
            "SOURCE_DATE_EPOCH")
#: ``-d``: the longest the fast path waits for QEMU's first console byte before the
#: launcher goes on (see :func:`_await_first_byte`).
FIRST_BYTE_WAIT = 1.0
#: Stands in a saved argv for the private directory of one run (its QMP socket, for
#: ``--ready tcp:``), made afresh by :func:`try_fast`.
RUNDIR = "@RUNDIR@"

# -- the plan cache --------------------------------------------------------------------------


def fingerprint(path: str) -> tuple[int, int, int, int] | None:
    """What changes when a file is replaced or modified: inode, size, mtime, ctime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip()
    except OSError:
        return b""


def host_key(qemu: str | None) -> tuple[object, ...]:
    """What the host contributes to the argv, cheap to recompute: QEMU's path on ``$PATH``
    and its stat, the KVM state, the boot (CPU flags do not change within one)."""
    return (qemu, fingerprint(qemu) if qemu else None, kvm_state()[0], _boot_id())


def code_key() -> tuple[object, ...]:
    """The package version and the (mtime, size) of the modules that turn a command line
    into a QEMU argv: editing, upgrading or reinstalling any of them retires every plan."""
    from . import VERSION

    here = os.path.dirname(os.path.abspath(__file__))
    stats: list[object] = [VERSION]
    for name in CODE_FILES:
        try:
            st = os.stat(os.path.join(here, name))
        except OSError:
            stats.append(None)
        else:
            stats.append((st.st_mtime_ns, st.st_size))
    return tuple(stats)


def plan_key(argv: list[str]) -> tuple[object, ...]:
    """The raw inputs of a boot: arguments, directory, environment, terminal on stdin, and
    the code that computes the argv from them (:func:`code_key`)."""
    try:
        tty = os.isatty(0)
    except OSError:
        tty = False
    return (PLAN_VERSION, tuple(argv), os.getcwd(),
            tuple(os.environ.get(k) for k in ENV_KEYS), tty, code_key())


def plans_path() -> str:
    return os.path.join(cache_root(), "plans.marshal")


def _load() -> list[tuple[tuple[object, ...], dict[str, object]]]:
    """The saved plans, (key, plan) pairs; entries of any other shape are left out."""
    try:
        with open(plans_path(), "rb") as f:
            plans = marshal.loads(f.read())  # (load(f) reads in small pieces: 1 ms here)
    except (OSError, EOFError, ValueError, TypeError):
        return []
    if not isinstance(plans, list):
        return []
    return [entry for entry in plans
            if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], tuple)
            and isinstance(entry[1], dict)]


def save_plan(key: tuple[object, ...], plan: dict[str, object]) -> None:
    """Remember ``plan`` under ``key`` (atomically; a failure to write is ignored)."""
    plans = [(k, p) for k, p in _load() if k != key]
    plans.insert(0, (key, plan))
    path = plans_path()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(plans[:MAX_PLANS], f)
        os.replace(tmp, path)
    except OSError:
        import contextlib

        with contextlib.suppress(OSError):
            os.unlink(tmp)


def make_plan(qemu_argv: list[str], qemu: str, files: list[str],
              ports: list[tuple[str, str, int]], image: tuple[str, str] | None, readonly: bool,
              interactive: bool, relay: dict[str, object] | None = None,
              nested: bool = False, service: dict[str, object] | None = None,
              vmdir: str | None = None,
              detached: dict[str, object] | None = None) -> dict[str, object]:
    """A plan: the argv and what must still hold for it to be the argv of the same boot.

    ``files`` must be unchanged (kernels, by stat); ``image`` (the path as given, and
    resolved when saved) must still be a file or a block device and not in use.

    ``relay``: what :func:`launcher.spawned.relay_until_ready` needs (console, timestamps,
    ready pattern, timeout) when readiness is a console line; None otherwise.
    ``nested``: QEMU rejected ``-cpu host``; the argv names a CPU model instead.
    ``service``: ``startnb SERVICE``: the image's :func:`smolfs.image.staleness.snapshot` and
    ``absent``: the service name and kernel name as given, which must not become files
    (they would then name a kernel file).
    ``vmdir``: ``-d``: the VM's state directory the argv names, which must not exist (it
    is made by :func:`try_fast`; a VM of that name running takes the ordinary path).
    ``detached``: ``-d``: the report of the run that saved the plan, with which
    :func:`launcher.detached.finish` reports this one (:data:`DETACHED_KEYS`), or None.
    :data:`RUNDIR` in the argv stands for a private directory made afresh.
    """
    return {"argv": list(qemu_argv), "host": host_key(qemu),
            "files": [(f, fingerprint(f)) for f in files], "ports": list(ports),
            "image": image, "readonly": readonly, "interactive": interactive,
            "relay": relay, "nested": nested, "service": service, "vmdir": vmdir,
            "detached": detached}


def _usable(plan: dict[str, object]) -> bool:
    argv = plan["argv"]
    assert isinstance(argv, list)
    if os.path.basename(argv[0]) == "qemu-system-aarch64":  # an aarch64 guest's plan
        qemu = which(os.environ.get("MKSMOLNB_QEMU_AARCH64") or "qemu-system-aarch64")
    else:
        qemu = which(os.environ.get("MKSMOLNB_QEMU") or "qemu-system-x86_64")
    if qemu != argv[0] or host_key(qemu) != plan["host"]:
        return False
    for path, fp in plan["files"]:  # type: ignore[attr-defined]
        if fp is None or fingerprint(path) != fp:
            return False
    service = plan.get("service")
    if service is not None:
        from smolfs.image import staleness

        if not isinstance(service, dict) or not staleness.holds(service) \
                or any(os.path.lexists(str(p)) for p in service["absent"]):  # type: ignore[attr-defined]
            return False
    vmdir = plan.get("vmdir")
    if vmdir is not None and os.path.lexists(str(vmdir)):
        return False
    for proto, ip, port in plan["ports"]:  # type: ignore[attr-defined]
        if port_error(proto, ip, port) is not None:
            return False
    relay = plan.get("relay")
    if (isinstance(relay, dict) and relay.get("console") == "file"
            and not os.path.isdir(os.path.dirname(str(relay["path"])) or ".")):
        return False
    image = plan["image"]
    if image is not None:
        given, _ = image  # type: ignore[misc]
        try:
            mode = os.stat(given).st_mode
        except OSError:
            return False
        if mode & 0o170000 not in (0o100000, 0o060000):  # S_IFREG, S_IFBLK
            return False
        # Resolved now: a symbolic link retargeted since the plan was saved counts.
        user = image_users().get(os.path.realpath(given))
        if user and (not plan["readonly"] or not user[1]):
            return False
        if not plan["readonly"] and image_locked(given):
            return False
    return True


def _private_dir() -> str:
    """A new directory only this user can enter, as ``tempfile.mkdtemp`` makes one."""
    base = os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(base, f"startnb-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def _start_detached(qemu_argv: list[str], vmdir: str) -> Spawned | None:
    """``-d``: claim the state directory the plan names and fork QEMU's keeper
    (:mod:`launcher.keeper`, which starts QEMU); None when the directory exists (a VM of
    that name, or one just gone: the ordinary path tells which). The keeper's first
    report (QEMU's pid, or why it could not start) is read by the ordinary path, which
    adopts the keeper (:meth:`launcher.vm.Vm.adopt_keeper`) as it would its own."""
    os.makedirs(os.path.dirname(vmdir), mode=0o700, exist_ok=True)
    try:
        os.mkdir(vmdir, 0o700)
    except OSError:
        return None
    from .keeper import start_keeper

    try:
        # as launcher.boot starts it: the keeper keeps its files in the state directory
        keeper = start_keeper(qemu_argv, vmdir, os.path.join(vmdir, "qemu.log"))
    except Exception:
        keeper = None
    from .spawned import Spawned  # (once QEMU starts: what comes before it is kept short)

    spawned = Spawned(0, qemu_argv, 0.0, 0.0, -1, -1, False)
    spawned.vmdir = vmdir
    if keeper is None:
        spawned.remove_dirs()
        return None
    spawned.keeper = keeper
    spawned.exec_time, spawned.started = keeper.exec_time, keeper.started
    spawned.keeper_reports, spawned.first_byte_at = _await_first_byte(
        keeper, os.path.join(vmdir, "serial.log"))
    return spawned


def _await_first_byte(keeper: Keeper, serial_log: str) -> tuple[bytes, float | None]:
    """``-d``: wait until QEMU's first console byte reaches ``serial_log``, or the keeper
    reports QEMU's end (or its own), at most :data:`FIRST_BYTE_WAIT` seconds: the work
    that follows would otherwise slow QEMU's own start (measured here: the guest ready
    about 15 ms later, all of it before its first byte). Woken by the keeper's news of
    writes (:attr:`launcher.keeper.Keeper.written`), else every 2 ms. Returns what the
    keeper reported meanwhile (for :meth:`launcher.vm.Vm.adopt_keeper`) and when the
    first byte was seen (None: it was not)."""
    from .keeper import hear

    got = b""
    told = keeper.written >= 0
    deadline = time.monotonic() + FIRST_BYTE_WAIT
    while True:
        try:
            if os.stat(serial_log).st_size:
                return got, time.monotonic()
        except OSError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return got, None
        woke, told = hear(keeper, told, min(left, 0.05 if told else 0.002))
        if keeper.report in woke:
            data = os.read(keeper.report, 256)
            got += data
            if not data or any(w in got for w in (b"exit", b"error", b"signal")):
                return got, None


def try_fast(argv: list[str]) -> tuple[tuple[object, ...] | None, Spawned | None]:
    """Spawn QEMU from a still-valid plan for this command line; (plan key, the QEMU or
    None). Never raises: a bad plan, a broken plan file or any failed check leave the
    decision (and its explanation) to the ordinary path."""
    try:
        key = plan_key(argv)
    except Exception:
        return None, None
    try:
        plan = next((p for k, p in _load() if k == key), None)
        if plan is None or not _usable(plan):
            return key, None
        qemu_argv = [str(a) for a in plan["argv"]]  # type: ignore[attr-defined]
        interactive = bool(plan["interactive"])
        relay = plan.get("relay")
        nested = bool(plan.get("nested"))
        vmdir = plan.get("vmdir")
        if relay is not None and not (isinstance(relay, dict)
                                      and all(k in relay for k in RELAY_KEYS)):
            return key, None
        rundir = _private_dir() if any(RUNDIR in a for a in qemu_argv) else None
        if rundir is not None:
            qemu_argv = [a.replace(RUNDIR, rundir) for a in qemu_argv]
        if vmdir is not None:
            spawned = _start_detached(qemu_argv, str(vmdir))
            if spawned is not None:
                spawned.rundir, spawned.nested = rundir, nested
                detached = plan.get("detached")
                if isinstance(detached, dict) and all(k in detached for k in DETACHED_KEYS):
                    spawned.detached = detached
            elif rundir is not None:
                os.rmdir(rundir)
            return key, spawned
    except Exception:
        return key, None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    exec_time, started = time.monotonic(), time.time()
    try:
        pid = spawn(qemu_argv, stdin, out_w, err_w, die_with_parent=True)
    except OSError:
        os.close(out_r)
        os.close(err_r)
        if rundir is not None:
            os.rmdir(rundir)
        return key, None
    finally:
        os.close(out_w)
        os.close(err_w)
        if stdin != 0:
            os.close(stdin)
    from .spawned import Spawned

    spawned = Spawned(pid, qemu_argv, exec_time, started, out_r, err_r, interactive,
                      relay if isinstance(relay, dict) else None, nested)
    spawned.rundir = rundir
    return key, spawned
