"""What must hold before QEMU starts (kernel bootable, QEMU installed, image present and
not in use, console file's directory, host ports free), each failing with the error that
names the fix; :func:`prepare` runs them all and picks the accelerator."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import NamedTuple

from smolfs.errors import InputError, LaunchError

from . import state
from .config import LaunchConfig
from .host import HostInfo, choose_accel, probe_host, qemu_binary, qemu_package
from .kernel import KernelInfo, cache_dir, inspect_kernel, require_bootable
from .proc import image_locked, port_error


class Prepared(NamedTuple):
    host: HostInfo
    kernel: KernelInfo
    accel_note: str | None
    accel: str = "tcg"


def prepare(config: LaunchConfig, cache: Path | None = None, checks: bool = True) -> Prepared:
    """All checks that can fail before QEMU starts. ``checks=False`` leaves out those a
    running QEMU of this very config would fail (image lock, host ports): for a QEMU the
    fast path already started."""
    kernel = inspect_kernel(config.kernel, cache=cache or cache_dir())
    require_bootable(kernel)
    binary = qemu_binary(kernel.arch)  # the guest's: qemu-system-x86_64 or -aarch64
    host = probe_host(qemu=binary, want_version=False)
    if host.qemu is None:
        raise LaunchError(f"{binary} not found",
                          hint=f"install QEMU: apt-get install {qemu_package(kernel.arch)}")
    accel, note = choose_accel(config.accel, host, kernel.arch)
    if config.image is not None:
        check_image(config.image, config.readonly, checks)
    check_console(config)
    for p in config.ports if checks else ():
        check_host_port(p.proto, p.host_ip, p.host_port)
    return Prepared(host, kernel, note, accel)


def check_console(config: LaunchConfig) -> None:
    """``--console file:PATH`` must name a file in an existing directory."""
    path = config.console.path
    if config.console.kind != "file" or path is None:
        return
    if path.is_dir():
        raise InputError(f"console file {path} is a directory",
                         hint="give a file name: --console file:DIR/serial.log")
    if not path.parent.is_dir():
        raise InputError(f"directory of the console file not found: {path.parent}",
                         hint=f"create it (mkdir -p {shlex.quote(str(path.parent))}) or "
                         "give another --console file:PATH")


def check_image(image: Path, readonly: bool, in_use: bool = True) -> None:
    if not image.exists():
        raise InputError(f"image not found: {image}",
                         hint="build one with 'smolfs build' or give its path with -i")
    if not image.is_file() and not image.is_block_device():
        raise InputError(f"image {image} is not a file")
    if not in_use:
        return
    users = state.images_in_use()
    user = users.get(str(image.resolve()))
    if user and (not readonly or not user[1]):
        raise LaunchError(f"image {image} is in use by the running VM {user[0]!r}",
                          hint=f"stop it ('startnb stop {user[0]}') or boot with --ro "
                          "(every VM sharing the image read-only)")
    if not readonly and image_locked(str(image)):
        raise LaunchError(f"image {image} is locked by a running QEMU",
                          hint="stop that VM, or boot with --ro to share the image read-only")


def check_host_port(proto: str, host_ip: str, port: int) -> None:
    """Raise :class:`LaunchError` if the host port cannot be bound (as QEMU would)."""
    err = port_error(proto, host_ip, port)
    if err is not None:
        raise LaunchError(
            f"host port {proto}:{host_ip}:{port} is not available: {err}",
            hint="pick another host port with -p HOSTPORT:GUESTPORT "
            "(see who holds it: ss -ltnp)")
