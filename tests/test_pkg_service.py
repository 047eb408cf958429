"""The shipped ``caddy`` service: defined against pkgsrc's real repository, tested with a
synthetic package of the same name (no pkgsrc package can be downloaded here). Its
``/etc/rc`` runs under dash with stand-ins; its image is built from synthetic sets; and,
with genuine NetBSD, it boots with a stand-in ``caddy`` (a script running bozohttpd) and
answers HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import test_services
from helpers.pkgsynth import SynthPkg, write_repo
from helpers.ports import free_port
from test_build import Image

from conftest import REPO
from smolfs.image import service
from smolfs.image.build import build

setsynth = pytest.importorskip("helpers.setsynth")

#: What pkgsrc's www/caddy declares: a user of its own, a sample Caddyfile, an rc.d script.
CADDY_INSTALL = """#!/bin/sh
# GROUP: caddy
# USER: caddy:caddy::Caddy web server:/var/db/caddy:/sbin/nologin
# FILE: etc/caddy/Caddyfile c share/examples/caddy/Caddyfile 0644
# FILE: /etc/rc.d/caddy cr share/examples/rc.d/caddy 0755
"""


def caddy_package(program: bytes = b"#!/bin/sh\necho caddy $*\n") -> SynthPkg:
    return SynthPkg("caddy-2.7.6nb2", files={
        "bin/caddy": program, "share/examples/caddy/Caddyfile": b":80 {\n\tfile_server\n}\n",
        "share/examples/rc.d/caddy": b"#!/bin/sh\n"}, modes={"bin/caddy": 0o755},
        install=CADDY_INSTALL, comment="Fast, multi-platform web server with automatic HTTPS")


def test_service_definition() -> None:
    svc = service.load("caddy")
    assert svc.pkgs == ("caddy",) and svc.sets == ("base", "etc") and svc.ro is False
    assert svc.pkg_repo is None  # the official repository of the image's release


def test_rc_starts_caddy_after_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    stubs = {**test_services.STUBS, "usr/pkg/bin/caddy": 0, "bin/mkdir": 0}
    monkeypatch.setattr(test_services, "STUBS", stubs)
    calls, out, _ = test_services.run_rc(tmp_path, "caddy")
    assert calls == [*test_services.NETWORK_AND_MOUNTS, "mkdir -p /var/db/caddy",
                     "caddy file-server --listen :80 --root /var/www", *test_services.SHUTDOWN]
    assert "caddy: serving /var/www on port 80" in out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "All", [caddy_package()])


def test_image(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MKSMOLNB_PKG_REPO", str(repo))
    base, etc = tmp_path / "base.tar.xz", tmp_path / "etc.tar.xz"
    setsynth.make_set(base, kind="base", compression="xz")
    setsynth.make_set(etc, kind="etc", compression="xz")
    res = build(service="caddy", image=tmp_path / "caddy.img", sets=[base, etc])
    img = Image(res.image, "ffs")
    assert img.owner_mode("usr/pkg/bin/caddy") == (0, 0, "rwxr-xr-x")
    assert img.read("usr/pkg/etc/caddy/Caddyfile").startswith(b":80 {")
    assert b"Served by caddy" in img.read("var/www/index.html")
    assert b"caddy:*:" in img.read("etc/master.passwd")
    assert "etc/pwd.db" in img.entries and "etc/spwd.db" in img.entries
    assert img.owner_mode("etc/spwd.db") == (0, 0, "rw-------")
    assert "usr/pkg/pkgdb/caddy-2.7.6nb2/+CONTENTS" in img.entries
    assert res.manifest["pkgs"]["installed"] == [{"name": "caddy-2.7.6nb2",
                                                  "file": "caddy-2.7.6nb2.tgz"}]



@pytest.mark.netbsd
@pytest.mark.qemu
@pytest.mark.slow
def test_boots_and_answers_http(netbsd_dir: Path, tmp_path: Path) -> None:
    """The shipped service on genuine NetBSD: rescue + httpd sets, and a caddy package
    whose program hands over to bozohttpd (the only web server here)."""
    kernel, rescue, httpd = (netbsd_dir / "netbsd", netbsd_dir / "sets" / "rescue.tgz",
                             netbsd_dir / "sets" / "httpd.tgz")
    for f in (kernel, rescue, httpd):
        if not f.is_file():
            pytest.skip(f"netbsd: {f} missing")
    stand_in = b"#!/bin/sh\n# caddy file-server --listen :80 --root DIR\n" \
               b"exec /usr/libexec/httpd -b -f -s -I 80 \"$5\"\n"
    pkg = caddy_package(stand_in)
    pkg.os_version = "7.0"
    repo = write_repo(tmp_path / "All", [pkg])
    env = {"MKSMOLNB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO),
           "PATH": "/usr/bin:/bin"}
    image = tmp_path / "caddy.img"
    r = subprocess.run([sys.executable, "-m", "smolfs", "build", "-s", "caddy", "-x",
                        f"{rescue},{httpd}", "--release", "7.0", "--pkg-repo", str(repo),
                        "-i", str(image)], capture_output=True, text=True, env=env,
                       check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    port = free_port()
    console = tmp_path / "console.log"
    q = subprocess.Popen([sys.executable, "-m", "launcher", "-k", str(kernel), "-i", str(image),
                          "-p", f"{port}:80", "--ready", f"http:{port}/", "--timeout", "180",
                          "--console", f"file:{console}"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        body = b""
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and q.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    body = answer.read()
                    break
            except OSError:
                time.sleep(1)
        log = console.read_text(errors="replace") if console.exists() else ""
        assert b"Served by caddy" in body, log[-3000:]
        assert "caddy: serving" in log
    finally:
        q.terminate()
        try:
            q.wait(timeout=20)
        except subprocess.TimeoutExpired:
            q.kill()
            q.wait()
