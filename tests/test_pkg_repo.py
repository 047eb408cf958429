"""Package repositories: the official layout over a real HTTP server on 127.0.0.1, each
index compression, digests, the cache, offline use and PKG_PATH-style directories."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers.fakemirror import FakeMirror
from helpers.pkgsynth import SynthPkg, repo_path, write_repo

from smolfs.errors import ChecksumMismatch, FetchError, InputError, UsageError
from smolfs.pkg.repo import NotCachedPkg, default_url, open_repository


def packages() -> list[SynthPkg]:
    return [SynthPkg("libfoo-1.2nb3", files={"lib/libfoo.so.1": os.urandom(50_000)}),
            SynthPkg("app-1.0", files={"bin/app": b"#!/bin/sh\n"}, depends=["libfoo>=1.2"])]


def test_default_url_is_the_official_layout() -> None:
    assert default_url("amd64", "10.1", "https://cdn.netbsd.org") == \
        "https://cdn.netbsd.org/pub/pkgsrc/packages/NetBSD/x86_64/10.0/All"
    assert default_url("i386", "9.4", "https://m.example/pub/NetBSD") == \
        "https://m.example/pub/pkgsrc/packages/NetBSD/i386/9.0/All"
    assert default_url("amd64", "netbsd-10", "https://m.example").endswith("/x86_64/10.0/All")
    assert default_url("aarch64", "10.1", "https://m.example").endswith("/aarch64/10.0/All")
    with pytest.raises(UsageError, match="no pkgsrc packages for release 'HEAD'"):
        default_url("amd64", "HEAD")


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_index_in_each_compression_over_http(tmp_path: Path, compression: str) -> None:
    all_dir = write_repo(repo_path(tmp_path / "m"), packages(), (compression,))
    assert (all_dir / f"pkg_summary.{compression}").is_file()
    with FakeMirror(tmp_path / "m") as fake:
        repo = open_repository(None, "amd64", "10.1", mirror=fake.url,
                               cache_dir=tmp_path / "cache")
        assert sorted(p.name for p in repo.index()) == ["app-1.0", "libfoo-1.2nb3"]
        lib = next(p for p in repo.index() if p.name.startswith("libfoo"))
        path = repo.fetch(lib)
        assert path.read_bytes() == (all_dir / "libfoo-1.2nb3.tgz").read_bytes()
        # cached: a second use asks the server for nothing
        before = len(fake.seen)
        again = open_repository(None, "amd64", "10.1", mirror=fake.url,
                                cache_dir=tmp_path / "cache")
        assert again.fetch(next(p for p in again.index() if p.name == lib.name)) == path
        assert len(fake.seen) == before


def test_offline_uses_the_cache_only(tmp_path: Path) -> None:
    write_repo(repo_path(tmp_path / "m"), packages())
    cache = tmp_path / "cache"
    with FakeMirror(tmp_path / "m") as fake:
        url = fake.url
        repo = open_repository(None, mirror=url, cache_dir=cache)
        repo.fetch(repo.index()[0])
    off = open_repository(None, mirror=url, offline=True, cache_dir=cache)
    names = {p.name: p for p in off.index()}
    assert off.fetch(names["libfoo-1.2nb3"]).is_file()
    with pytest.raises(NotCachedPkg, match=r"offline, and app-1.0.tgz \(app-1.0\) is not in "):
        off.fetch(names["app-1.0"])
    with pytest.raises(NotCachedPkg, match="package index"):
        open_repository(None, mirror=url, offline=True, cache_dir=tmp_path / "empty").index()


def test_cut_transfer_resumes(tmp_path: Path) -> None:
    write_repo(repo_path(tmp_path / "m"), packages())
    with FakeMirror(tmp_path / "m") as fake:
        fake.cut["libfoo-1.2nb3.tgz"] = 20_000
        repo = open_repository(None, mirror=fake.url, cache_dir=tmp_path / "cache")
        lib = next(p for p in repo.index() if p.name.startswith("libfoo"))
        assert repo.fetch(lib).is_file()
        ranges = [s.range for s in fake.requests_for("libfoo-1.2nb3.tgz")]
        assert ranges[0] is None and ranges[-1] == "bytes=20000-"


def test_file_cksum_mismatch_names_the_package(tmp_path: Path) -> None:
    write_repo(repo_path(tmp_path / "m"), packages())
    cache = tmp_path / "cache"
    with FakeMirror(tmp_path / "m") as fake:
        fake.corrupt.add("app-1.0.tgz")
        repo = open_repository(None, mirror=fake.url, cache_dir=cache)
        app = next(p for p in repo.index() if p.name == "app-1.0")
        with pytest.raises(ChecksumMismatch, match=r"app-1.0: app-1.0.tgz .*SHA256 .*discarded"):
            repo.fetch(app)
    assert not list(cache.rglob("app-1.0.tgz*"))


def test_sha512_list_checked_when_there_is_no_file_cksum(tmp_path: Path) -> None:
    all_dir = write_repo(repo_path(tmp_path / "m"), packages(), cksum=False, sha512=True)
    with FakeMirror(tmp_path / "m") as fake:
        fake.corrupt.add("app-1.0.tgz")
        repo = open_repository(None, mirror=fake.url, cache_dir=tmp_path / "cache")
        assert repo.digests()["app-1.0.tgz"] == hashlib.sha512(
            (all_dir / "app-1.0.tgz").read_bytes()).hexdigest()
        app = next(p for p in repo.index() if p.name == "app-1.0")
        with pytest.raises(ChecksumMismatch, match="SHA512"):
            repo.fetch(app)


def test_size_mismatch_in_a_local_repository(tmp_path: Path) -> None:
    all_dir = write_repo(tmp_path / "All", packages())
    with (all_dir / "app-1.0.tgz").open("ab") as f:
        f.write(b"junk")
    for url in (str(all_dir), all_dir.as_uri()):
        repo = open_repository(url)
        app = next(p for p in repo.index() if p.name == "app-1.0")
        with pytest.raises(ChecksumMismatch, match=r"app-1.0: .*FILE_SIZE"):
            repo.fetch(app)


def test_pkg_path_directory_without_index(tmp_path: Path) -> None:
    all_dir = write_repo(tmp_path / "mine", packages(), summary=False)
    repo = open_repository(str(all_dir))
    by = {p.name: p for p in repo.index()}
    assert set(by) == {"app-1.0", "libfoo-1.2nb3"}
    assert by["app-1.0"].depends == ["libfoo>=1.2"]
    assert by["app-1.0"].get("MACHINE_ARCH") == "x86_64"
    assert repo.fetch(by["app-1.0"]) == all_dir / "app-1.0.tgz"


def test_bad_repositories(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a directory"):
        open_repository(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds no pkg_summary and no .tgz"):
        open_repository(str(tmp_path / "empty")).index()
    (tmp_path / "m").mkdir()
    with FakeMirror(tmp_path / "m") as fake, pytest.raises(FetchError, match="no package index"):
        open_repository(fake.url + "/x/All", cache_dir=tmp_path / "c").index()


def test_two_builds_fetching_one_package_download_it_once(tmp_path: Path) -> None:
    import threading

    write_repo(repo_path(tmp_path / "m"), packages())
    cache = tmp_path / "cache"
    with FakeMirror(tmp_path / "m") as fake:
        open_repository(None, mirror=fake.url, cache_dir=cache).index()  # index cached
        fake.delay = 0.01
        paths: list[Path] = []

        def one() -> None:
            repo = open_repository(None, mirror=fake.url, cache_dir=cache)
            lib = next(p for p in repo.index() if p.name.startswith("libfoo"))
            paths.append(repo.fetch(lib))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(paths) == 2 and paths[0] == paths[1]
        assert len(fake.requests_for("libfoo-1.2nb3.tgz")) == 1


def test_package_missing_from_the_mirror(tmp_path: Path) -> None:
    all_dir = write_repo(repo_path(tmp_path / "m"), packages())
    (all_dir / "app-1.0.tgz").unlink()
    with FakeMirror(tmp_path / "m") as fake:
        repo = open_repository(None, mirror=fake.url, cache_dir=tmp_path / "cache")
        app = next(p for p in repo.index() if p.name == "app-1.0")
        with pytest.raises(FetchError, match=r"app-1.0: the index names app-1.0.tgz, but "
                                             r"http://.*/All/app-1.0.tgz does not exist"):
            repo.fetch(app)
