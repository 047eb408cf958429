"""``smolfs fetch`` as a user runs it: a subprocess against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fakemirror import FakeMirror, build_release

from conftest import REPO


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    build_release(root, "10.1", "amd64")
    return root


@pytest.fixture
def server(tree: Path) -> Iterator[FakeMirror]:
    with FakeMirror(tree) as m:
        yield m


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(cache: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MKSMOLNB_")}
    # Never the real network, whatever a test forgets to pass.
    e.update(MKSMOLNB_CACHE=str(cache), MKSMOLNB_MIRROR=f"http://127.0.0.1:{closed_port()}")
    e.update(extra)
    return e


def smolfs_fetch(cache: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smolfs", "fetch", *args],
        cwd=REPO, env=env(cache, **extra_env), capture_output=True, text=True, timeout=60,
        check=False,
    )


def start(cache: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "smolfs", "fetch", *args], cwd=REPO, env=env(cache),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def one_line_error(r: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The error and hint lines; nothing else on stderr (progress aside), no traceback."""
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("smolfs: ")]
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("smolfs: error: ") and lines[1].startswith("smolfs: hint: ")
    return lines[0].removeprefix("smolfs: error: "), lines[1].removeprefix("smolfs: hint: ")


def test_fetch_end_to_end(server: FakeMirror, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r = smolfs_fetch(cache, "--mirror", server.url, "--kernel", "GENERIC", "rescue", "base")
    assert r.returncode == 0, r.stderr
    sets = cache / "10.1/amd64/sets"
    assert r.stdout.splitlines() == [
        str(sets / "rescue.tar.xz"),
        str(sets / "base.tar.xz"),
        str(cache / "10.1/amd64/kernel/netbsd-GENERIC.gz"),
    ]
    fetched = [ln.split()[1] for ln in r.stderr.splitlines() if ln.startswith("fetched ")]
    assert fetched == ["rescue.tar.xz", "base.tar.xz", "netbsd-GENERIC.gz"]
    # Offline, from the cache; the default is the rescue set.
    r = smolfs_fetch(cache, "--offline")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(sets / "rescue.tar.xz")]
    assert "using cached rescue.tar.xz" in r.stderr


def test_mirror_and_cache_from_the_environment(server: FakeMirror, tmp_path: Path) -> None:
    r = smolfs_fetch(tmp_path / "c", "etc", MKSMOLNB_MIRROR=server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "c/10.1/amd64/sets/etc.tar.xz")


def test_errors_are_one_line_with_exit_codes(server: FakeMirror, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r = smolfs_fetch(cache, "--mirror", server.url, "bsae")
    assert r.returncode == 1
    err, hint = one_line_error(r)
    assert err == "unknown set 'bsae' for NetBSD 10.1 amd64"
    assert hint.startswith("its SHA512 lists: base, etc, rescue (known sets: ")

    r = smolfs_fetch(cache, "--mirror", server.url, "--arch", "sparc", "base")
    assert r.returncode == 2
    assert one_line_error(r) == ("unknown architecture 'sparc'",
                                   "choose one of: amd64, i386, aarch64")

    r = smolfs_fetch(cache, "--mirror", server.url, "--release", "10.9", "base")
    assert r.returncode == 1
    err, hint = one_line_error(r)
    assert f"{server.url}/pub/NetBSD/NetBSD-10.9/amd64/binary/sets/SHA512" in err
    assert hint.startswith("releases on this mirror: 10.1;")

    dead = f"http://127.0.0.1:{closed_port()}"
    r = smolfs_fetch(cache, "--mirror", dead, "base")
    assert r.returncode == 1
    err, hint = one_line_error(r)
    assert err.startswith(f"cannot reach mirror {dead}: Connection refused")
    assert "--mirror URL" in hint and "MKSMOLNB_MIRROR" in hint

    r = smolfs_fetch(tmp_path / "empty", "--offline", "base")
    assert r.returncode == 1
    err, hint = one_line_error(r)
    assert err.startswith("offline, and the SHA512 list of NetBSD 10.1 amd64 sets")
    assert hint == "run the same command once without --offline"


def test_checksum_mismatch_from_the_cli(server: FakeMirror, tmp_path: Path) -> None:
    server.corrupt.add("etc.tar.xz")
    r = smolfs_fetch(tmp_path / "c", "--mirror", server.url, "etc")
    assert r.returncode == 1
    err, _ = one_line_error(r)
    assert err.startswith("etc.tar.xz from http://") and "(expected " in err and ", got " in err
    assert not list((tmp_path / "c").rglob("etc.tar.xz*"))


def test_two_processes_download_once(server: FakeMirror, tmp_path: Path) -> None:
    server.delay = 0.02  # base takes ~0.5 s to serve: the two runs overlap
    cache = tmp_path / "cache"
    procs = [start(cache, "--mirror", server.url, "base") for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] == f"{cache}/10.1/amd64/sets/base.tar.xz\n"
    assert len(server.requests_for("base.tar.xz")) == 1
    assert sum("fetched base.tar.xz" in err for _, err in outs) == 1


def test_help_names_the_default_release() -> None:
    from smolfs.sets.release import DEFAULT_RELEASE

    r = subprocess.run([sys.executable, "-m", "smolfs", "fetch", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0
    assert f"{DEFAULT_RELEASE} (default)" in r.stdout and "MKSMOLNB_MIRROR" in r.stdout


def test_list(server: FakeMirror, tmp_path: Path) -> None:
    r = smolfs_fetch(tmp_path / "c", "--mirror", server.url, "--list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["sets:    base etc rescue", "kernels: GENERIC"]
    assert not server.requests_for("rescue.tar.xz")
    r = smolfs_fetch(tmp_path / "c", "--offline", "--list")  # from the cached lists
    assert r.stdout.splitlines() == ["sets:    base etc rescue", "kernels: GENERIC"]
