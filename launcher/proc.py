"""Host primitives of the launcher, kept to built-in modules: finding programs, the KVM
state, whether a pid is a QEMU, image locks, host ports, the detached VMs' images, and how
a child is stopped (:func:`stop_child`; it is started by :func:`smolfs.spawn.spawn`).

Only ``os``, ``errno``, ``time`` and C modules (``_socket``, ``fcntl``, ``_struct``) are
imported, so that the plan cache (:mod:`launcher.fastpath`), the keeper
(:mod:`launcher.keeper`) and the ordinary path share them at no start-up cost and cannot
disagree.
"""

from __future__ import annotations

import errno
import os
import time

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


# -- stopping --------------------------------------------------------------------------------


def stop_child(pid: int, grace: float = 1.0) -> int | None:
    """Stop our child ``pid``: SIGTERM (QEMU then puts the terminal back as it found it),
    SIGKILL after ``grace`` seconds; reap it. Its exit status (negative: the signal that
    ended it), None when it was not ours to reap."""
    try:  # noqa: SIM105 (contextlib costs milliseconds)
        os.kill(pid, 15)  # SIGTERM
    except OSError:
        pass
    deadline = time.monotonic() + grace
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            try:  # noqa: SIM105 (contextlib costs milliseconds)
                os.kill(pid, 9)  # SIGKILL
            except OSError:
                pass
            try:
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            except ChildProcessError:
                return None
        time.sleep(0.005)
