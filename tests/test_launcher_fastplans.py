"""Plans for every launch path, end to end: ``startnb SERVICE``, ``--strip``, ``-d`` and
``--ready tcp:`` start QEMU from a plan when nothing changed, and a change of any one
input refuses the plan and does what the ordinary path does (a rebuild, a new strip, a
clear error). The smoltest kernels under QEMU; ``SERVICE`` builds against the local
mirror of test_launcher_service_image.py; ``--strip`` goes through a stand-in of kstrip on
``PYTHONPATH`` (the smoltest kernels have no driver table), which records each call.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fakemirror import FakeMirror
from kernels import TestKernels
from test_launcher_service_image import mirror, services  # noqa: F401  (fixtures)

from conftest import REPO, qemu_pids

DEBUG_EXIT = ["--qemu-arg=-device", "--qemu-arg=isa-debug-exit,iobase=0xf4,iosize=4"]
CACHED = "(started from a cached plan)"

#: A stand-in for kstrip with its signature: copies the kernel, counts its calls.
FAKE_KSTRIP = '''
import os, shutil
def strip(kernel, out=None, **kw):
    shutil.copyfile(kernel, out)
    with open(os.environ["STRIP_CALLS"], "a") as f:
        f.write(str(kernel) + "\\n")
'''


class Runner:
    """``python -m launcher`` in this test's directory, its own cache and state; every
    QEMU whose argv names the directory is killed at the end."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def boot(self, *args: str) -> tuple[bool, subprocess.CompletedProcess[str]]:
        """An attached boot to the guest's exit: (started from a plan, the run)."""
        r = self.run(*args, "-N", "--json", "--console", "none", "--timeout", "60",
                     "-a", "smoltest.exit=1", *DEBUG_EXIT)
        assert r.returncode == 3, r.stderr
        return bool(json.loads(r.stdout.splitlines()[0])["fast_path"]), r

    def gone(self, seconds: float = 5.0) -> bool:
        deadline = time.monotonic() + seconds
        while qemu_pids(str(self.work)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not qemu_pids(str(self.work))


@pytest.fixture
def runner(tmp_path: Path, mirror: FakeMirror) -> Iterator[Runner]:  # noqa: F811
    fake = tmp_path / "fake"
    (fake / "kstrip").mkdir(parents=True)
    (fake / "kstrip" / "__init__.py").write_text(FAKE_KSTRIP)
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, MKSMOLNB_MIRROR=mirror.url, MKSMOLNB_CACHE=str(tmp_path / "cache"),
               MKSMOLNB_STATE=str(tmp_path / "state"), TMPDIR=str(tmp_path / "tmp"),
               STRIP_CALLS=str(tmp_path / "strip-calls"),
               PYTHONPATH=os.pathsep.join([str(fake), str(REPO)]))
    r = Runner(tmp_path, env)
    try:
        yield r
    finally:
        for pid in qemu_pids(str(tmp_path)):
            os.kill(pid, 9)
        assert r.gone(), "QEMU left running"


@pytest.mark.qemu
@pytest.mark.slow
def test_service_plan_until_one_input_changes(runner: Runner, test_kernels: TestKernels,
                                              services: Path) -> None:  # noqa: F811
    args = ["rescue", "--services-dir", str(services), "-k", "SMOLTEST"]
    image = runner.work / "rescue-amd64.img"
    fast, r = runner.boot(*args)
    assert fast is False
    # RO=yes: attached read-only, so that a guest cannot write the image (it would be
    # stale, rebuilt at every start, and never started from a plan)
    drive = json.loads(r.stdout.splitlines()[0])["argv"]
    assert drive[drive.index("-drive") + 1].endswith(",readonly=on")
    fast, r = runner.boot(*args)
    assert fast and "up to date" in r.stderr
    built = image.stat().st_mtime_ns
    cache = runner.work / "cache" / "10.1" / "amd64"
    (set_file,) = (cache / "sets").glob("rescue.*")
    (kernel,) = (cache / "kernel").glob("netbsd-SMOLTEST*")
    rc = services / "rescue" / "etc" / "rc"
    for what, change in [
        ("a set", lambda: os.utime(set_file)),
        ("the kernel", lambda: os.utime(kernel)),
        ("a service file", lambda: rc.write_text(rc.read_text() + "# changed\n")),
        ("the services", lambda: (services / "rescue" / "etc" / "motd").write_text("hi\n")),
        ("the image", lambda: os.utime(image, ns=(time.time_ns() + 10**9,) * 2)),
    ]:
        change()
        fast, r = runner.boot(*args)  # refused: rebuilt by the ordinary path
        assert not fast and "up to date" not in r.stderr, what
        assert image.stat().st_mtime_ns != built, what
        built = image.stat().st_mtime_ns
        assert runner.boot(*args)[0], what  # and the next run has a plan again
    (runner.work / "SMOLTEST").write_text("")  # -k SMOLTEST now names this (empty) file
    r = runner.run(*args, "-N", "--console", "none", "--timeout", "30", "--debug")
    assert r.returncode == 1 and CACHED not in r.stderr
    assert "kernel" in r.stderr and "SMOLTEST" in r.stderr, r.stderr


@pytest.mark.qemu
@pytest.mark.slow
def test_read_write_service_keeps_what_its_vm_wrote(runner: Runner, test_kernels: TestKernels,
                                                     services: Path) -> None:  # noqa: F811
    """``RO=no`` (as caddy): the disk is attached read-write and what the guest wrote
    stays; the next start neither rebuilds the image nor refuses its plan."""
    conf = services / "rescue" / "service.conf"
    conf.write_text(conf.read_text().replace("RO=yes", "RO=no"))
    args = ["rescue", "--services-dir", str(services), "-k", "SMOLTEST"]
    image = runner.work / "rescue-amd64.img"
    fast, r = runner.boot(*args)
    assert fast is False and "up to date" not in r.stderr
    drive = json.loads(r.stdout.splitlines()[0])["argv"]
    assert not drive[drive.index("-drive") + 1].endswith(",readonly=on")
    ino = image.stat().st_ino
    for plan in (True, False):  # from the plan, then by the builder (the plan removed)
        if not plan:
            for f in (runner.work / "cache").rglob("*plan*"):
                if f.is_file():
                    f.unlink()
        with image.open("r+b") as f:  # what a guest writes to its read-write root
            f.seek(-5, os.SEEK_END)
            f.write(b"guest")
        os.utime(image, ns=(time.time_ns() + 10**9,) * 2)
        fast, r = runner.boot(*args)
        assert "up to date" in r.stderr or fast, r.stderr
        assert fast is plan, r.stderr
        assert image.stat().st_ino == ino and image.read_bytes().endswith(b"guest")


@pytest.mark.qemu
def test_strip_plan_until_the_kernel_or_its_stripped_copy_changes(
        runner: Runner, test_kernels: TestKernels) -> None:
    kernel = runner.work / "netbsd"
    kernel.write_bytes(test_kernels.pvh.read_bytes())
    calls = runner.work / "strip-calls"

    def strips() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    assert runner.boot(str(kernel), "--strip")[0] is False and strips() == 1
    assert runner.boot(str(kernel), "--strip")[0] and strips() == 1
    (stripped,) = (runner.work / "cache" / "stripped").glob("*.stripped")
    with stripped.open("ab") as f:  # the cache entry changed: refused, stripped again
        f.write(b"\0")
    assert not runner.boot(str(kernel), "--strip")[0] and strips() == 2
    assert stripped.read_bytes() == test_kernels.pvh.read_bytes()
    assert runner.boot(str(kernel), "--strip")[0] and strips() == 2
    stripped.unlink()  # gone
    assert not runner.boot(str(kernel), "--strip")[0] and strips() == 3
    kernel.write_bytes(test_kernels.pvh64.read_bytes())  # another kernel
    assert not runner.boot(str(kernel), "--strip")[0] and strips() == 4
    assert runner.boot(str(kernel), "--strip")[0] and strips() == 4


@pytest.mark.qemu
def test_detached_plan_needs_a_free_name(runner: Runner, test_kernels: TestKernels,
                                         disk: Path) -> None:
    args = ["-d", "--name", "web", str(test_kernels.pvh), str(disk), "--ro", "-N", "--json"]
    for fast in (False, True):
        r = runner.run(*args)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["fast_path"] is fast and info["name"] == "web"
        assert qemu_pids(str(runner.work)) == [info["pid"]]
        state = Path(info["state_dir"])
        assert {"qemu.pid", "serial.log", "manifest.json", "image"} <= \
            {p.name for p in state.iterdir()}
        assert "SERVICE READY" in runner.run("logs", "web").stdout
        if fast:  # the name is taken: refused, and the ordinary path says why
            again = runner.run(*args, "--debug")
            assert again.returncode == 1 and CACHED not in again.stderr
            assert "already running" in again.stderr, again.stderr
        stop = runner.run("stop", "web", "--grace", "0.3")
        assert stop.returncode == 0, stop.stderr
        assert runner.gone() and not state.exists()


@pytest.mark.qemu
def test_tcp_plan_makes_a_private_directory_per_run(runner: Runner,
                                                    test_kernels: TestKernels) -> None:
    """The guest never listens: not ready either way; the second run starts from the
    plan, with a QMP socket in a directory of its own, removed afterwards."""
    import socket

    kernel = runner.work / "netbsd"
    kernel.write_bytes(test_kernels.pvh.read_bytes())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for fast in (False, True):
        r = runner.run(str(kernel), "-p", f"{port}:80", "--ready", f"tcp:{port}",
                       "--timeout", "2", "--console", "none", "--debug")
        assert r.returncode == 1 and "not ready after 2 s" in r.stderr, r.stderr
        assert (CACHED in r.stderr) is fast
        assert not list((runner.work / "tmp").iterdir())
    assert runner.gone()


@pytest.mark.qemu
@pytest.mark.parametrize("ready", ["console", "http"])
def test_detached_plan_timeout_leaves_nothing(runner: Runner, test_kernels: TestKernels,
                                              disk: Path, ready: str) -> None:
    """A detached QEMU from a plan that is not ready in time is stopped, its last console
    lines shown and its state directory removed, as on the ordinary path (the smoltest
    guest answers no HTTP: ``--ready http:`` times out too)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    how = (["-N", "-a", "smoltest.noready"] if ready == "console"
           else ["-p", f"{port}:80", "--ready", f"http:{port}/"])
    for fast in (False, True):
        r = runner.run("-d", "--name", "slow", str(test_kernels.pvh), str(disk), *how,
                       "--timeout", "2", "--debug")
        assert r.returncode == 1 and "not ready after 2 s" in r.stderr, r.stderr
        assert (CACHED in r.stderr) is fast
        assert "| Starting smoltest service." in r.stderr
        assert runner.gone() and not (runner.work / "state" / "slow").exists()


@pytest.mark.qemu
@pytest.mark.slow
def test_service_strip_plan_spawns_without_heavy_imports(
        runner: Runner, test_kernels: TestKernels, services: Path) -> None:  # noqa: F811
    """From a plan, ``startnb SERVICE --strip`` reaches QEMU's exec without the builder,
    kstrip, hashing, JSON or ``re``: stats and the plan file only."""
    args = ["rescue", "--services-dir", str(services), "-k", "SMOLTEST", "--strip"]
    assert runner.boot(*args)[0] is False
    full = [*args, "-N", "--json", "--console", "none", "--timeout", "60", "-a",
            "smoltest.exit=1", *DEBUG_EXIT]
    code = ("import sys\nfrom launcher.fastpath import try_fast\n"
            f"key, spawned = try_fast({full!r})\n"
            "heavy = {'re', 'json', 'hashlib', 'argparse', 'typing', 'enum',\n"
            "         'smolfs.image.build',\n"
            "         'kstrip', 'elftools', 'launcher.boot', 'launcher.service_image'}\n"
            "print(spawned is not None, sorted(heavy & set(sys.modules)))\n"
            "if spawned is not None:\n    spawned.kill()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=runner.work, env=runner.env,
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "True []", r.stdout + r.stderr


@pytest.mark.qemu
def test_detached_plan_keeps_the_first_name(runner: Runner, test_kernels: TestKernels,
                                            disk: Path) -> None:
    """Without ``--name`` a VM is named after its image; a second one gets ``-2`` and no
    plan of that name: once both are stopped, the plan names the first again."""
    args = ["-d", str(test_kernels.pvh), str(disk), "--ro", "-N", "--json"]
    runs = [runner.run(*args), runner.run(*args)]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    got = [json.loads(r.stdout) for r in runs]
    assert [(g["name"], g["fast_path"]) for g in got] == [("disk", False), ("disk-2", False)]
    for name in ("disk", "disk-2"):
        assert runner.run("stop", name, "--force").returncode == 0
    assert runner.gone()
    r = runner.run(*args)
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["name"], json.loads(r.stdout)["fast_path"]) == ("disk", True)
    assert runner.run("stop", "disk", "--force").returncode == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shape(text: str) -> list[str]:
    """Output lines with numbers blanked (times, pids), importtime's lines left out."""
    import re

    return [re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?", "N", line))
            for line in text.splitlines() if not line.startswith("import time:")]


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


#: ``python -c`` as ``python -m launcher``, where the keeper cannot be told of the console
#: file's writes (:func:`launcher.filewatch.watch` finds no inotify): the plan polls it.
WITHOUT_FILE_WATCH = ("import sys, launcher.filewatch as w; w.watch = lambda path: None; "
                      "from launcher.__main__ import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.qemu
@pytest.mark.parametrize(("as_json", "watched"), [(False, True), (True, True), (False, False)],
                         ids=["human", "json", "polled"])
def test_detached_plan_reports_as_the_ordinary_path_without_it(
        runner: Runner, test_kernels: TestKernels, disk: Path, as_json: bool,
        watched: bool) -> None:
    """A repeated ``startnb -d`` reports readiness from its plan (launcher.detached): the
    same lines, JSON and manifest as the run that saved the plan, with its own pid and
    times, and nothing of the ordinary path imported (argparse, the configuration, the
    boot loop); the VM then runs under its keeper as any other. Woken by the console
    file's writes, or polling it where they cannot be waited for."""
    args = ["-d", "--name", "web", str(test_kernels.pvh), str(disk), "--ro", "-N",
            *(["--json"] if as_json else [])]
    runs, manifests = [], []
    for importtime in (False, True):
        extra = ["-X", "importtime"] if importtime else []
        entry = ["-m", "launcher"] if watched or not importtime else ["-c", WITHOUT_FILE_WATCH]
        r = subprocess.run([sys.executable, *extra, *entry, *args], cwd=runner.work,
                           env=runner.env, capture_output=True, text=True, timeout=120,
                           check=False)
        assert r.returncode == 0, r.stderr
        runs.append(r)
        state = runner.work / "state" / "web"
        manifests.append(json.loads((state / "manifest.json").read_text()))
        assert manifests[-1]["pid"] == qemu_pids(str(runner.work))[0]
        assert "SERVICE READY" in runner.run("logs", "web").stdout
        ps = runner.run("ps", "--json")
        assert [vm["name"] for vm in json.loads(ps.stdout)] == ["web"], ps.stdout
        stop = runner.run("stop", "web", "--grace", "0.3")
        assert stop.returncode == 0, stop.stderr
        assert runner.gone() and not state.exists()
    ordinary, planned = runs
    loaded = _imported(planned.stderr)
    assert "launcher.detached" in loaded
    assert not loaded & {"argparse", "launcher.config", "launcher.boot", "launcher.vm",
                         "launcher.checks", "pathlib"}, sorted(loaded)
    assert _shape(planned.stderr) == _shape(ordinary.stderr)
    first, second = manifests
    for key in ("pid", "started", "timing"):
        assert first.pop(key) != second.pop(key)
    assert first == second and first["ready"] is True
    if as_json:
        one, two = (json.loads(r.stdout) for r in runs)
        assert (one.pop("fast_path"), two.pop("fast_path")) == (False, True)
        assert one.pop("pid") != two.pop("pid")
        assert set(one.pop("timing")) == set(two.pop("timing"))
        assert one == two
    else:
        assert runs[0].stdout == runs[1].stdout == ""


@pytest.mark.qemu
@pytest.mark.parametrize("case", ["panic", "noready", "http"])
def test_detached_plan_hands_what_goes_wrong_to_the_ordinary_path(
        runner: Runner, test_kernels: TestKernels, disk: Path, case: str) -> None:
    """A detached run from a plan that does not get ready (the guest panics, never says
    it is ready, or answers no HTTP in time) ends as the run that saved the plan did: the
    same error, the same console lines, nothing left (the plan's report is not used)."""
    how = {"panic": ["-N", "-a", "smoltest.panic"],
           "noready": ["-N", "-a", "smoltest.noready", "--timeout", "2"],
           "http": ["-p", f"{_free_port()}:80", "--ready", "http:PORT/", "--timeout", "2"]}
    args = ["-d", "--name", "bad", str(test_kernels.pvh), str(disk), "--ro", *how[case]]
    if case == "http":
        port = args[args.index("-p") + 1].split(":")[0]
        args[args.index("http:PORT/")] = f"http:{port}/"
    runs = []
    for importtime in (False, True):
        extra = ["-X", "importtime"] if importtime else []
        r = subprocess.run([sys.executable, *extra, "-m", "launcher", *args], cwd=runner.work,
                           env=runner.env, capture_output=True, text=True, timeout=120,
                           check=False)
        runs.append(r)
        assert runner.gone() and not (runner.work / "state" / "bad").exists()
    ordinary, planned = runs
    assert "launcher.detached" in _imported(planned.stderr)  # it had the plan's report
    assert ordinary.returncode == planned.returncode == 1, planned.stderr
    assert _shape(planned.stderr) == _shape(ordinary.stderr), planned.stderr
    said = {"panic": "the guest's kernel panicked (panic: smoltest)",
            "noready": "not ready after 2 s", "http": "not ready after 2 s"}[case]
    assert said in planned.stderr


@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_detached_plan_stopped_before_ready(runner: Runner, test_kernels: TestKernels,
                                            disk: Path, sig: signal.Signals) -> None:
    """SIGTERM or Ctrl-C while a run from a plan waits for readiness: QEMU stopped, the
    state directory removed, the command ends at once as the ordinary path would."""
    args = ["-d", "--name", "slow", str(test_kernels.pvh), str(disk), "--ro", "-N",
            "-a", "smoltest.spin=4000", "--timeout", "60"]
    first = runner.run(*args)
    assert first.returncode == 0, first.stderr
    assert runner.run("stop", "slow", "--force").returncode == 0 and runner.gone()
    state = runner.work / "state" / "slow"
    p = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "launcher", *args],
                         cwd=runner.work, env=runner.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (state / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert "launcher.detached" in _imported(err)
    assert p.returncode in (128 + sig, 1, -sig), err
    assert runner.gone() and not state.exists()


@pytest.mark.qemu
def test_the_installed_script_ends_a_detached_run_from_its_plan_at_once(
        runner: Runner, test_kernels: TestKernels, disk: Path) -> None:
    """``bin/startnb`` skips the interpreter's teardown after a report from a plan: the
    report still reaches a pipe whole, the exit status is 0, the VM runs on."""
    args = ["-d", "--name", "web", str(test_kernels.pvh), str(disk), "--ro", "-N", "--json"]
    for fast in (False, True):
        r = subprocess.run([sys.executable, str(REPO / "bin" / "startnb"), *args],
                           cwd=runner.work, env=runner.env, capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["fast_path"] is fast and info["ready"] is True
        assert qemu_pids(str(runner.work)) == [info["pid"]]
        assert runner.run("stop", "web", "--grace", "0.3").returncode == 0
        assert runner.gone()


@pytest.mark.qemu
def test_detached_plan_names_the_image_a_link_points_to_now(
        runner: Runner, test_kernels: TestKernels, disk: Path) -> None:
    """The manifest of a run from a plan names the image its link resolves to now (what
    ``startnb ps`` shows and what later boots check for users of an image)."""
    import shutil

    images = [runner.work / "a.img", runner.work / "b.img"]
    for image in images:
        shutil.copyfile(disk, image)
    link = runner.work / "root.img"
    args = ["-d", "--name", "web", str(test_kernels.pvh), "root.img", "--ro", "-N", "--json"]
    for fast, image in ((False, images[0]), (True, images[1])):
        link.unlink(missing_ok=True)
        link.symlink_to(image.name)
        r = runner.run(*args)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["fast_path"] is fast
        manifest = json.loads((runner.work / "state" / "web" / "manifest.json").read_text())
        assert manifest["image"] == str(image)
        ps = json.loads(runner.run("ps", "--json").stdout)
        assert [vm["image"] for vm in ps] == [str(image)], ps
        assert runner.run("stop", "web", "--grace", "0.3").returncode == 0
        assert runner.gone()


@pytest.mark.qemu
def test_detached_service_plan_says_what_an_up_to_date_run_says(
        runner: Runner, test_kernels: TestKernels, services: Path) -> None:  # noqa: F811
    """``startnb SERVICE -d`` from its plan prints the lines an ordinary run prints for an
    image up to date (the image named as given: ``./root.img``)."""
    args = ["rescue", "./root.img", "--services-dir", str(services), "-k", "SMOLTEST",
            "-N", "-d", "--name", "svc"]
    runs = []
    for step in ("build", "ordinary", "plan"):
        if step == "ordinary":
            (runner.work / "cache" / "plans.marshal").unlink()
        extra = ["-X", "importtime"] if step == "plan" else []
        r = subprocess.run([sys.executable, *extra, "-m", "launcher", *args], cwd=runner.work,
                           env=runner.env, capture_output=True, text=True, timeout=120,
                           check=False)
        assert r.returncode == 0, r.stderr
        runs.append(r)
        assert runner.run("stop", "svc", "--force").returncode == 0 and runner.gone()
    _, ordinary, planned = runs
    assert "launcher.detached" in _imported(planned.stderr)
    assert "./root.img: up to date (same inputs, not modified since)" in ordinary.stderr
    assert _shape(planned.stderr) == _shape(ordinary.stderr)


def test_file_watch_wakes_on_a_write_only(tmp_path: Path) -> None:
    """The descriptor launcher.detached waits on: readable once the file is written to,
    not before, and again only after the next write once drained."""
    from launcher.filewatch import drain, watch

    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    fd = watch(str(log))
    if fd is None:
        pytest.skip("no inotify here")
    try:
        assert select.select([fd], [], [], 0.05)[0] == []
        with log.open("ab", buffering=0) as f:
            f.write(b"NetBSD")
            assert select.select([fd], [], [], 1.0)[0] == [fd]
            drain(fd)
            assert select.select([fd], [], [], 0.05)[0] == []
            f.write(b" 7.99.4\r\n")
            assert select.select([fd], [], [], 1.0)[0] == [fd]
    finally:
        os.close(fd)
