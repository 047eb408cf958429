"""/etc/pwd.db and /etc/spwd.db as pwd_mkdb writes them, read back by an independent
implementation of Berkeley DB 1.85 (glibc's libdb1, Debian package libdb1-compat), and by
NetBSD itself: a genuine kernel, the rescue set and bozohttpd, which starts only when it
can look up uid 0 through pwd.db."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers.pkgsynth import SynthPkg, write_repo
from helpers.ports import free_port

from conftest import REPO
from smolfs.pkg import pwdb

MASTER = [
    "root:$2a$07$abcdefghijklmnopqrstuu:0:0::0:0:Charlie &:/root:/bin/sh",
    "toor:*:0:0::0:0:Bourne-again Superuser:/root:/bin/sh",
    "daemon:*:1:1::0:0:The devil himself:/:/sbin/nologin",
    "www:*:3001:3001:web:1700000000:0:Web server:/var/www:/sbin/nologin",
] + [f"user{i}:*:{2000 + i}:100::0:0:User {i}:/home/u{i}:/bin/sh" for i in range(120)]


class _DBT(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t)]


_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_DBT),
                       ctypes.POINTER(_DBT), ctypes.c_uint)


class _DB(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("close", ctypes.c_void_p), ("del_", ctypes.c_void_p),
                ("get", _FN), ("put", ctypes.c_void_p), ("seq", _FN), ("sync", ctypes.c_void_p),
                ("internal", ctypes.c_void_p), ("fd", ctypes.c_void_p)]


def db1_dump(path: Path) -> dict[bytes, bytes]:
    """Every pair of a DB_HASH file, through glibc's Berkeley DB 1.85 (dbopen, seq)."""
    try:
        lib = ctypes.CDLL("libdb1.so.2")
    except OSError:
        pytest.skip("libdb1.so.2 not installed (Debian: libdb1-compat)")
    lib.dbopen.restype = ctypes.POINTER(_DB)
    lib.dbopen.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.c_void_p]
    db = lib.dbopen(str(path).encode(), 0, 0, 1, None)  # O_RDONLY, DB_HASH
    assert db, f"libdb1 cannot open {path}"
    out: dict[bytes, bytes] = {}
    k, v = _DBT(), _DBT()
    flag = 3  # R_FIRST, then R_NEXT
    while db.contents.seq(db, ctypes.byref(k), ctypes.byref(v), flag) == 0:
        out[ctypes.string_at(k.data, k.size)] = ctypes.string_at(v.data, v.size)
        flag = 7
    return out


def fields(rec: bytes) -> tuple:
    name, passwd, rest = rec.split(b"\0", 2)
    uid, gid, change = struct.unpack_from("<IIq", rest)
    cls, gecos, home, shell, tail = rest[16:].split(b"\0", 4)
    expire, flags = struct.unpack("<qI", tail)
    return name, passwd, uid, gid, change, cls, gecos, home, shell, expire, flags


def test_databases_read_by_libdb1(tmp_path: Path) -> None:
    pwd, spwd = pwdb.databases(MASTER)
    (tmp_path / "pwd.db").write_bytes(pwd)
    (tmp_path / "spwd.db").write_bytes(spwd)
    for path, secure in ((tmp_path / "pwd.db", False), (tmp_path / "spwd.db", True)):
        got = db1_dump(path)
        assert got == pwdb.read_hash(path.read_bytes())
        assert got[b"VERSION\0"] == struct.pack("<I", 1)
        # three keys per user; uid 0 is root's (the first one), toor has only two
        assert len(got) == 1 + 3 * len(MASTER) - 1
        root = fields(got[b"1root"])
        assert root[0] == b"root" and root[2:4] == (0, 0)
        assert root[1] == (b"$2a$07$abcdefghijklmnopqrstuu" if secure else b"*")
        assert got[b"3" + struct.pack("<I", 0)] == got[b"1root"]
        assert got[b"2" + struct.pack("<I", 2)] == got[b"1toor"]
        www = fields(got[b"1www"])
        assert www == (b"www", b"*", 3001, 3001, 1700000000, b"web", b"Web server",
                       b"/var/www", b"/sbin/nologin", 0, 0)
        assert fields(got[b"1user119"])[2] == 2119
    assert len(pwd) == len(spwd) and len(pwd) % 4096 == 0


def test_small_database_has_pwd_mkdb_layout() -> None:
    pwd, _ = pwdb.databases(MASTER[:3])
    assert len(pwd) == 40960  # header, 8 buckets, the overflow bitmap: as pwd_mkdb makes
    assert struct.unpack_from(">3i", pwd, 0) == (0x061561, 2, 1234)


# -- genuine NetBSD ----------------------------------------------------------------------


@pytest.mark.netbsd
@pytest.mark.qemu
@pytest.mark.slow
def test_bozohttpd_finds_uid_0_in_our_pwd_db(netbsd_dir: Path, tmp_path: Path) -> None:
    """rescue + httpd sets (no etc set: no pwd.db of NetBSD's) + a package adding a user:
    the build writes pwd.db; httpd, which looks up uid 0 at start, serves."""
    kernel, rescue, httpd = (netbsd_dir / "netbsd", netbsd_dir / "sets" / "rescue.tgz",
                             netbsd_dir / "sets" / "httpd.tgz")
    for f in (kernel, rescue, httpd):
        if not f.is_file():
            pytest.skip(f"netbsd: {f} missing")
    repo = write_repo(tmp_path / "All", [SynthPkg(
        "webroot-1.0", files={"share/webroot/index.html": b"<h1>served via pwd.db</h1>\n"},
        install="# GROUP: www:3001\n# USER: www:www:3001:Web:/var/www:/sbin/nologin\n",
        os_version="7.0")])
    svc = tmp_path / "svcs" / "web" / "etc"
    svc.mkdir(parents=True)
    (svc / "rc").write_text(
        "#!/bin/sh\n. /etc/include/basicrc\necho 'web: serving'\n"
        "/usr/libexec/httpd -b -f -s -I 80 /usr/pkg/share/webroot\n"
        ". /etc/include/shutdown\n")
    image = tmp_path / "web.img"
    env = {"MKSMOLNB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO),
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "smolfs", "build", "-s", "web", "--services-dir",
                        str(tmp_path / "svcs"), "-x", f"{rescue},{httpd}", "--release", "7.0",
                        "--pkg", "webroot", "--pkg-repo", str(repo), "-i", str(image), "--ro"],
                       capture_output=True, text=True, env=env, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    port = free_port()
    q = subprocess.Popen([sys.executable, "-m", "launcher", "-k", str(kernel), "-i", str(image),
                          "--ro", "-p", f"{port}:80", "--ready", f"http:{port}/",
                          "--timeout", "180", "--console", f"file:{tmp_path / 'console.log'}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 200
        body = b""
        while time.monotonic() < deadline and q.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html",
                                            timeout=5) as answer:
                    body = answer.read()
                    break
            except OSError:
                time.sleep(1)
        log = (tmp_path / "console.log").read_text(errors="replace") \
            if (tmp_path / "console.log").exists() else ""
        assert body == b"<h1>served via pwd.db</h1>\n", log[-3000:]
    finally:
        q.terminate()
        try:
            q.wait(timeout=20)
        except subprocess.TimeoutExpired:
            q.kill()
            q.wait()
