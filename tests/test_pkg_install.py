"""Packages installed into images: +CONTENTS obeyed, the package database as pkg_add
writes it, +INSTALL's declarative lines, and every refusal. Images are judged by
sleuthkit (FFS) and e2fsck/debugfs (ext2), never by the code that wrote them."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.pkgsynth import SynthPkg, write_repo
from test_build import Image, ok, one_line_error, smolfs

from smolfs.errors import InputError
from smolfs.fs.tree import Kind, Tree
from smolfs.image.build import build
from smolfs.pkg.install import Installer, PackageError, apply_mode
from smolfs.sets.spool import Spool

setsynth = pytest.importorskip("helpers.setsynth")

INSTALL = """#!/bin/sh
# GROUP: www:3001
# USER: www:www:3001:Web server:/var/www:/sbin/nologin
# DIR: /var/db/app m 0750 www www
# DIR: share/app/cache m
# FILE: etc/app.conf c share/examples/app/app.conf 0640 www www
# FILE: /etc/rc.d/app cr share/examples/rc.d/app 0755
# SHELL: /usr/pkg/bin/appsh
echo "this part runs at first boot"
"""


def app_packages() -> list[SynthPkg]:
    lib = SynthPkg("libfoo-1.2nb3", files={"lib/libfoo.so.1.2": b"\x7fELF" + bytes(5000)},
                   symlinks={"lib/libfoo.so.1": "libfoo.so.1.2", "lib/libfoo.so": "libfoo.so.1"},
                   provides=["/usr/pkg/lib/libfoo.so.1"])
    app = SynthPkg(
        "app-1.10", depends=["libfoo>=1.2"],
        files={"bin/app": b"#!/bin/sh\necho app\n", "bin/appsh": b"#!/bin/sh\n",
               "share/examples/app/app.conf": b"listen 80\n",
               "share/examples/rc.d/app": b"#!/bin/sh\n"},
        hardlinks={"bin/app-link": "bin/app"}, modes={"bin/app": 0o755, "bin/appsh": 0o755},
        plist_mode={"bin/appsh": "4555"}, plist_owner={"bin/app": ("www", "www")},
        requires=["/usr/pkg/lib/libfoo.so.1", "/rescue/sh"], pkgdirs=["share/app/empty"],
        install=INSTALL)
    old = SynthPkg("app-1.2nb3", files={"bin/app": b"old\n"})
    return [lib, app, old]


@pytest.fixture(scope="module")
def sets() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pkg-sets-"))
    setsynth.make_set(d / "rescue.tgz", kind="rescue", compression="gz")
    setsynth.make_set(d / "base.tar.xz", kind="base", compression="xz")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MKSMOLNB_PKG_REPO", raising=False)


@pytest.mark.parametrize("fs", ["ffs", "ext2"])
def test_packages_in_image(sets: Path, tmp_path: Path, fs: str) -> None:
    repo = write_repo(tmp_path / "All", app_packages())
    res = build(image=tmp_path / "r.img", sets=[sets / "rescue.tgz"], fs=fs, pkgs="app",
                pkg_repo=str(repo))
    img = Image(res.image, fs)
    e = img.entries
    # the newest app (1.10 > 1.2nb3 in dewey order) and its dependency
    assert img.read("usr/pkg/bin/app") == b"#!/bin/sh\necho app\n"
    assert e["usr/pkg/bin/app-link"].inode == e["usr/pkg/bin/app"].inode  # hard link
    assert img.owner_mode("usr/pkg/bin/app") == (3001, 3001, "rwxr-xr-x")  # @owner/@group
    assert img.owner_mode("usr/pkg/bin/appsh") == (0, 0, "r-sr-xr-x")  # @mode 4555
    assert img.symlink("usr/pkg/lib/libfoo.so") == "libfoo.so.1"
    assert img.symlink("usr/pkg/lib/libfoo.so.1") == "libfoo.so.1.2"
    assert e["usr/pkg/share/app/empty"].kind == "d"  # @pkgdir
    # +INSTALL's declarative lines
    assert img.owner_mode("var/db/app") == (3001, 3001, "rwxr-x---")
    assert e["usr/pkg/share/app/cache"].kind == "d"
    assert img.read("usr/pkg/etc/app.conf") == b"listen 80\n"
    assert img.owner_mode("usr/pkg/etc/app.conf") == (3001, 3001, "rw-r-----")
    assert "etc/rc.d/app" not in e  # rc.d scripts: PKG_RCD_SCRIPTS=NO, pkgsrc's default
    assert b"/usr/pkg/bin/appsh\n" in img.read("etc/shells")
    assert b"www:*:3001:3001::0:0:Web server:/var/www:/sbin/nologin" in \
        img.read("etc/master.passwd")
    assert img.owner_mode("etc/master.passwd") == (0, 0, "rw-------")
    assert b"www:*:3001:3001:Web server:/var/www:/sbin/nologin" in img.read("etc/passwd")
    assert b"www:*:3001:" in img.read("etc/group")
    # the package database, as pkg_add writes it
    db = "usr/pkg/pkgdb"
    assert sorted(n.split("/")[3] for n in e if n.count("/") == 3 and n.startswith(db)) == \
        ["app-1.10", "libfoo-1.2nb3"]
    contents = img.read(f"{db}/app-1.10/+CONTENTS").decode()
    assert contents.startswith("@name app-1.10\n") and "@cwd /usr/pkg\n" in contents
    assert img.read(f"{db}/libfoo-1.2nb3/+REQUIRED_BY") == b"app-1.10\n"
    assert f"{db}/app-1.10/+REQUIRED_BY" not in e
    assert img.read(f"{db}/libfoo-1.2nb3/+INSTALLED_INFO") == b"automatic=yes\n"
    assert f"{db}/app-1.10/+INSTALLED_INFO" not in e
    for name, mode in (("+COMMENT", "r--r--r--"), ("+DESC", "r--r--r--"),
                       ("+BUILD_INFO", "r--r--r--"), ("+CONTENTS", "rw-r--r--"),
                       ("+INSTALL", "r-xr-xr-x"), ("+SIZE_PKG", "r--r--r--"),
                       ("+SIZE_ALL", "r--r--r--")):
        assert img.owner_mode(f"{db}/app-1.10/{name}") == (0, 0, mode), name
    size_app = int(img.read(f"{db}/app-1.10/+SIZE_PKG"))
    size_lib = int(img.read(f"{db}/libfoo-1.2nb3/+SIZE_PKG"))
    assert int(img.read(f"{db}/app-1.10/+SIZE_ALL")) == size_app + size_lib
    # what +INSTALL does beyond its declarative lines: once, at first boot
    script = img.read("etc/rc.pkgfirstboot").decode()
    assert "./+INSTALL app-1.10 POST-INSTALL" in script
    assert img.owner_mode("etc/rc.pkgfirstboot") == (0, 0, "rwxr-xr-x")
    man = json.loads(Path(str(res.image) + ".json").read_text())
    assert [p["name"] for p in man["pkgs"]["installed"]] == ["libfoo-1.2nb3", "app-1.10"]


def test_requires_checked_against_the_sets(sets: Path, tmp_path: Path) -> None:
    pkg = SynthPkg("web-1.0", files={"bin/web": b"x"}, requires=["/usr/lib/libutil.so.7"])
    repo = write_repo(tmp_path / "All", [pkg])
    with pytest.raises(InputError, match=r"web-1.0 needs /usr/lib/libutil.so.7, which the image "
                                         r"lacks \(sets: rescue\)") as err:
        build(image=tmp_path / "x.img", sets=[sets / "rescue.tgz"], pkgs=["web"],
              pkg_repo=str(repo))
    assert "base" in (err.value.hint or "")
    assert not (tmp_path / "x.img").exists()
    build(image=tmp_path / "y.img", sets=[sets / "rescue.tgz", sets / "base.tar.xz"],
          pkgs=["web"], pkg_repo=str(repo))


def test_cli_build_with_pkg(sets: Path, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "All", app_packages())
    r = ok(smolfs("build", "-x", sets / "rescue.tgz", "--pkg", "app<1.5", "--pkg-repo", repo,
                  "-i", "p.img", cwd=tmp_path))
    assert "install 1 package" in r.stderr
    assert Image(tmp_path / "p.img", "ffs").read("usr/pkg/bin/app") == b"old\n"
    line = one_line_error(smolfs("build", "-x", sets / "rescue.tgz", "--pkg", "nope",
                                 "--pkg-repo", repo, "-i", "q.img", cwd=tmp_path))
    assert "no package in" in line and "'nope'" in line
    assert not (tmp_path / "q.img").exists()


def test_service_conf_pkgs(sets: Path, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "All", app_packages())
    svc = tmp_path / "svcs" / "appsvc"
    (svc / "etc").mkdir(parents=True)
    (svc / "etc" / "rc").write_text("#!/bin/sh\n")
    (svc / "service.conf").write_text(f"PKGS=libfoo\nPKG_REPO={repo}\n")
    res = build(service="appsvc", services_dir=tmp_path / "svcs", image=tmp_path / "s.img",
                sets=[sets / "rescue.tgz"])
    assert "usr/pkg/lib/libfoo.so.1.2" in Image(res.image, "ffs").entries


# ---------------------------------------------------------------------------
# refusals, on a tree (nothing is ever written: the build stops before the image)


def install(tmp_path: Path, pkgs: list[SynthPkg], tree: Tree | None = None) -> Tree:
    repo = write_repo(tmp_path / "All", pkgs)
    tree = tree or Tree()
    with Spool(tmp_path) as spool:
        inst = Installer(tree, spool, 0)
        for p in pkgs:
            inst.install(repo / f"{p.name}.tgz")
        inst.finish()
        for _, node in tree.walk():  # read everything while the spool is open
            if node.kind == Kind.FILE and node.data is not None:
                node.data.read(0, node.data.size)
    return tree


def test_md5_mismatch_names_package_and_file(tmp_path: Path) -> None:
    bad = SynthPkg("bad-1.0", files={"bin/ok": b"fine", "bin/bad": b"evil"}, bad_md5={"bin/bad"})
    with pytest.raises(PackageError, match=r"bad-1.0.*: /usr/pkg/bin/bad does not match "
                                           r"\+CONTENTS \(MD5 [0-9a-f]{32}, recorded 0{32}\)"):
        install(tmp_path, [bad])


def test_dotdot_path_rejected_by_name(tmp_path: Path) -> None:
    evil = SynthPkg("evil-1.0", files={"bin/x": b"x"}, plist_extra=["../../etc/passwd"],
                    unlisted={"../../etc/passwd": b"root::0:0"})
    with pytest.raises(PackageError, match=r"evil-1.0.*'../../etc/passwd'.*outside the prefix "
                                           r"/usr/pkg"):
        install(tmp_path, [evil])


def test_two_packages_claiming_one_file(tmp_path: Path) -> None:
    a = SynthPkg("a-1.0", files={"bin/tool": b"a"})
    b = SynthPkg("b-1.0", files={"bin/tool": b"b"})
    with pytest.raises(PackageError, match=r"/usr/pkg/bin/tool is in two packages: a-1.0 and "
                                           r"b-1.0"):
        install(tmp_path, [a, b])


def test_member_not_in_contents(tmp_path: Path) -> None:
    p = SynthPkg("sneaky-1.0", files={"bin/x": b"x"}, unlisted={"bin/hidden": b"h"})
    with pytest.raises(PackageError, match=r"sneaky-1.0.*bin/hidden, which \+CONTENTS does not"):
        install(tmp_path, [p])


def test_not_a_package(tmp_path: Path) -> None:
    import io
    import tarfile

    path = tmp_path / "x-1.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("bin/x")
        tar.addfile(info, io.BytesIO(b""))
    with Spool(tmp_path) as spool, pytest.raises(InputError, match="not a binary package"):
        Installer(Tree(), spool, 0).install(path)


def test_files_keep_content_and_digest(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    tree = install(tmp_path, [SynthPkg("big-1.0", files={"share/big": data})])
    node = tree.get("usr/pkg/share/big")
    assert node is not None and node.data is not None and node.data.size == len(data)


def test_ignore_cwd_and_exec(tmp_path: Path) -> None:
    """@ignore skips the next name (metadata, not among the files); a later @cwd inside
    the prefix moves what follows; @exec goes to the first-boot script, %F/%D/%B/%f
    expanded; a @cwd outside the prefix is refused by name."""
    pkg = SynthPkg("odd-1.0", files={"bin/odd": b"odd", "doc/README": b"r"},
                   plist_head=["@ignore", "+DISPLAY"],
                   plist_before={"doc/README": ["@cwd /usr/pkg/share"]},
                   plist_extra=["@exec echo %F in %D: %B %f"])
    tree = install(tmp_path, [pkg])
    assert tree.get("usr/pkg/share/doc/README") is not None
    assert tree.get("usr/pkg/doc/README") is None
    node = tree.get("etc/rc.pkgfirstboot")
    assert node is not None and node.data is not None
    script = node.data.read(0, node.data.size).decode()
    assert "( echo doc/README in /usr/pkg/share: /usr/pkg/share/doc README )" in script
    evil = SynthPkg("evil-2.0", files={"x": b"x"}, plist_before={"x": ["@cwd /etc"]})
    with pytest.raises(PackageError, match=r"evil-2.0: \+CONTENTS names 'x' \(in /etc\), "
                                           r"outside the prefix /usr/pkg"):
        install(tmp_path / "e", [evil])


@pytest.mark.parametrize(("spec", "before", "after"), [
    ("0644", 0o755, 0o644), ("4555", 0o644, 0o4555), ("u+s", 0o755, 0o4755),
    ("go-w", 0o777, 0o755), ("a=r", 0o755, 0o444), ("g+w,o-rx", 0o755, 0o770),
])
def test_mode(spec: str, before: int, after: int) -> None:
    assert apply_mode(spec, before, "p") == after


def test_unchanged_inputs_keep_the_image(sets: Path, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "All", app_packages())
    kw = {"image": tmp_path / "k.img", "sets": [sets / "rescue.tgz"], "pkgs": "libfoo",
          "pkg_repo": str(repo)}
    first = build(**kw)  # type: ignore[arg-type]
    digest = hashlib.sha256(first.image.read_bytes()).hexdigest()
    again = build(**kw)  # type: ignore[arg-type]
    assert again.manifest["built_epoch"] == first.manifest["built_epoch"]
    assert hashlib.sha256(again.image.read_bytes()).hexdigest() == digest
