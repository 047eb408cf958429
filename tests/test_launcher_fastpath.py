"""The fast path's pieces without QEMU: the plan key, the plan file, what invalidates a
plan, and ``spawn`` (exec errors, death with the parent). The end-to-end side (a second
identical boot adopts the QEMU the fast path started) is in test_launcher_e2e.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import fastpath


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MKSMOLNB_STATE", str(tmp_path / "state"))
    return tmp_path / "cache"


def test_plan_key_covers_argv_directory_and_environment(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    base = fastpath.plan_key(["k", "img"])
    assert fastpath.plan_key(["k", "img"]) == base
    assert fastpath.plan_key(["k", "img", "-N"]) != base
    monkeypatch.setenv("MKSMOLNB_QEMU", "/opt/qemu/bin/qemu-system-x86_64")
    assert fastpath.plan_key(["k", "img"]) != base
    monkeypatch.delenv("MKSMOLNB_QEMU")
    monkeypatch.chdir(tmp_path)
    assert fastpath.plan_key(["k", "img"]) != base


def _plan(tmp_path: Path, **kw: object) -> tuple[dict[str, object], Path]:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"kernel")
    qemu = fastpath.which("true")
    assert qemu is not None
    args: dict[str, object] = {"files": [str(kernel)], "ports": [], "image": None,
                               "readonly": False, "interactive": False, **kw}
    return fastpath.make_plan([qemu, "-kernel", str(kernel)], qemu, **args), kernel  # type: ignore[arg-type]


def test_plans_round_trip_are_bounded_and_survive_corruption(cache: Path, tmp_path: Path
                                                              ) -> None:
    plan, _ = _plan(tmp_path)
    for i in range(fastpath.MAX_PLANS + 5):
        fastpath.save_plan(("key", i), plan)
    plans = fastpath._load()
    assert len(plans) == fastpath.MAX_PLANS and plans[0] == (("key", fastpath.MAX_PLANS + 4),
                                                              plan)
    Path(fastpath.plans_path()).write_bytes(b"\x00garbage")
    assert fastpath._load() == []
    assert fastpath.try_fast(["anything"])[1] is None
    assert not list(cache.glob("*.tmp"))


def test_a_plan_is_stale_when_an_input_changes(cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    plan, kernel = _plan(tmp_path)
    assert fastpath._usable(plan)
    kernel.write_bytes(b"another kernel")  # same path, new content
    assert not fastpath._usable(plan)
    plan, kernel = _plan(tmp_path)
    os.utime(kernel, ns=(0, 0))  # touched
    assert not fastpath._usable(plan)
    plan, kernel = _plan(tmp_path)
    kernel.unlink()
    assert not fastpath._usable(plan)
    plan, _ = _plan(tmp_path)
    monkeypatch.setenv("MKSMOLNB_QEMU", "false")  # another QEMU binary
    assert not fastpath._usable(plan)


def test_a_plan_is_unusable_while_its_port_is_taken(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        plan, _ = _plan(tmp_path, ports=[("tcp", "127.0.0.1", port)])
        assert not fastpath._usable(plan)
        assert fastpath.port_error("tcp", "127.0.0.1", port) is not None
    assert fastpath._usable(plan)


def test_try_fast_spawns_from_a_valid_plan(cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "echo")
    echo = fastpath.which("echo")
    assert echo is not None
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k")
    key = fastpath.plan_key(["boot", "me"])
    fastpath.save_plan(key, fastpath.make_plan([echo, "from", "the plan"], echo,
                                               [str(kernel)], [], None, False, False))
    got_key, spawned = fastpath.try_fast(["boot", "me"])
    assert got_key == key and spawned is not None
    out = b""
    while chunk := os.read(spawned.stdout, 4096):
        out += chunk
    assert out == b"from the plan\n"
    _, status = os.waitpid(spawned.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    os.close(spawned.stdout)
    os.close(spawned.stderr)
    assert fastpath.try_fast(["boot", "you"])[1] is None


def test_spawn_reports_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fastpath.spawn([str(tmp_path / "no-such-qemu")], 0, 1, 2, die_with_parent=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_spawned_child_dies_with_its_parent() -> None:
    """A parent that is SIGKILLed (no clean-up at all) still takes the child down."""
    code = ("import os, sys, time\n"
            "from launcher.fastpath import spawn\n"
            "pid = spawn(['/bin/sleep', '60'], 0, 1, 2, die_with_parent=True)\n"
            "print(pid, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(child, 0)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
        except OSError:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the spawned child outlived its SIGKILLed parent")


def test_image_may_change_but_must_still_exist(cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-write root changes at every boot: that keeps the plan; a missing image, or a
    directory in its place, does not."""
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    image = tmp_path / "root.img"
    image.write_bytes(b"\0" * 4096)
    plan, _ = _plan(tmp_path, image=(str(image), str(image.resolve())))
    assert fastpath._usable(plan)
    with image.open("r+b") as f:  # the guest wrote to its disk
        f.write(b"written by the guest")
    assert fastpath._usable(plan)
    image.unlink()
    assert not fastpath._usable(plan)
    image.mkdir()
    assert not fastpath._usable(plan)


def test_startnb_script_reaches_the_fast_path_without_heavy_imports() -> None:
    """The installed ``startnb`` (bin/startnb) and the modules the fast path needs import
    none of the modules that cost milliseconds (``re`` alone is 6 ms here)."""
    from conftest import REPO

    script = (REPO / "bin" / "startnb").read_text()
    assert script.startswith("#!python\n") and script.rstrip().endswith("sys.exit(main())")
    code = (script.rstrip().removesuffix("sys.exit(main())")
            + "import launcher.fastpath\n"
            "heavy = {'re', 'enum', 'typing', 'argparse', 'subprocess', 'threading'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.strip() == "[]", r.stdout
