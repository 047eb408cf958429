"""Resolving a build's options: arguments over service.conf over built-in defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from smolfs.errors import InputError, UsageError
from smolfs.image.content import fstab
from smolfs.image.plan import plan
from smolfs.sets.setfiles import is_archive_path, set_name_of


def test_defaults_from_the_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    p = plan(service="rescue", release="10.1")
    assert (p.set_tokens, p.ro, p.fs, p.size_mb) == (("rescue",), True, "ffs", None)
    assert p.image == Path("rescue-amd64.img") and p.now == 1234
    p = plan(service="base", release="10.1", arch="i386", ro=True, fs="ext2", size_mb=300,
             image="b.img", sets="base, etc comp")
    assert (p.set_tokens, p.ro, p.fs, p.size_mb) == (("base", "etc", "comp"), True, "ext2", 300)
    assert p.arch.value == "i386" and p.image == Path("b.img")
    assert plan(service="rescue", release="10.1", ro=False).ro is False  # --rw beats RO=yes
    p = plan(service="rescue", release="10.1", sets=["a.tgz", tmp_path / "my dir/b.tar.xz"])
    assert p.set_tokens == ("a.tgz", str(tmp_path / "my dir/b.tar.xz"))


def test_services_without_sets_default_to_rescue(tmp_path: Path) -> None:
    (tmp_path / "s/etc").mkdir(parents=True)
    (tmp_path / "s/etc/rc").write_text("#!/bin/sh\n")
    p = plan(service="s", services_dir=tmp_path, image=tmp_path / "s.img", release="9.3")
    assert (p.set_tokens, p.ro, p.fs, p.release) == (("rescue",), False, "ffs", "9.3")
    assert plan(service="s", services_dir=tmp_path, image=tmp_path / "s.img").release is None


@pytest.mark.parametrize(("kwargs", "err", "needle"), [
    ({"arch": "sparc64"}, UsageError, "unknown architecture 'sparc64'"),
    ({"fs": "zfs"}, UsageError, "unknown filesystem 'zfs' (choose from ffs, ext2)"),
    ({"size_mb": 0}, UsageError, "positive number of megabytes"),
    ({"sets": " , "}, UsageError, "no sets given"),
    ({"image": "/nonexistent/dir/x.img"}, InputError, "no such directory /nonexistent/dir"),
])
def test_bad_arguments(kwargs: dict, err: type, needle: str,  # type: ignore[type-arg]
                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(err) as exc:
        plan(service="rescue", release="10.1", **kwargs)
    assert needle in exc.value.message


def test_image_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        plan(service="rescue", image=tmp_path, release="10.1")


def test_set_tokens() -> None:
    assert not is_archive_path("base") and not is_archive_path("xcomp")
    for path in ("./base", "sets/base.tgz", "base.tar.xz", "x.tar.zst", "x.tar"):
        assert is_archive_path(path)
    assert set_name_of(Path("/c/base.tar.xz")) == "base"
    assert set_name_of(Path("rescue.tgz")) == "rescue"


def test_fstab() -> None:
    assert fstab("ffs", False).splitlines()[-1] == "/dev/ld0a / ffs rw 1 1"
    assert fstab("ext2", True).splitlines()[-1] == "/dev/ld0a / ext2fs ro 1 1"


def test_package_level_build_stays_callable() -> None:
    import smolfs
    import smolfs.image.build

    # importing the module that holds it does not hide the package's function
    assert callable(smolfs.build) and smolfs.build is smolfs.image.build.build
    with pytest.raises(InputError, match="unknown service"):
        smolfs.build(service="no-such-service")
