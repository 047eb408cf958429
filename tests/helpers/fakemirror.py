"""A NetBSD mirror for tests: a real HTTP server on 127.0.0.1 over a synthetic release tree
(:func:`build_release`), with ranges, recorded requests and faults on demand
(:class:`FakeMirror`; see ``tests/helpers/README.md``)."""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import random
import re
import socket
import sys
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVE_CHUNK = 16 * 1024


@dataclass
class Seen:
    path: str
    range: str | None


@dataclass
class FakeMirror:
    root: Path
    seen: list[Seen] = field(default_factory=list)
    #: file name → close the connection after this many body bytes (once, then removed)
    cut: dict[str, int] = field(default_factory=dict)
    #: answer 200 with the whole file even when a Range is asked for
    ignore_range: bool = False
    #: file names served with one byte changed
    corrupt: set[str] = field(default_factory=set)
    #: seconds to sleep between two chunks of a body (makes transfers overlap)
    delay: float = 0.0
    #: file name → HTTP statuses to answer before serving it (popped one per request)
    fail: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeMirror:
        mirror = self

        class Handler(_Handler):
            fake = mirror

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def record(self, path: str, rng: str | None) -> None:
        with self._lock:
            self.seen.append(Seen(path, rng))

    def requests_for(self, name: str) -> list[Seen]:
        """Requests whose path ends with ``/name``."""
        with self._lock:
            return [s for s in self.seen if s.path.endswith("/" + name)]

    def take_failure(self, name: str) -> int | None:
        with self._lock:
            statuses = self.fail.get(name)
            return statuses.pop(0) if statuses else None

    def take_cut(self, name: str) -> int | None:
        with self._lock:
            return self.cut.pop(name, None)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-transfer (as clients under test do) is not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeMirror

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rng = self.headers.get("Range")
        self.fake.record(path, rng)
        parts = [p for p in path.split("/") if p]
        if ".." in parts:
            return self._send(400, b"bad path\n")
        target = self.fake.root.joinpath(*parts)
        if status := self.fake.take_failure(target.name):
            return self._send(status, b"try again later\n")
        if target.is_dir():
            names = [p.name + ("/" if p.is_dir() else "") for p in sorted(target.iterdir())]
            links = "".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>\n' for n in names)
            return self._send(200, f"<html><body>\n{links}</body></html>\n".encode())
        if not target.is_file():
            return self._send(404, b"not found\n")
        data = target.read_bytes()
        name = target.name
        if name in self.fake.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not self.fake.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            return self._send(206, data[start:], headers, name)
        return self._send(200, data, {}, name)

    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, name: str = ""
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        cut = self.fake.take_cut(name) if name else None
        limit = len(body) if cut is None else min(cut, len(body))
        for off in range(0, limit, SERVE_CHUNK):
            self.wfile.write(body[off : min(off + SERVE_CHUNK, limit)])
            if self.fake.delay:
                self.wfile.flush()
                time.sleep(self.fake.delay)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


# --- a synthetic release tree ---------------------------------------------------------------

#: set name → {path in the set: size of its (random) content}
SET_CONTENTS = {
    "rescue": {"./rescue/sh": 40_000, "./rescue/init": 0, "./rescue/mount_ffs": 0},
    "base": {"./bin/cat": 150_000, "./usr/libexec/httpd": 250_000, "./sbin/init": 20_000},
    "etc": {"./etc/rc": 300, "./etc/passwd": 200},
    "comp": {"./usr/bin/cc": 30_000},
}


def make_set(dest: Path, name: str, seed: int = 0) -> None:
    """A small NetBSD-shaped set: a .tgz or .tar.xz by ``dest``'s name."""
    rnd = random.Random(f"{name}-{seed}")
    mode = "w:xz" if dest.name.endswith(".tar.xz") else "w:gz"
    with tarfile.open(dest, mode, format=tarfile.USTAR_FORMAT) as tar:
        for path, size in SET_CONTENTS.get(name, {f"./usr/share/{name}/README": 1000}).items():
            info = tarfile.TarInfo(path)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o555, 0, 0, "root", "wheel"
            info.mtime = 1_700_000_000
            if size == 0 and path.startswith("./rescue/"):
                info.type, info.linkname = tarfile.LNKTYPE, "./rescue/sh"
                tar.addfile(info)
                continue
            data = rnd.randbytes(size)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_sha512(directory: Path) -> None:
    lines = [
        f"SHA512 ({p.name}) = {hashlib.sha512(p.read_bytes()).hexdigest()}\n"
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in ("SHA512", "MD5")
    ]
    (directory / "SHA512").write_text("".join(lines))


def release_tree(release: str, arch: str) -> str:
    if release in ("HEAD",) or release.startswith("netbsd-"):
        return f"pub/NetBSD-daily/{release}/latest/{arch}"
    return f"pub/NetBSD/NetBSD-{release}/{arch}"


def build_release(
    root: Path,
    release: str = "10.1",
    arch: str = "amd64",
    sets: tuple[str, ...] = ("rescue", "base", "etc"),
    kernels: tuple[str, ...] = ("GENERIC",),
    ext: str | None = None,
) -> Path:
    """Write a release tree under ``root``; return its ``<arch>`` directory."""
    top = root / release_tree(release, arch)
    sets_dir = top / "binary" / "sets"
    sets_dir.mkdir(parents=True, exist_ok=True)
    if ext is None:
        new = release == "HEAD" or int(re.findall(r"\d+", release)[0]) >= 10
        ext = ".tar.xz" if arch == "amd64" and new else ".tgz"
    for s in sets:
        make_set(sets_dir / f"{s}{ext}", s)
    write_sha512(sets_dir)
    if kernels:
        kdir = top / "binary" / "kernel"
        kdir.mkdir(parents=True, exist_ok=True)
        for k in kernels:
            body = b"\x7fELF" + random.Random(k).randbytes(100_000)
            (kdir / f"netbsd-{k}.gz").write_bytes(gzip.compress(body, mtime=0))
        write_sha512(kdir)
    return top
