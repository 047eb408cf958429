"""The fast path's pieces without QEMU: the plan key, the plan file, what invalidates a
plan. How the child is started is tested in test_spawn.py; the end-to-end side (a second
identical boot adopts the QEMU the fast path started) is in test_launcher_e2e.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import fastpath, proc


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
    qemu = proc.which("true")
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
        assert proc.port_error("tcp", "127.0.0.1", port) is not None
    assert fastpath._usable(plan)


def test_try_fast_spawns_from_a_valid_plan(cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "echo")
    echo = proc.which("echo")
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
    """The installed ``startnb`` (bin/startnb) and the modules the fast path needs (the
    plan cache, the keeper of ``-d``, the staleness check of ``startnb SERVICE``) import
    none of the modules that cost milliseconds (``re`` alone is 6 ms here)."""
    from conftest import REPO

    script = (REPO / "bin" / "startnb").read_text()
    assert script.startswith("#!python\n") and "code = startnb.main()" in script
    code = (script.split("code = startnb.main()")[0]
            + "import launcher.fastpath, launcher.keeper, smolfs.image.staleness\n"
            "heavy = {'re', 'enum', 'typing', 'argparse', 'subprocess', 'threading',\n"
            "         'pathlib', 'contextlib', 'signal', 'collections', 'json'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.strip() == "[]", r.stdout


# -- what else a plan checks: KVM, image locks, a service's image, -d, private directories --


def test_a_plan_is_stale_when_the_kvm_state_changes(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    plan, _ = _plan(tmp_path)
    assert fastpath._usable(plan)
    state = proc.kvm_state()[0]
    other = proc.KVM_HARDWARE if state != proc.KVM_HARDWARE else proc.KVM_MISSING
    monkeypatch.setattr(fastpath, "kvm_state", lambda *a: (other, "changed"))
    assert not fastpath._usable(plan)


def test_a_plan_is_unusable_while_its_image_is_locked(cache: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A QEMU not started by startnb holds the image (its lock on bytes 100-355)."""
    import fcntl
    import struct

    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    image = tmp_path / "root.img"
    image.write_bytes(b"\0" * 4096)
    plan, _ = _plan(tmp_path, image=(str(image), str(image.resolve())))
    assert fastpath._usable(plan)
    if not hasattr(fcntl, "F_OFD_SETLK"):
        pytest.skip("no open-file-description locks on this platform")
    fd = os.open(image, os.O_RDWR)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                    struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 100, 256, 0))
        assert not fastpath._usable(plan)
        assert fastpath._usable({**plan, "readonly": True})  # --ro shares the image
    finally:
        os.close(fd)
    assert fastpath._usable(plan)


@pytest.fixture
def service_plan(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[dict[str, object], dict[str, Path]]:
    """A plan of ``startnb web``: its image's staleness snapshot, as the builder left it."""
    import json

    from smolfs.image import staleness

    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    monkeypatch.chdir(tmp_path)
    sets = tmp_path / "rescue.tgz"
    sets.write_bytes(b"set")
    rc = tmp_path / "services" / "web" / "etc" / "rc"
    rc.parent.mkdir(parents=True)
    rc.write_text("echo ready\n")
    image = tmp_path / "web-amd64.img"
    image.write_bytes(b"\0" * 4096)
    key, stats = staleness.inputs((), [sets], [rc.parent.parent], dirs=[rc.parent.parent.parent])
    (tmp_path / "web-amd64.img.json").write_text(json.dumps(
        {"tool": "mksmolnb", "size": 4096, "inputs": key}))
    staleness.remember(image, key, stats, ["web"])
    snap = staleness.snapshot(image)
    assert snap is not None
    plan, _ = _plan(tmp_path, image=(str(image), str(image.resolve())),
                    service={**snap, "absent": ["web", "SMOLTEST"]})
    return plan, {"sets": sets, "rc": rc, "image": image}


@pytest.mark.parametrize("change", ["set", "service file", "service dir", "image written",
                                    "manifest", "service name is a file",
                                    "kernel name is a file"])
def test_a_service_plan_is_stale_when_one_input_changes(
        service_plan: tuple[dict[str, object], dict[str, Path]], tmp_path: Path,
        change: str) -> None:
    plan, f = service_plan
    assert fastpath._usable(plan)
    if change == "set":
        os.utime(f["sets"], ns=(1, 1))
    elif change == "service file":
        f["rc"].write_text("echo changed\n")
    elif change == "service dir":
        (f["rc"].parent / "motd").write_text("new file\n")
    elif change == "image written":  # booted read-write: a rebuild is due
        os.utime(f["image"], ns=(2**62, 2**62))
    elif change == "manifest":
        f["image"].with_name("web-amd64.img.json").write_text("{}")
    elif change == "service name is a file":
        (tmp_path / "web").write_text("")
    elif change == "kernel name is a file":
        (tmp_path / "SMOLTEST").write_text("")
    assert not fastpath._usable(plan)


def test_a_detached_plan_needs_its_state_directory_free(cache: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    vmdir = tmp_path / "state" / "web"
    plan, _ = _plan(tmp_path, vmdir=str(vmdir))
    assert fastpath._usable(plan)
    vmdir.mkdir(parents=True)  # a VM of that name (or its remains): the ordinary path
    assert not fastpath._usable(plan)


def test_a_private_directory_is_made_afresh_for_each_run(cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """``--ready tcp:`` plans name a QMP socket in a directory of the run's own."""
    monkeypatch.setenv("MKSMOLNB_QEMU", "echo")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    echo = proc.which("echo")
    assert echo is not None
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k")
    key = fastpath.plan_key(["tcp"])
    fastpath.save_plan(key, fastpath.make_plan(
        [echo, f"unix:{fastpath.RUNDIR}/qmp.sock"], echo, [str(kernel)], [], None, False,
        False))
    dirs = []
    for _ in range(2):
        _, spawned = fastpath.try_fast(["tcp"])
        assert spawned is not None and spawned.rundir is not None
        assert os.path.isdir(spawned.rundir) and spawned.argv[1] == \
            f"unix:{spawned.rundir}/qmp.sock"
        assert os.stat(spawned.rundir).st_mode & 0o777 == 0o700
        dirs.append(spawned.rundir)
        spawned.kill()
        assert not os.path.exists(dirs[-1])
    assert dirs[0] != dirs[1]
    monkeypatch.setenv("MKSMOLNB_QEMU", str(tmp_path / "gone"))  # spawn fails: nothing left
    assert fastpath.try_fast(["tcp"])[1] is None
    assert not list(tmp_path.glob("startnb-*"))
