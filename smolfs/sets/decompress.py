"""Decompression of set archives on a thread of its own (xz, gzip, bzip2, zstd), the
archive's format recognised by its first bytes (:func:`detect_format`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    pass

_CHUNK = 1 << 20  # copy and decompression buffer

class Corrupt(Exception):
    """Raised by :class:`Decoder` for data that does not decompress (its reason)."""


class Decoder:
    """Decompresses a stream fed in pieces; each output piece is at most ``_CHUNK`` bytes.

    Concatenated streams (several xz streams, gzip members or zstd frames) are read
    one after the other, as the command-line tools do.
    """

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.d = self._new()

    def _new(self) -> Any:
        import bz2
        import lzma
        import zlib

        if self.fmt == "xz":
            return lzma.LZMADecompressor()
        if self.fmt == "gz":
            return zlib.decompressobj(wbits=31)
        if self.fmt == "bz2":
            return bz2.BZ2Decompressor()
        if self.fmt == "zst":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decompressed pieces of *data*; :class:`Corrupt` when it does not decompress."""
        if self.d is None:
            yield data
            return
        try:
            yield from self._feed(data)
        except Exception as err:  # lzma, zlib, bz2 (OSError), zstd: all mean bad data
            raise Corrupt(reason(err)) from err

    def _feed(self, data: bytes) -> Iterator[bytes]:
        d = self.d
        while data:
            if d.eof:  # a stream ended: another one follows, or only zero padding
                if not data.strip(b"\0"):
                    return
                d = self.d = self._new()
            if self.fmt == "zst":  # no output bound in this API: feed small pieces
                view, data, at = memoryview(data), b"", 0
                while at < len(view):
                    yield d.decompress(view[at : at + (1 << 16)])
                    at += 1 << 16
                    if d.eof:
                        data = d.unused_data + bytes(view[at:])
                        break
                continue
            if self.fmt == "gz":
                yield d.decompress(data, _CHUNK)
                while d.unconsumed_tail:
                    yield d.decompress(d.unconsumed_tail, _CHUNK)
            else:
                yield d.decompress(data, _CHUNK)
                while not d.eof and not d.needs_input:
                    yield d.decompress(b"", _CHUNK)
            data = d.unused_data if d.eof else b""

    def check_end(self) -> None:
        if self.d is not None and not self.d.eof:
            raise Corrupt("the compressed data ends before the end of its stream")


class Worker:
    """A thread that hands the pieces put to it, in order, to *consume*.

    :meth:`finish` waits until every piece was consumed and re-raises what *consume*
    raised; :meth:`stop` ends the thread without waiting for the rest.
    """

    def __init__(self, consume: Callable[[bytes], object], name: str) -> None:
        import queue
        import threading

        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(piece)
                except BaseException as err:  # re-raised by put() and finish()
                    self._error = err

    def put(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        import queue

        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1)


class Stream:
    """The decompressed contents of an archive, produced by a background thread.

    The thread reads the file in large pieces and decompresses them; the SHA-512 of
    the file as stored (unless *checksum* is false) and the *tee*, if any, get
    threads of their own. That work releases the GIL, while the caller parses tar
    headers and copies member data: both cores are used. Reading is forward only;
    :meth:`seek` skips ahead, which is all ``tarfile`` needs.
    """

    def __init__(self, f: BinaryIO, fmt: str, head: bytes = b"", checksum: bool = True,
                 tee: Callable[[bytes], object] | None = None) -> None:
        import hashlib
        import queue
        import threading

        self.hash = hashlib.sha512() if checksum else None
        self.tee = tee
        self.count = 0
        self._pos = 0
        self._piece = b""
        self._off = 0
        self._eof = False
        self._stop = threading.Event()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._produce, args=(f, fmt, head), daemon=True,
                                        name="archive-reader")
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, f: BinaryIO, fmt: str, head: bytes) -> None:
        hasher = Worker(self.hash.update, "archive-hash") if self.hash is not None else None
        tee = Worker(self.tee, "archive-tee") if self.tee is not None else None
        try:
            decoder = Decoder(fmt)
            chunk = head
            while True:
                chunk = chunk or f.read(_CHUNK)
                if not chunk:
                    break
                if hasher is not None:
                    hasher.put(chunk)
                self.count += len(chunk)
                for out in decoder.feed(chunk):
                    if not out:
                        continue
                    if tee is not None:
                        tee.put(out)
                    if not self._put(out):
                        return
                chunk = b""
            decoder.check_end()
            for worker in (hasher, tee):
                if worker is not None:
                    worker.finish()
            self._put(None)
        except BaseException as err:  # handed to the reading thread
            self._put(err)
        finally:
            for worker in (hasher, tee):
                if worker is not None:
                    worker.stop()

    def _next_piece(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._piece, self._off = item, 0
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 62
        parts: list[bytes] = []
        want = n
        while want:
            avail = len(self._piece) - self._off
            if not avail:
                if not self._next_piece():
                    break
                continue
            take = min(avail, want)
            parts.append(self._piece[self._off : self._off + take])
            self._off += take
            want -= take
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(out)
        return out

    def pieces(self, size: int) -> Iterator[memoryview]:
        """The next *size* bytes, as views of the decompressed pieces (no copy)."""
        left = size
        while left:
            avail = len(self._piece) - self._off
            if not avail:
                if not self._next_piece():
                    raise EOFError("unexpected end of data")
                continue
            take = min(avail, left)
            yield memoryview(self._piece)[self._off : self._off + take]
            self._off += take
            self._pos += take
            left -= take

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        if whence == 2 or pos < self._pos:
            import io

            raise io.UnsupportedOperation("an archive is read front to back only")
        while self._pos < pos:
            if not self.read(min(pos - self._pos, _CHUNK)):
                break
        return self._pos

    def finish(self) -> None:
        """Read to the very end: a cut-off stream is noticed, the digest is complete."""
        while self.read(_CHUNK):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def detect_format(head: bytes) -> str | None:
    """``"gz"``, ``"xz"``, ``"zst"``, ``"bz2"`` or ``"tar"`` from a file's first 512 bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zst"
    if head.startswith(b"BZh"):
        return "bz2"
    if len(head) >= 263 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 512 and _is_v7_header(head[:512]):
        return "tar"
    return None


def _is_v7_header(block: bytes) -> bool:
    try:
        stored = int(block[148:156].strip(b"\0 ") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 256 + sum(block[156:512])


def reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text[0].lower() + text[1:] if text else text
