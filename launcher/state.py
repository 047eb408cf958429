"""Where detached VMs live: one directory per VM with pidfile, serial log, QMP socket and
a manifest (JSON).

Root: ``$MKSMOLNB_STATE``, else ``$XDG_RUNTIME_DIR/mksmolnb``, else
``~/.local/state/mksmolnb``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from smolfs.errors import LaunchError, UsageError

from . import proc
from .manifest import IMAGE, MANIFEST
from .manifest import write as write_files
from .proc import is_qemu

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}"


def state_root() -> Path:
    return Path(proc.state_root())


class VmDir(NamedTuple):
    """The files of one detached VM."""

    name: str
    path: Path

    @property
    def pidfile(self) -> Path:
        return self.path / "qemu.pid"

    @property
    def serial_log(self) -> Path:
        return self.path / "serial.log"

    @property
    def qmp(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def image_file(self) -> Path:
        """``rw`` or ``ro``, a newline, the resolved image path (read on the fast path)."""
        return self.path / IMAGE

    @property
    def keeper_pidfile(self) -> Path:
        """The keeper: QEMU's parent, which reaps it and writes :attr:`exit_file`."""
        return self.path / "keeper.pid"

    @property
    def exit_file(self) -> Path:
        """QEMU's exit status once it ended (negative: the signal that killed it)."""
        return self.path / "qemu.exit"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, object]:
        import json

        try:
            return dict(json.loads(self.manifest_path.read_text()))
        except (OSError, ValueError):
            return {}

    def write_manifest(self, data: dict[str, object]) -> None:
        write_files(str(self.path), data)

    def pid(self) -> int | None:
        """The QEMU pid if that process is still a QEMU, else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = int(str(self.manifest().get("pid", 0)) or 0) or None
        return pid if pid and is_qemu(pid) else None

    def started(self) -> float:
        """When the VM was started (the manifest), else when its directory was made."""
        try:
            return float(str(self.manifest().get("started") or "")) or _mtime(self.path)
        except ValueError:
            return _mtime(self.path)

    def wait_keeper(self, seconds: float = 2.0) -> bool:
        """Wait up to ``seconds`` for the keeper to end (it does once QEMU ended and its
        exit status is written); whether it did."""
        try:
            pid = int(self.keeper_pidfile.read_text().strip())
        except (OSError, ValueError):
            return True
        deadline = time.monotonic() + seconds
        while alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


def alive(pid: int) -> bool:
    """Is ``pid`` a process that has not ended (a zombie has)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True


def check_name(name: str) -> str:
    if not re.fullmatch(_NAME, name):
        raise UsageError(f"bad VM name {name!r}: letters, digits, '.', '_' and '-', "
                         "at most 40 characters")
    return name


def all_vms() -> list[VmDir]:
    root = state_root()
    try:
        return sorted((VmDir(p.name, p) for p in root.iterdir() if p.is_dir()),
                      key=lambda v: v.name)
    except OSError:
        return []


def find(name: str) -> VmDir:
    vm = VmDir(name, state_root() / check_name(name))
    if not vm.path.is_dir():
        names = ", ".join(v.name for v in all_vms()) or "none"
        raise LaunchError(f"no VM named {name!r} (running: {names})",
                          hint="list them with 'startnb ps'")
    return vm


def create(name: str | None, stem: str) -> VmDir:
    """A fresh state directory; a stale one (its QEMU gone) of the same name is reused."""
    root = state_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if name is not None:
        vm = VmDir(check_name(name), root / name)
        if vm.path.exists():
            if vm.pid() is not None:
                raise LaunchError(f"a VM named {name!r} is already running (pid {vm.pid()})",
                                  hint=f"stop it with 'startnb stop {name}' or pick another "
                                  "--name")
            remove(vm)
        vm.path.mkdir(mode=0o700)
        return vm
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", stem)[:30] or "vm"
    for i in range(1, 1000):
        candidate = base if i == 1 else f"{base}-{i}"
        vm = VmDir(candidate, root / candidate)
        if vm.path.exists() and vm.pid() is None and time.time() - _mtime(vm.path) > 5:
            remove(vm)
        try:
            vm.path.mkdir(mode=0o700)
            return vm
        except FileExistsError:
            continue
    raise LaunchError(f"too many VMs named {base}-N in {root}")


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def remove(vm: VmDir) -> None:
    for f in vm.path.iterdir() if vm.path.is_dir() else ():
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        vm.path.rmdir()


def images_in_use() -> dict[str, tuple[str, bool]]:
    """Resolved image path → (VM name, read-only) for every running detached VM."""
    return proc.image_users()
