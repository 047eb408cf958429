"""smolfs.sets.fetch against a real HTTP server on 127.0.0.1 serving a synthetic release tree."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fakemirror import FakeMirror, build_release, make_set, write_sha512

from smolfs.errors import ChecksumMismatch, FetchError, UsageError
from smolfs.sets import mirror as transport
from smolfs.sets.cache import default_cache_dir
from smolfs.sets.fetch import NoSpace, NotCached, UnknownArtifact, available, fetch
from smolfs.sets.mirror import MirrorUnreachable
from smolfs.sets.release import DEFAULT_RELEASE, Release, parse_sha512, set_filename

SETS = "pub/NetBSD/NetBSD-10.1/amd64/binary/sets"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    build_release(root, "10.1", "amd64")
    build_release(root, "9.4", "i386", sets=("rescue", "etc"))
    return root


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never the real network or the user's cache; no pauses between retries."""
    monkeypatch.setenv("MKSMOLNB_MIRROR", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(transport, "RETRY_DELAYS", (0.0, 0.0))


@pytest.fixture
def server(tree: Path) -> Iterator[FakeMirror]:
    with FakeMirror(tree) as m:
        yield m


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha512(path: Path) -> str:
    return hashlib.sha512(path.read_bytes()).hexdigest()


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


# --- names, releases, formats (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "arch", "name"),
    [
        ("10.1", "amd64", "base.tar.xz"),
        ("10.0", "amd64", "base.tar.xz"),
        ("10.1", "i386", "base.tgz"),
        ("9.4", "amd64", "base.tgz"),
        ("current", "amd64", "base.tar.xz"),
        ("netbsd-9", "amd64", "base.tgz"),
        ("NetBSD-10.1", "amd64", "base.tar.xz"),
        ("10.1", "aarch64", "base.tar.xz"),
        ("9.4", "evbarm-aarch64", "base.tgz"),
    ],
)
def test_set_filename(release: str, arch: str, name: str) -> None:
    assert set_filename("base", release, arch) == name
    assert set_filename("base.tgz", release, arch) == name


def test_release_spellings() -> None:
    assert Release.parse("10.1").tree("amd64") == "pub/NetBSD/NetBSD-10.1/amd64"
    assert Release.parse("current").tree("i386") == "pub/NetBSD-daily/HEAD/latest/i386"
    assert Release.parse("10.1").tree("aarch64") == "pub/NetBSD/NetBSD-10.1/evbarm-aarch64"
    assert Release.parse("HEAD") == Release.parse("current")
    assert Release.parse("netbsd-10").tree("amd64") == "pub/NetBSD-daily/netbsd-10/latest/amd64"
    with pytest.raises(UsageError, match="unknown NetBSD release 'ten'") as e:
        Release.parse("ten")
    assert "current" in (e.value.hint or "")
    with pytest.raises(UsageError) as e:
        Release.parse("10")
    assert "10.1" in (e.value.hint or "")
    assert DEFAULT_RELEASE == "10.1"


def test_parse_sha512_formats() -> None:
    h = "ab" * 64
    assert parse_sha512(f"SHA512 (base.tar.xz) = {h}\n", "x") == {"base.tar.xz": h}
    assert parse_sha512(f"{h.upper()}  etc.tgz\n", "x") == {"etc.tgz": h}
    with pytest.raises(FetchError, match="is not a SHA512 list"):
        parse_sha512("<html>404</html>", "http://m/SHA512")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("MKSMOLNB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mksmolnb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mksmolnb"


# --- downloads ------------------------------------------------------------------------------


def test_fresh_fetch(
    server: FakeMirror, tree: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = fetch(["rescue", "base"], kernel="GENERIC", mirror=server.url, cache_dir=cache)
    assert r.sets["base"] == cache / "10.1/amd64/sets/base.tar.xz"
    assert r.kernel == cache / "10.1/amd64/kernel/netbsd-GENERIC.gz"
    for name, path in r.sets.items():
        published = tree / SETS / path.name
        assert path.read_bytes() == published.read_bytes()
        assert r.digests[name] == sha512(published)
    assert r.kernel.read_bytes()[:2] == b"\x1f\x8b"  # kept compressed
    assert r.digests["netbsd-GENERIC.gz"] == sha512(r.kernel)
    assert cache_files(cache) == [
        "10.1/amd64/kernel/.SHA512.lock",
        "10.1/amd64/kernel/.netbsd-GENERIC.gz.lock",
        "10.1/amd64/kernel/SHA512",
        "10.1/amd64/kernel/netbsd-GENERIC.gz",
        "10.1/amd64/sets/.SHA512.lock",
        "10.1/amd64/sets/.base.tar.xz.lock",
        "10.1/amd64/sets/.rescue.tar.xz.lock",
        "10.1/amd64/sets/SHA512",
        "10.1/amd64/sets/base.tar.xz",
        "10.1/amd64/sets/rescue.tar.xz",
    ]
    assert not list(cache.rglob("*.part"))
    err = capsys.readouterr().err
    assert "fetched base.tar.xz" in err and " kB in " in err  # one line per file: not a TTY
    assert "\r" not in err


def test_cache_hit_makes_no_request(server: FakeMirror, cache: Path) -> None:
    first = fetch(["rescue", "etc"], kernel="GENERIC", mirror=server.url, cache_dir=cache)
    seen = len(server.seen)
    again = fetch(["rescue", "etc"], kernel="GENERIC", mirror=server.url, cache_dir=cache)
    assert len(server.seen) == seen
    assert again == first
    # Not even a connection: the mirror may be gone.
    dead = f"http://127.0.0.1:{closed_port()}"
    assert fetch(["rescue"], mirror=dead, cache_dir=cache).sets == {"rescue": first.sets["rescue"]}


def test_cut_transfer_resumes_with_range(server: FakeMirror, tree: Path, cache: Path) -> None:
    server.cut["base.tar.xz"] = 100_000
    r = fetch(["base"], mirror=server.url, cache_dir=cache)
    assert [s.range for s in server.requests_for("base.tar.xz")] == [None, "bytes=100000-"]
    assert sha512(r.sets["base"]) == r.digests["base"] == sha512(tree / SETS / "base.tar.xz")


def test_part_file_from_an_earlier_run_is_resumed(
    server: FakeMirror, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    monkeypatch.setattr(transport, "RETRY_DELAYS", ())  # no retry: the run fails
    server.cut["base.tar.xz"] = 70_000
    with pytest.raises(FetchError, match="broke off") as e:
        fetch(["base"], mirror=server.url, cache_dir=cache)
    assert "resumes" in (e.value.hint or "")
    part = cache / "10.1/amd64/sets/base.tar.xz.part"
    assert part.stat().st_size == 70_000
    assert not (cache / "10.1/amd64/sets/base.tar.xz").exists()
    r = fetch(["base"], mirror=server.url, cache_dir=cache)
    assert server.requests_for("base.tar.xz")[-1].range == "bytes=70000-"
    assert sha512(r.sets["base"]) == r.digests["base"]
    assert not part.exists()


def test_server_ignoring_range_restarts(server: FakeMirror, tree: Path, cache: Path) -> None:
    server.cut["base.tar.xz"] = 50_000
    server.ignore_range = True
    r = fetch(["base"], mirror=server.url, cache_dir=cache)
    seen = server.requests_for("base.tar.xz")
    assert [s.range for s in seen] == [None, "bytes=50000-"]  # asked, got 200 and all bytes
    assert r.sets["base"].read_bytes() == (tree / SETS / "base.tar.xz").read_bytes()


def test_bad_part_file_is_fetched_again_whole(server: FakeMirror, cache: Path) -> None:
    part = cache / "10.1/amd64/sets/base.tar.xz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 1000)
    r = fetch(["base"], mirror=server.url, cache_dir=cache)
    assert [s.range for s in server.requests_for("base.tar.xz")] == ["bytes=7000-", None]
    assert sha512(r.sets["base"]) == r.digests["base"]


def test_corrupted_file_is_rejected(
    server: FakeMirror, tree: Path, cache: Path
) -> None:
    server.corrupt.add("base.tar.xz")
    with pytest.raises(ChecksumMismatch) as e:
        fetch(["rescue", "base"], mirror=server.url, cache_dir=cache)
    expected = sha512(tree / SETS / "base.tar.xz")
    assert e.value.expected == expected and e.value.actual != expected
    assert expected in e.value.message and e.value.actual in e.value.message
    assert "base.tar.xz" in e.value.message and "discarded" in e.value.message
    sets = cache / "10.1/amd64/sets"
    assert not (sets / "base.tar.xz").exists() and not (sets / "base.tar.xz.part").exists()
    assert (sets / "rescue.tar.xz").exists()  # what verified is kept


def test_damaged_cache_entry(server: FakeMirror, cache: Path) -> None:
    path = fetch(["etc"], mirror=server.url, cache_dir=cache).sets["etc"]
    path.write_bytes(b"bit rot")
    with pytest.raises(ChecksumMismatch, match=r"cached etc\.tar\.xz is damaged"):
        fetch(["etc"], offline=True, cache_dir=cache)
    assert not path.exists()
    path.parent.joinpath("etc.tar.xz.part").unlink(missing_ok=True)
    path.write_bytes(b"bit rot")
    r = fetch(["etc"], mirror=server.url, cache_dir=cache)  # online: fetched again
    assert sha512(r.sets["etc"]) == r.digests["etc"]


def test_unchanged_cached_file_is_not_hashed_again(server: FakeMirror, cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest checked once is remembered for the file in its exact state; any change to
    the file (a new ctime) makes the next use hash it, and a damaged file is caught."""
    from smolfs.sets import cache as cache_mod
    from smolfs.sets import fastsets

    monkeypatch.setattr(fastsets, "RACY_SECONDS", 0.0)  # the file is seconds old, not minutes
    hashed: list[str] = []
    real = cache_mod.hash_file

    def counting(path: Path, algo: str = "sha512") -> str:
        hashed.append(Path(path).name)
        return real(path, algo)

    monkeypatch.setattr(cache_mod, "hash_file", counting)
    path = fetch(["etc"], mirror=server.url, cache_dir=cache).sets["etc"]
    fetch(["etc"], offline=True, cache_dir=cache)  # checked by hashing, and remembered
    hashed.clear()
    fetch(["etc"], offline=True, cache_dir=cache)
    assert hashed == []
    assert any((cache / "fast").glob("*.sha512"))  # remembered in this cache, not the default
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # same size, one bit flipped: another ctime
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=r"cached etc\.tar\.xz is damaged"):
        fetch(["etc"], offline=True, cache_dir=cache)
    assert hashed == ["etc.tar.xz"]


# --- what is valid ---------------------------------------------------------------------------


def test_unknown_set(server: FakeMirror, cache: Path) -> None:
    with pytest.raises(UnknownArtifact, match="unknown set 'bsae'") as e:
        fetch(["rescue", "bsae"], mirror=server.url, cache_dir=cache)
    assert "its SHA512 lists: base, etc, rescue" in (e.value.hint or "")
    assert "known sets: base, comp" in (e.value.hint or "")
    with pytest.raises(UnknownArtifact, match=r"NetBSD 10\.1 amd64 publishes no set 'games'"):
        fetch(["games"], mirror=server.url, cache_dir=cache)
    assert not server.requests_for("rescue.tar.xz")  # names checked before any download
    with pytest.raises(UsageError, match="invalid set name"):
        fetch(["../etc"], mirror=server.url, cache_dir=cache)


def test_unknown_set_when_mirror_unreachable(cache: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(UnknownArtifact, match="unknown set 'bsae'") as e:
        fetch(["bsae"], mirror=dead, cache_dir=cache)
    assert "rescue" in (e.value.hint or "")


def test_unknown_release(server: FakeMirror, cache: Path) -> None:
    with pytest.raises(UnknownArtifact) as e:
        fetch(["base"], release="10.7", mirror=server.url, cache_dir=cache)
    url = f"{server.url}/pub/NetBSD/NetBSD-10.7/amd64/binary/sets/SHA512"
    assert url in e.value.message
    assert e.value.hint == (
        "releases on this mirror: 10.1, 9.4; or 'current' (daily build of NetBSD-current) "
        "or 'netbsd-10' (daily build of a branch)"
    )
    with pytest.raises(UnknownArtifact) as e:
        fetch(["base"], release="9.4", arch="amd64", mirror=server.url, cache_dir=cache)
    assert e.value.hint == "NetBSD 9.4 exists but has no amd64 tree on this mirror"
    assert not list(cache.glob("10.7/**/SHA512"))


def test_unknown_arch(cache: Path) -> None:
    with pytest.raises(UsageError, match="unknown architecture 'sparc64'") as e:
        fetch(["base"], arch="sparc64", cache_dir=cache)
    assert e.value.hint == "choose one of: amd64, i386, aarch64"


def test_unknown_kernel(server: FakeMirror, cache: Path) -> None:
    with pytest.raises(UnknownArtifact, match="publishes no kernel 'GENRIC'") as e:
        fetch([], kernel="GENRIC", mirror=server.url, cache_dir=cache)
    assert e.value.hint == "kernels in its SHA512: GENERIC"


def test_i386_and_older_release_use_tgz(server: FakeMirror, cache: Path) -> None:
    r = fetch(["rescue"], release="9.4", arch="i386", mirror=server.url, cache_dir=cache)
    assert r.sets["rescue"] == cache / "9.4/i386/sets/rescue.tgz"
    assert r.sets["rescue"].read_bytes()[:2] == b"\x1f\x8b"


def test_extension_follows_the_sha512_list(tmp_path: Path, cache: Path) -> None:
    build_release(tmp_path / "m", "10.1", "amd64", sets=("rescue",), kernels=(), ext=".tgz")
    r = fetch(["rescue"], mirror=str(tmp_path / "m"), cache_dir=cache)
    assert r.sets["rescue"].name == "rescue.tgz"


# --- mirrors ---------------------------------------------------------------------------------


def test_unreachable_mirror(cache: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(MirrorUnreachable) as e:
        fetch(["base"], mirror=dead, cache_dir=cache)
    assert e.value.message.startswith(f"cannot reach mirror {dead}: Connection refused")
    assert "--mirror" in (e.value.hint or "") and "MKSMOLNB_MIRROR" in (e.value.hint or "")


def test_mirror_from_environment(
    server: FakeMirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MKSMOLNB_MIRROR", server.url + "/pub/NetBSD/")
    r = fetch(["etc"])
    assert r.sets["etc"] == tmp_path / "default-cache/10.1/amd64/sets/etc.tar.xz"
    assert server.requests_for("etc.tar.xz")


def test_file_mirror(tree: Path, tmp_path: Path, cache: Path) -> None:
    local = tmp_path / "copy"
    shutil.copytree(tree, local)
    r = fetch(["rescue", "base"], kernel="GENERIC", mirror=local.as_uri(), cache_dir=cache)
    assert r.sets["base"].read_bytes() == (tree / SETS / "base.tar.xz").read_bytes()
    # A damaged local copy is caught too.
    victim = local / SETS / "etc.tar.xz"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatch):
        fetch(["etc"], mirror=local.as_uri(), cache_dir=cache)
    with pytest.raises(UnknownArtifact, match=r"NetBSD 9\.9 amd64 not found"):
        fetch(["etc"], release="9.9", mirror=str(local), cache_dir=cache)
    with pytest.raises(MirrorUnreachable, match="is not a directory"):
        fetch(["etc"], mirror=(tmp_path / "nowhere").as_uri(), cache_dir=cache)


def test_unsupported_scheme(cache: Path) -> None:
    with pytest.raises(UsageError, match="unsupported mirror URL"):
        fetch(["etc"], mirror="ftp://ftp.netbsd.org", cache_dir=cache)


def test_daily_build_refreshes_its_sha512(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "m"
    top = build_release(root, "HEAD", "amd64", sets=("etc",), kernels=())
    with FakeMirror(root) as server:
        first = fetch(["etc"], release="current", mirror=server.url, cache_dir=cache)
        assert first.sets["etc"] == cache / "HEAD/amd64/sets/etc.tar.xz"
        # A new daily build: "latest" now holds other bytes.
        make_set(top / "binary/sets/etc.tar.xz", "etc", seed=1)
        write_sha512(top / "binary/sets")
        second = fetch(["etc"], release="HEAD", mirror=server.url, cache_dir=cache)
        assert len(server.requests_for("SHA512")) == 2
        assert len(server.requests_for("etc.tar.xz")) == 2
        assert second.digests["etc"] != first.digests["etc"]
        assert sha512(second.sets["etc"]) == second.digests["etc"]
    with pytest.raises(UnknownArtifact) as e:
        fetch(["etc"], release="netbsd-8", mirror=str(root), cache_dir=cache)
    assert e.value.hint == "daily builds on this mirror: current"


# --- offline ---------------------------------------------------------------------------------


def test_offline(server: FakeMirror, cache: Path) -> None:
    with pytest.raises(NotCached, match=r"SHA512 list of NetBSD 10\.1 amd64 sets") as e:
        fetch(["base"], offline=True, cache_dir=cache)
    assert "without --offline" in (e.value.hint or "")
    fetch(["etc"], mirror=server.url, cache_dir=cache)
    with pytest.raises(NotCached, match=r"offline, and base.tar.xz of NetBSD 10.1 amd64") as e:
        fetch(["base"], offline=True, cache_dir=cache)
    assert "without --offline" in (e.value.hint or "")
    seen = len(server.seen)
    r = fetch(["etc"], offline=True, mirror="http://127.0.0.1:1", cache_dir=cache)
    assert sha512(r.sets["etc"]) == r.digests["etc"]
    assert len(server.seen) == seen


# --- sharing the cache -----------------------------------------------------------------------


def test_concurrent_fetches_download_once(server: FakeMirror, cache: Path) -> None:
    server.delay = 0.01  # ~0.3 s for base: the two fetches overlap
    results: list[object] = [None, None]

    def work(i: int) -> None:
        try:
            results[i] = fetch(["base"], mirror=server.url, cache_dir=cache)
        except Exception as err:  # reported below
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(not isinstance(r, Exception) for r in results), results
    assert results[0] == results[1]
    assert len(server.requests_for("base.tar.xz")) == 1
    assert len(server.requests_for("SHA512")) == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_no_space_left(server: FakeMirror, cache: Path) -> None:
    sets = cache / "10.1/amd64/sets"
    sets.mkdir(parents=True)
    # Writes to /dev/full fail with ENOSPC, like a full disk.
    (sets / "base.tar.xz.part").symlink_to("/dev/full")
    with pytest.raises(NoSpace) as e:
        fetch(["base"], mirror=server.url, cache_dir=cache)
    assert e.value.message == (
        f"no space left in the cache directory {cache} while writing base.tar.xz"
    )
    assert "MKSMOLNB_CACHE" in (e.value.hint or "")


def test_unwritable_cache(server: FakeMirror, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(FetchError, match="cache directory") as e:
        fetch(["etc"], mirror=server.url, cache_dir=blocker / "cache")
    assert "--cache-dir" in (e.value.hint or "")


def test_server_errors_are_retried(server: FakeMirror, cache: Path) -> None:
    server.fail["SHA512"] = [503]
    server.fail["etc.tar.xz"] = [502, 500]
    r = fetch(["etc"], mirror=server.url, cache_dir=cache)
    assert sha512(r.sets["etc"]) == r.digests["etc"]
    assert len(server.requests_for("etc.tar.xz")) == 3
    server.fail["rescue.tar.xz"] = [503, 503, 503]
    with pytest.raises(FetchError, match=r"answered 503 Service Unavailable for http://"):
        fetch(["rescue"], mirror=server.url, cache_dir=cache)
    server.fail["base.tar.xz"] = [403]
    with pytest.raises(FetchError, match="answered 403"):
        fetch(["base"], mirror=server.url, cache_dir=cache)
    assert len(server.requests_for("base.tar.xz")) == 1  # not worth retrying


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from smolfs.sets import progress

    monkeypatch.setattr(progress, "REDRAW", 0.0)
    out = FakeTTY()
    p = progress.Progress("base.tar.xz", 2_000_000, start=500_000, out=out)
    p.advance(500_000)
    assert "\r\x1b[Kbase.tar.xz [############------------]  50% 1.0 MB/2.0 MB" in out.getvalue()
    p.advance(1_000_000)
    p.finish()
    last = out.getvalue().rsplit("\r\x1b[K", 1)[1]
    assert last.startswith("fetched base.tar.xz 2.0 MB in ")
    assert last.endswith("s (resumed at 500.0 kB)\n")
    plain = io.StringIO()
    progress.Progress("etc.tgz", 1000, out=plain).finish()
    assert plain.getvalue().startswith("fetched etc.tgz 0 B in ")  # no bar when not a TTY


def test_kernel_by_url(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "m"
    top = build_release(root, "10.1", "amd64", sets=(), kernels=("GENERIC",))
    smol = root / "smol"
    smol.mkdir()
    kernel = smol / "netbsd-SMOL.gz"
    kernel.write_bytes(b"\x1f\x8b" + os.urandom(5000))
    digest = hashlib.sha256(kernel.read_bytes()).hexdigest()
    (smol / "netbsd-SMOL.gz.sha256").write_text(f"{digest}  netbsd-SMOL.gz\n")
    (smol / "netbsd-BARE").write_bytes(b"no checksum")
    with FakeMirror(root) as server:
        url = f"{server.url}/smol/netbsd-SMOL.gz"
        r = fetch([], kernel=url, cache_dir=cache)
        assert r.kernel is not None and r.kernel.read_bytes() == kernel.read_bytes()
        assert r.kernel.parent.parent == cache / "url"
        assert r.digests == {"netbsd-SMOL.gz": f"sha256:{digest}"}
        assert server.requests_for("SHA512")  # looked for a SHA512 list first
        # The release's own kernel directory publishes a SHA512 list.
        generic = f"{server.url}/{top.relative_to(root)}/binary/kernel/netbsd-GENERIC.gz"
        g = fetch([], kernel=generic, cache_dir=cache)
        assert g.digests["netbsd-GENERIC.gz"] == sha512(g.kernel)  # type: ignore[arg-type]
        with pytest.raises(FetchError, match="no checksum published for") as e:
            fetch([], kernel=f"{server.url}/smol/netbsd-BARE", cache_dir=cache)
        assert "netbsd-BARE.sha256" in e.value.message
        server.corrupt.add("netbsd-SMOL.gz")
        again = fetch([], kernel=url, offline=True, cache_dir=cache)  # cached: no request
        assert again.kernel == r.kernel
        r.kernel.unlink()
        with pytest.raises(ChecksumMismatch, match="published SHA256"):
            fetch([], kernel=url, cache_dir=cache)
    with pytest.raises(NotCached, match="offline, and the kernel"):
        fetch([], kernel=url, offline=True, cache_dir=tmp_path / "empty")


def test_available(server: FakeMirror, tmp_path: Path, cache: Path) -> None:
    from smolfs.sets.fetch import available

    found = available("9.4", "i386", mirror=server.url, cache_dir=cache)
    assert found == {"sets": ["etc", "rescue"], "kernels": ["GENERIC"]}
    with pytest.raises(UnknownArtifact):
        available("9.4", "amd64", mirror=server.url, cache_dir=cache)
    build_release(tmp_path / "m", "8.2", "amd64", sets=("etc",), kernels=())
    found = available("8.2", "amd64", mirror=str(tmp_path / "m"), cache_dir=cache)
    assert found == {"sets": ["etc"], "kernels": []}


def test_damaged_cached_sha512_list(server: FakeMirror, cache: Path) -> None:
    fetch(["etc"], mirror=server.url, cache_dir=cache)
    listing = cache / "10.1/amd64/sets/SHA512"
    listing.write_text("garbage\n")
    with pytest.raises(FetchError, match="is not a SHA512 list"):
        fetch(["etc"], offline=True, cache_dir=cache)
    r = fetch(["etc"], mirror=server.url, cache_dir=cache)  # online: fetched again
    assert r.digests["etc"] in listing.read_text()
    assert len(server.requests_for("SHA512")) == 2


def test_evbarm_aarch64_release(tmp_path: Path, cache: Path) -> None:
    """``--arch aarch64`` reads NetBSD's ``evbarm-aarch64`` tree: ``.tar.xz`` sets from 10 on,
    and the bootable ``netbsd-GENERIC64.img.gz`` beside the ELF ``netbsd-GENERIC64.gz``."""
    root = tmp_path / "mirror"
    top = build_release(root, "10.1", "evbarm-aarch64", sets=("rescue", "etc"),
                        kernels=("GENERIC64",), ext=".tar.xz")
    kdir = top / "binary" / "kernel"
    image = b"\0" * 56 + b"ARM\x64" + bytes(8)
    (kdir / "netbsd-GENERIC64.img.gz").write_bytes(gzip.compress(image, mtime=0))
    write_sha512(kdir)
    with FakeMirror(root) as m:
        r = fetch(["rescue"], release="10.1", arch="aarch64", kernel="GENERIC64",
                  mirror=m.url, cache_dir=cache)
        assert r.sets["rescue"] == cache / "10.1/aarch64/sets/rescue.tar.xz"
        assert r.kernel == cache / "10.1/aarch64/kernel/netbsd-GENERIC64.img.gz"
        assert gzip.decompress(r.kernel.read_bytes()) == image
        elf = fetch([], release="10.1", arch="evbarm-aarch64", kernel="netbsd-GENERIC64.gz",
                    mirror=m.url, cache_dir=cache)
        assert elf.kernel == cache / "10.1/aarch64/kernel/netbsd-GENERIC64.gz"
        assert next(s.path for s in m.seen if s.path.endswith("SHA512")) \
            == "/pub/NetBSD/NetBSD-10.1/evbarm-aarch64/binary/sets/SHA512"
        assert available("10.1", "aarch64", mirror=m.url, cache_dir=cache) \
            == {"sets": ["etc", "rescue"], "kernels": ["GENERIC64"]}
