"""Shared fixtures and the skip rules for tests that need something special.

Markers (see pyproject.toml): ``kvm`` needs hardware KVM; ``netbsd`` needs genuine
NetBSD artifacts in the directory named by ``MKSMOLNB_NETBSD_DIR``; ``qemu`` boots a
test kernel; ``slow`` takes more than a few seconds.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpers.runner import Runner
from kernels import arm64_kernel, test_kernels  # noqa: F401  (session fixtures: smoltest)

REPO = Path(__file__).resolve().parent.parent
NETBSD_DIR_VAR = "MKSMOLNB_NETBSD_DIR"

# The suite never reads or writes the user's cache or VM state: one private directory
# each for the whole run (tests that need their own still set them).
_PRIVATE = Path(tempfile.mkdtemp(prefix="mksmolnb-tests-"))
os.environ["MKSMOLNB_CACHE"] = str(_PRIVATE / "cache")
os.environ["MKSMOLNB_STATE"] = str(_PRIVATE / "state")
atexit.register(shutil.rmtree, _PRIVATE, ignore_errors=True)


def live_processes() -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of every process of this machine that is not a zombie."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        out.append((int(entry), argv))
    return out


def qemu_pids(needle: str) -> list[int]:
    """Pids of live QEMU processes with ``needle`` in one of their arguments."""
    return [pid for pid, argv in live_processes()
            if b"qemu" in argv[0] and any(needle.encode() in a for a in argv)]


def hardware_kvm() -> str | None:
    """None when hardware KVM is usable, else the reason it is not."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not read-write for this user"
    if os.path.exists("/sys/module/kvm_pvm") and not (
        os.path.exists("/sys/module/kvm_intel") or os.path.exists("/sys/module/kvm_amd")
    ):
        return "KVM here is the nested kvm_pvm, not hardware KVM"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kvm_reason = hardware_kvm()
    netbsd_dir = os.environ.get(NETBSD_DIR_VAR)
    qemu = shutil.which("qemu-system-x86_64")
    qemu_arm = shutil.which("qemu-system-aarch64")
    for item in items:
        if "kvm" in item.keywords and kvm_reason:
            item.add_marker(pytest.mark.skip(reason=f"kvm: {kvm_reason}"))
        if "netbsd" in item.keywords and not (netbsd_dir and os.path.isdir(netbsd_dir)):
            item.add_marker(
                pytest.mark.skip(reason=f"netbsd: set {NETBSD_DIR_VAR} to a directory of "
                                 "genuine NetBSD kernels and sets")
            )
        if "qemu" in item.keywords and not qemu:
            item.add_marker(pytest.mark.skip(reason="qemu: qemu-system-x86_64 not installed"))
        if "aarch64" in item.keywords and not qemu_arm:
            item.add_marker(pytest.mark.skip(
                reason="aarch64: qemu-system-aarch64 not installed (Debian: qemu-system-arm)"))


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """An empty 1 MiB raw disk image."""
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(1 << 20)
    return image


@pytest.fixture
def netbsd_dir() -> Path:
    return Path(os.environ[NETBSD_DIR_VAR])


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    """Runs smolfs, startnb and kstrip as a user would, with private cache and state;
    stops what it started (:class:`helpers.runner.Runner`)."""
    from helpers.runner import Runner  # it imports this module

    r = Runner(tmp_path)
    try:
        yield r
    finally:
        r.close()
