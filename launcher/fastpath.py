"""The path to QEMU's exec, kept to built-in modules, and the plan cache that makes it short.

Python spends about 6 ms importing ``re``, 9 ms ``argparse``, 10 ms ``typing`` on this
kind of host; a NetBSD service is ready 400 ms after QEMU starts. So a boot is split:

1. :func:`try_fast` looks the raw command line up in the plan cache
   (``<cache>/plans.marshal``). A plan is the QEMU argv an earlier run computed for the
   same arguments, working directory, environment, terminal and launcher code (version,
   and the stat of the modules computing the argv), with what it was computed from: the
   stat of the kernel, the loaded (decompressed) kernel and the QEMU binary, QEMU's place
   on ``$PATH``, the state of ``/dev/kvm`` and the boot id. When every one of those still
   matches and the checks that cannot be cached pass (host ports free, image present and
   neither locked by a QEMU nor used by a detached VM, console file's directory present;
   ``startnb SERVICE``: the image still up to date by :func:`smolfs.staleness.holds`;
   ``-d``: the VM's state directory free), QEMU is spawned at once (``-d``: under the
   keeper of :class:`launcher.vm.Vm`, whose import is most of that path's cost).
2. Until the ready line only :func:`launcher.relay.relay_until_ready` runs (the console
   relay and stage detection); argument parsing, the report and everything else follow.
   A cold run, a changed input, an unreadable plan file or any failed check takes the
   ordinary path, which computes the argv (and the error messages) from scratch and saves
   the plan once QEMU is seen alive.

Only ``os``, ``sys``, ``marshal``, C modules (``_socket``, ``fcntl``, ``_struct``,
``_ctypes``, ``_signal``) and :mod:`smolfs.cachedir` (``os`` alone) are imported here.
The helpers the rest of the launcher shares (``which``, :func:`kvm_state`,
:func:`is_qemu`, :func:`image_locked`, :func:`port_error`, :func:`spawn`) live here so
the fast path and the ordinary one cannot disagree.
"""

from __future__ import annotations

import errno
import marshal
import os
import sys
import time

from smolfs.cachedir import cache_root

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from .relay import ConsoleOut, ConsoleSeen
    from .vm import Vm

#: Bump when the plan format or what the argv depends on changes.
PLAN_VERSION = 2
#: Plans kept (most recently written first).
MAX_PLANS = 32
#: What a plan's ``relay`` holds (see :func:`launcher.relay.relay_until_ready`).
RELAY_KEYS = ("console", "path", "timestamps", "pattern", "timeout")
#: The modules the argv is computed by (paths from this package's directory): the
#: launcher's, the service lookup, the builder's version and its staleness rule.
CODE_FILES = ("__main__.py", "boot.py", "config.py", "fastpath.py", "glue.py", "host.py",
              "kernel.py", "qemu.py", "stripcache.py", "../smolfs/cli/__init__.py",
              "../smolfs/image/service.py", "../smolfs/image/staleness.py",
              "../smolfs/image/options.py", "../services/__init__.py")
#: Environment variables the QEMU argv (or the files it names) depends on.
ENV_KEYS = ("MKSMOLNB_QEMU", "MKSMOLNB_QEMU_AARCH64", "PATH", "MKSMOLNB_CACHE",
            "XDG_CACHE_HOME", "HOME", "MKSMOLNB_STATE", "XDG_RUNTIME_DIR",
            "SOURCE_DATE_EPOCH")
#: Stands in a saved argv for the private directory of one run (its QMP socket, for
#: ``--ready tcp:``), made afresh by :func:`try_fast`.
RUNDIR = "@RUNDIR@"

KVM_HARDWARE = "hardware"
KVM_MISSING = "missing"
KVM_DENIED = "denied"
KVM_NESTED_PVM = "kvm_pvm"
KVM_UNKNOWN = "unknown-module"

# -- shared host helpers (os only) -----------------------------------------------------------


def which(name: str) -> str | None:
    """``shutil.which`` without importing shutil."""
    if "/" in name:
        return os.path.abspath(name) if os.access(name, os.X_OK) else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        cand = os.path.join(d or ".", name)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    return None


def kvm_state(dev_kvm: str = "/dev/kvm", sys_module: str = "/sys/module") -> tuple[str, str]:
    """(KVM_* state, one line saying why): opens ``dev_kvm`` read-write, then asks which
    KVM module is loaded."""
    try:
        fd = os.open(dev_kvm, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return KVM_MISSING, f"{dev_kvm} does not exist (no KVM on this host)"
        if err.errno in (errno.EACCES, errno.EPERM):
            return KVM_DENIED, (f"{dev_kvm} is not read-write for this user "
                                "(add the user to group 'kvm')")
        return KVM_MISSING, f"{dev_kvm} cannot be opened: {err.strerror}"
    os.close(fd)
    for module in ("kvm_intel", "kvm_amd"):
        if os.path.exists(os.path.join(sys_module, module)):
            return KVM_HARDWARE, f"hardware KVM ({module})"
    if os.path.exists(os.path.join(sys_module, "kvm_pvm")):
        return KVM_NESTED_PVM, ("KVM here is the nested software hypervisor kvm_pvm, "
                                "on which NetBSD does not run")
    return KVM_UNKNOWN, "KVM module is neither kvm_intel nor kvm_amd"


def is_qemu(pid: int) -> bool:
    """Is ``pid`` a live (not zombie) QEMU process? Without ``/proc``: is it alive?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"qemu" in os.path.basename(argv0)


def image_locked(image: str) -> bool:
    """Does another process (a QEMU) hold a lock on ``image``?

    QEMU takes open-file-description locks on bytes 100-355 of every image it opens; any
    conflicting lock there means another VM uses the image.
    """
    import _struct
    import fcntl

    getlk = getattr(fcntl, "F_OFD_GETLK", None)
    if getlk is None:
        return False
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        req = _struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 100, 256, 0)
        res = fcntl.fcntl(fd, getlk, req)
        return bool(_struct.unpack("hhqqi4x", res)[0] != fcntl.F_UNLCK)
    except OSError:
        return False
    finally:
        os.close(fd)


def port_error(proto: str, host_ip: str, port: int) -> str | None:
    """Why the host port cannot be bound (as QEMU would bind it), or None when it can."""
    import _socket

    kind = _socket.SOCK_STREAM if proto == "tcp" else _socket.SOCK_DGRAM
    s = _socket.socket(_socket.AF_INET, kind)
    try:
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        s.bind((host_ip, port))
    except OSError as err:
        return err.strerror or str(err)
    finally:
        s.close()
    return None


def state_root() -> str:
    """``$MKSMOLNB_STATE``, else ``$XDG_RUNTIME_DIR/mksmolnb``, else
    ``~/.local/state/mksmolnb``: where detached VMs keep their files."""
    if os.environ.get("MKSMOLNB_STATE"):
        return os.environ["MKSMOLNB_STATE"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "mksmolnb")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "mksmolnb")


def image_users() -> dict[str, tuple[str, bool]]:
    """Resolved image path → (VM name, read-only) for every running detached VM.

    Read from each VM directory's ``image`` file (``rw`` or ``ro``, a newline, the path).
    """
    root = state_root()
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return {}
    out = {}
    for name in names:
        d = os.path.join(root, name)
        try:
            with open(os.path.join(d, "image"), "rb") as f:
                mode, _, path = f.read().partition(b"\n")
            with open(os.path.join(d, "qemu.pid"), "rb") as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if path and pid and is_qemu(pid):
            out[os.fsdecode(path.rstrip(b"\n"))] = (name, mode == b"ro")
    return out


# -- spawning --------------------------------------------------------------------------------


def _set_pdeathsig() -> None:
    """In the child: SIGKILL it when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Called through ``_ctypes`` directly: the ``ctypes`` package costs milliseconds.
    """
    import _ctypes

    prctl = _ctypes.dlsym(_ctypes.dlopen(None, 2), "prctl")
    _ctypes.call_function(prctl, (1, 9, 0, 0, 0))  # PR_SET_PDEATHSIG, SIGKILL


#: Above any descriptor number a process has (``close_range`` takes the whole range).
MAX_FD = 0x7FFFFFFF
#: Signals Python ignores (``SIG_IGN`` survives exec).
IGNORED_BY_PYTHON = ("SIGPIPE", "SIGXFSZ")


def _default_signals() -> None:
    """In the child: the default action for the signals Python ignores, as a program
    started from a shell expects (QEMU writing to a closed pipe must die of SIGPIPE)."""
    import _signal

    for name in IGNORED_BY_PYTHON:
        sig = getattr(_signal, name, None)
        try:
            if sig is not None and _signal.getsignal(sig) == _signal.SIG_IGN:
                _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int, *,
          die_with_parent: bool, new_session: bool = True) -> int:
    """fork + exec ``argv`` with the given descriptors as 0, 1, 2; return the pid.

    ``die_with_parent``: SIGKILL the child when this process dies, however it dies (Linux;
    elsewhere the caller's ``finally`` blocks are all there is). Raises ``OSError`` from
    the child's ``execv`` (``FileNotFoundError`` when the binary is missing).
    """
    import _signal  # noqa: F401  (loaded before the fork: the child only uses it)

    if die_with_parent and sys.platform.startswith("linux"):
        import _ctypes  # noqa: F401  (likewise)
    else:
        die_with_parent = False
    parent = os.getpid()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python clean-up may run here
        try:
            os.close(err_r)
            if new_session:
                os.setsid()
            if die_with_parent:
                _set_pdeathsig()
                if os.getppid() != parent:
                    os._exit(1)
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                if fd != target:
                    os.dup2(fd, target)
            # Nothing else of the caller's reaches QEMU: an inherited pipe end would keep
            # whoever waits for its end of file waiting as long as the VM runs.
            os.closerange(3, err_w)
            os.closerange(err_w + 1, MAX_FD)
            _default_signals()
            os.execv(argv[0], argv)
        except BaseException as err:
            code = err.errno if isinstance(err, OSError) and err.errno else errno.EINVAL
            os.write(err_w, str(code).encode())
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        failure = os.read(err_r, 32)
    finally:
        os.close(err_r)
    if failure:
        os.waitpid(pid, 0)
        code = int(failure)
        raise OSError(code, os.strerror(code), argv[0])
    return pid


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
            plans = marshal.load(f)
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
              vmdir: str | None = None) -> dict[str, object]:
    """A plan: the argv and what must still hold for it to be the argv of the same boot.

    ``files`` must be unchanged (kernels, by stat); ``image`` (the path as given, and
    resolved when saved) must still be a file or a block device and not in use.

    ``relay``: what :func:`launcher.relay.relay_until_ready` needs (console, timestamps,
    ready pattern, timeout) when readiness is a console line; None otherwise.
    ``nested``: QEMU rejected ``-cpu host``; the argv names a CPU model instead.
    ``service``: ``startnb SERVICE``: the image's :func:`smolfs.staleness.snapshot` and
    ``absent``: the service name and kernel name as given, which must not become files
    (they would then name a kernel file).
    ``vmdir``: ``-d``: the VM's state directory the argv names, which must not exist (it
    is made by :func:`try_fast`; a VM of that name running takes the ordinary path).
    :data:`RUNDIR` in the argv stands for a private directory made afresh.
    """
    return {"argv": list(qemu_argv), "host": host_key(qemu),
            "files": [(f, fingerprint(f)) for f in files], "ports": list(ports),
            "image": image, "readonly": readonly, "interactive": interactive,
            "relay": relay, "nested": nested, "service": service, "vmdir": vmdir}


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


class Spawned:
    """A QEMU started by :func:`try_fast`, handed to the ordinary path to adopt."""

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
        #: The private directory :data:`RUNDIR` stands for in the plan's argv, if any.
        self.rundir: str | None = None
        #: ``-d``: the VM's state directory and the :class:`launcher.vm.Vm` whose keeper
        #: runs QEMU (no pipes then: the console is a file in that directory).
        self.vmdir: str | None = None
        self.vm: Vm | None = None

    def kill(self, grace: float = 1.0) -> None:
        """Stop and reap this QEMU (it was not adopted): SIGTERM, which lets QEMU put the
        terminal back as it found it, then SIGKILL after ``grace`` seconds. Closes its
        pipes and the console output the relay opened; removes its private directory."""
        import contextlib

        if self.vm is not None:  # -d: through its keeper
            self.vm.kill(grace)
            self.vm.close()
            self.vm = None
            self.adopted = True
            self.remove_dirs()
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, 15)  # SIGTERM
        deadline = time.monotonic() + grace
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() >= deadline:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, 9)  # SIGKILL
                with contextlib.suppress(OSError):
                    os.waitpid(self.pid, 0)
                break
            time.sleep(0.005)
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
    """``-d``: claim the state directory the plan names and start QEMU under its keeper
    (:class:`launcher.vm.Vm`); None when the directory exists (a VM of that name, or one
    just gone: the ordinary path tells which) or the keeper cannot start QEMU."""
    os.makedirs(os.path.dirname(vmdir), mode=0o700, exist_ok=True)
    try:
        os.mkdir(vmdir, 0o700)
    except OSError:
        return None
    spawned = Spawned(0, qemu_argv, 0.0, 0.0, -1, -1, False)
    spawned.vmdir = vmdir
    try:
        from pathlib import Path

        from .vm import Vm

        d = Path(vmdir)
        paths = {"serial_log": d / "serial.log", "qmp": d / "qmp.sock",
                 "qemu_log": d / "qemu.log"}
        # as launcher.boot makes it: the keeper keeps its files in the state dir
        vm = Vm(qemu_argv, **paths, detach=True, state_dir=d)
        vm.start()
    except Exception:
        spawned.remove_dirs()
        return None
    spawned.vm, spawned.pid = vm, vm.pid
    spawned.exec_time, spawned.started = vm.exec_time, vm.started
    return spawned


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
    spawned = Spawned(pid, qemu_argv, exec_time, started, out_r, err_r, interactive,
                      relay if isinstance(relay, dict) else None, nested)
    spawned.rundir = rundir
    return key, spawned
