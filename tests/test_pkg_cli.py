"""``smolfs pkg search|info|deps``, a package as a ``smolfs mkfs`` SOURCE, and start-up:
neither ``smolfs --help`` nor a build without packages imports the package code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.pkgsynth import SynthPkg, write_repo
from test_build import Image, ok, one_line_error, smolfs

from conftest import REPO


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "All", [
        SynthPkg("libfoo-1.2nb3", files={"lib/libfoo.so.1": b"L" * 3000},
                 provides=["/usr/pkg/lib/libfoo.so.1"], comment="a library"),
        SynthPkg("libfoo-1.10", files={"lib/libfoo.so.1": b"N" * 3000}, comment="a library"),
        SynthPkg("web-2.0", files={"bin/web": b"#!/bin/sh\n"}, depends=["libfoo>=1.2<1.5"],
                 requires=["/usr/pkg/lib/libfoo.so.1"], comment="a static web server"),
        SynthPkg("other-1.0", files={"bin/o": b"o"}, machine_arch="i386"),
        SynthPkg("arm-1.0", files={"bin/a": b"a"}, machine_arch="aarch64"),
    ])


def test_search(repo: Path, tmp_path: Path) -> None:
    out = ok(smolfs("pkg", "search", "web server", "--pkg-repo", repo, cwd=tmp_path)).stdout
    assert out.split()[0] == "web-2.0"
    out = ok(smolfs("pkg", "search", "libfoo>=1.5", "--pkg-repo", repo, cwd=tmp_path)).stdout
    assert out.splitlines() == ["libfoo-1.10  a library"]
    r = smolfs("pkg", "search", "nothing-like-it", "--pkg-repo", repo, cwd=tmp_path)
    assert r.returncode == 1 and not r.stdout


def test_info(repo: Path, tmp_path: Path) -> None:
    out = ok(smolfs("pkg", "info", "web", "--pkg-repo", repo, cwd=tmp_path)).stdout
    assert out.startswith("web-2.0: a static web server\n")
    assert "depends:   libfoo>=1.2<1.5" in out and "requires:  /usr/pkg/lib/libfoo.so.1" in out
    data = json.loads(ok(smolfs("pkg", "info", "libfoo", "--json", "--pkg-repo", repo,
                                cwd=tmp_path)).stdout)
    assert data[0]["PKGNAME"] == ["libfoo-1.10"]  # dewey: 1.10 > 1.2nb3


def test_deps(repo: Path, tmp_path: Path) -> None:
    out = ok(smolfs("pkg", "deps", "web", "--pkg-repo", repo, cwd=tmp_path)).stdout
    assert out.split() == ["libfoo-1.2nb3", "web-2.0"]
    line = one_line_error(smolfs("pkg", "deps", "other", "--pkg-repo", repo, cwd=tmp_path))
    assert "other-1.0 was built for i386, but the image is x86_64" in line
    out = ok(smolfs("pkg", "deps", "other", "--arch", "i386", "--pkg-repo", repo,
                    cwd=tmp_path)).stdout
    assert out.split() == ["other-1.0"]
    out = ok(smolfs("pkg", "deps", "arm", "--arch", "aarch64", "--pkg-repo", repo,
                    cwd=tmp_path)).stdout  # as smolfs build --arch aarch64 --pkg accepts it
    assert out.split() == ["arm-1.0"]
    line = one_line_error(smolfs("pkg", "deps", "{web", "--pkg-repo", repo, cwd=tmp_path), 2)
    assert "malformed package pattern" in line


def test_environment_names_the_repository(repo: Path, tmp_path: Path) -> None:
    out = ok(smolfs("pkg", "deps", "web", cwd=tmp_path,
                    env={"MKSMOLNB_PKG_REPO": repo.as_uri()})).stdout
    assert out.split() == ["libfoo-1.2nb3", "web-2.0"]


def test_mkfs_takes_packages(repo: Path, tmp_path: Path) -> None:
    ok(smolfs("mkfs", "-t", "ext2", "img", repo / "libfoo-1.2nb3.tgz", repo / "web-2.0.tgz",
              cwd=tmp_path))
    img = Image(tmp_path / "img", "ext2")
    assert img.read("usr/pkg/bin/web") == b"#!/bin/sh\n"
    assert img.read("usr/pkg/pkgdb/libfoo-1.2nb3/+REQUIRED_BY") == b"web-2.0\n"
    assert img.read("usr/pkg/pkgdb/web-2.0/+CONTENTS").startswith(b"@name web-2.0\n")


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                       capture_output=True, text=True, env=env, check=False, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_help_and_plain_builds_do_not_import_packages(tmp_path: Path) -> None:
    mods = _modules_after("from smolfs.__main__ import main\ntry:\n main(['--help'])\n"
                          "except SystemExit:\n pass")
    assert not {m for m in mods if m.startswith("smolfs.pkg")}
    from helpers import setsynth

    setsynth.make_set(tmp_path / "rescue.tgz", kind="rescue", compression="gz")
    mods = _modules_after(
        f"import os\nos.environ['MKSMOLNB_CACHE'] = {str(tmp_path / 'c')!r}\n"
        "from smolfs.image.build import build\n"
        f"build(image={str(tmp_path / 'x.img')!r}, sets=[{str(tmp_path / 'rescue.tgz')!r}])")
    assert "smolfs.image.build" in mods
    assert not {m for m in mods if m.startswith("smolfs.pkg")}
