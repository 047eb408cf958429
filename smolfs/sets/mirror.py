"""Where NetBSD artifacts come from: an HTTP(S) mirror or a local tree (``file://``).

A :class:`Mirror` gives a small file whole or a large one as a stream from an offset
(to resume). It knows nothing of caches or checksums (:mod:`smolfs.sets.cache`);
``requests`` is imported only when an HTTP mirror is first used."""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from smolfs.errors import FetchError, UsageError
from smolfs.log import debug

DEFAULT_MIRROR = "https://cdn.netbsd.org"
MIRROR_ENV = "MKSMOLNB_MIRROR"
SCHEMES = ("https", "http", "file")
#: Seconds to wait for a connection, and between two received bytes.
TIMEOUT = (10.0, 30.0)
#: Pauses before the second and third attempts after a connection error or a cut transfer.
RETRY_DELAYS: tuple[float, ...] = (0.3, 1.0)
CHUNK = 1 << 16
USER_AGENT = "mksmolnb/0.1.0 (+python-requests)"

MIRROR_HINT = (
    f"check the network, or pick another mirror with --mirror URL or {MIRROR_ENV}=URL "
    "(https://, http:// or file:///path/to/a/local/copy)"
)

T = TypeVar("T")


class TransientError(FetchError):
    """A failure worth retrying: the connection broke or the server is busy."""


class MirrorUnreachable(TransientError):
    """No connection to the mirror (refused, unknown host, timed out)."""


class NotFound(FetchError):
    """The mirror has no such file (HTTP 404/410, or missing in a local tree)."""

    def __init__(self, url: str) -> None:
        super().__init__(f"not found on the mirror: {url}")
        self.url = url


@dataclass
class Stream:
    """Bytes of one file from ``offset`` on (0 when the source ignored the requested offset)."""

    offset: int
    total: int | None
    chunks: Iterator[bytes]
    close: Callable[[], None]


class Mirror:
    """Base of the two transports. ``url`` is the mirror root (the directory holding ``pub``)."""

    url: str

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def read(self, rel: str) -> bytes:
        """The whole content of a small file."""
        raise NotImplementedError

    def open(self, rel: str, offset: int = 0) -> Stream:
        """A stream of ``rel`` starting at ``offset`` (or at 0 when the source cannot seek)."""
        raise NotImplementedError

    def listdir(self, rel: str) -> list[str]:
        """Names in a directory of the mirror (empty when it cannot be listed)."""
        raise NotImplementedError


def resolve_mirror(url: str | None = None) -> Mirror:
    """The mirror named by ``url``, else ``$MKSMOLNB_MIRROR``, else the NetBSD CDN.

    A plain directory path is taken as a local tree. A URL ending in ``/pub/NetBSD``
    is accepted and trimmed to the mirror root.
    """
    url = url or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if not scheme:
        return FileMirror(Path(url).expanduser().resolve())
    if scheme not in SCHEMES:
        raise UsageError(
            f"unsupported mirror URL {url!r} (scheme {scheme!r})",
            hint="use an https://, http:// or file:// URL, or a local directory",
        )
    url = re.sub(r"/+(pub/+NetBSD/*)?$", "", url)
    if scheme == "file":
        # What urllib.request.url2pathname does on POSIX, without its 17 ms import.
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        return FileMirror(Path(path or "/"))
    return HttpMirror(url)


def short_reason(err: BaseException) -> str:
    """``Connection refused`` rather than requests' three nested exception reprs."""
    text = str(err)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return m.group(1).strip().rstrip(".")
    if "timed out" in text.lower():
        return "timed out"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection closed before the end of the file"
    return text.split(":")[-1].strip(" '\")") or type(err).__name__


def with_retries(attempt: Callable[[], T]) -> T:
    """``attempt()``, repeated after a pause while it raises :class:`TransientError`."""
    for delay in RETRY_DELAYS:
        try:
            return attempt()
        except TransientError:
            time.sleep(delay)
    return attempt()


class HttpMirror(Mirror):
    def __init__(self, url: str) -> None:
        self.url = url
        self._session: Any = None

    def _get(self, url: str, offset: int = 0) -> Any:
        import requests

        if self._session is None:
            self._session = requests.Session()
            # Never let a server gzip a .tgz "for transfer": we hash the bytes as published.
            self._session.headers.update(
                {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            )
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        debug(f"+ GET {url}" + (f" (Range: bytes={offset}-)" if offset else ""))
        try:
            resp = self._session.get(url, headers=headers, stream=True, timeout=TIMEOUT)
        except requests.exceptions.InvalidURL as err:
            raise UsageError(f"invalid mirror URL {self.url!r}: {err}") from None
        except (requests.ConnectionError, requests.Timeout) as err:
            raise MirrorUnreachable(
                f"cannot reach mirror {self.url}: {short_reason(err)} (fetching {url})",
                hint=MIRROR_HINT,
            ) from None
        if resp.status_code in (404, 410):
            resp.close()
            raise NotFound(url)
        if resp.status_code == 416 and offset:
            # Our partial file is as long as (or longer than) the file: start over.
            resp.close()
            return self._get(url, 0)
        if resp.status_code >= 500 or resp.status_code == 429:
            resp.close()
            raise TransientError(
                f"mirror {self.url} answered {resp.status_code} {resp.reason} for {url}",
                hint=MIRROR_HINT,
            )
        if resp.status_code not in (200, 206):
            resp.close()
            raise FetchError(
                f"mirror {self.url} answered {resp.status_code} {resp.reason} for {url}",
                hint=MIRROR_HINT,
            )
        return resp

    def read(self, rel: str) -> bytes:
        url = self.url_of(rel)

        def attempt() -> bytes:
            resp = self._get(url)
            try:
                return b"".join(_http_chunks(resp, url))
            finally:
                resp.close()

        return with_retries(attempt)

    def open(self, rel: str, offset: int = 0) -> Stream:
        url = self.url_of(rel)
        resp = self._get(url, offset)
        start, total = 0, _int(resp.headers.get("Content-Length"))
        if resp.status_code == 206:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                resp.close()
                resp = self._get(url, 0)
                total = _int(resp.headers.get("Content-Length"))
            else:
                start = offset
                total = None if m.group(2) == "*" else int(m.group(2))
        return Stream(start, total, _http_chunks(resp, url), resp.close)

    def listdir(self, rel: str) -> list[str]:
        try:
            html = self.read(rel.rstrip("/") + "/").decode("utf-8", "replace")
        except FetchError:
            return []
        names = re.findall(r'href="([^"?#/]+)/?"', html)
        return sorted({urllib.parse.unquote(n) for n in names})


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _http_chunks(resp: Any, url: str) -> Iterator[bytes]:
    """The raw body (no content decoding); a broken connection becomes a TransientError."""
    import requests
    import urllib3

    expected = _int(resp.headers.get("Content-Length"))
    got = 0
    try:
        for chunk in resp.raw.stream(CHUNK, decode_content=False):
            got += len(chunk)
            yield chunk
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as err:
        raise TransientError(
            f"transfer of {url} broke off: {short_reason(err)}",
            hint="run the same command again: the download resumes where it stopped",
        ) from None
    if expected is not None and got < expected:
        raise TransientError(
            f"transfer of {url} broke off after {got} of {expected} bytes",
            hint="run the same command again: the download resumes where it stopped",
        )


class FileMirror(Mirror):
    """A local copy of the mirror tree (air-gapped hosts). Files are still verified."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri() if root.is_absolute() else str(root)

    def _path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> bytes:
        try:
            return self._path(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._check_root()
            raise NotFound(self.url_of(rel)) from None
        except OSError as err:
            raise FetchError(f"cannot read {self._path(rel)}: {err.strerror}") from None

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise MirrorUnreachable(
                f"local mirror {self.root} is not a directory", hint=MIRROR_HINT
            )

    def open(self, rel: str, offset: int = 0) -> Stream:
        path = self._path(rel)
        debug(f"+ read {path}" + (f" from byte {offset}" if offset else ""))
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._check_root()
            raise NotFound(self.url_of(rel)) from None
        except OSError as err:
            raise FetchError(f"cannot read {path}: {err.strerror}") from None
        total = os.fstat(f.fileno()).st_size
        start = offset if offset <= total else 0
        f.seek(start)

        def chunks() -> Iterator[bytes]:
            while chunk := f.read(CHUNK):
                yield chunk

        return Stream(start, total, chunks(), f.close)

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self._path(rel)))
        except OSError:
            return []
