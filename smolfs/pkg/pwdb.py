"""``/etc/pwd.db`` and ``/etc/spwd.db`` written as NetBSD's ``pwd_mkdb`` writes them.

NetBSD's libc reads users only from these Berkeley DB 1.85 hash files, and the images
have no ``pwd_mkdb``. Record keys and the hash file's layout: ``smolfs/pkg/README.md``."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from smolfs.errors import InputError

HASHMAGIC = 0x061561
HASHVERSION = 2
BSIZE = 4096
BSHIFT = 12
FFACTOR = 32
NELEM = 256
DSIZE = 256
SSIZE, SSHIFT = 256, 8
NCACHED = 32
CHARKEY = b"%$sniglet^&\0"
LITTLE_ENDIAN = 1234
KEYBYNAME, KEYBYNUM, KEYBYUID = b"1", b"2", b"3"
PW_VERSION = 1


def hash4(data: bytes) -> int:
    """libc's default hash function (``hash_func.c``: h = h * 33 + byte)."""
    h = 0
    for b in data:
        h = (h * 33 + b) & 0xFFFFFFFF
    return h


def log2(n: int) -> int:
    """``__log2``: the smallest i with 2**i >= n."""
    i = 0
    while (1 << i) < n:
        i += 1
    return i


def _bucket(key: bytes, max_bucket: int, high: int, low: int) -> int:
    b = hash4(key) & high
    return b & low if b > max_bucket else b


def _page(pairs: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """One bucket page holding *pairs*, or None when they do not fit (with room for an
    overflow pointer, as ``PAIRFITS`` demands)."""
    page = bytearray(BSIZE)
    offsets: list[int] = []
    off = BSIZE
    for key, data in pairs:
        free = off - (len(offsets) + 3) * 2
        if 2 * 2 + len(key) + len(data) + 2 * 2 > free:
            return None
        off -= len(key)
        page[off : off + len(key)] = key
        offsets.append(off)
        off -= len(data)
        page[off : off + len(data)] = data
        offsets.append(off)
    n = len(offsets)
    struct.pack_into(f"<{n + 3}H", page, 0, n, *offsets, off - (n + 3) * 2, off)
    return bytes(page)


def write_hash(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A DB_HASH file (4096-byte pages, fill factor 32, little endian) holding *pairs*."""
    items = list(pairs)
    if len({k for k, _ in items}) != len(items):
        raise InputError("duplicate keys in a password database")
    # pwd_mkdb asks for 256 elements: (256 - 1) // 32 + 1 = 8 buckets at least.
    l2 = max(log2(max((max(len(items), NELEM) - 1) // FFACTOR + 1, 2)), 1)
    while True:
        nbuckets = 1 << l2
        max_bucket, low, high = nbuckets - 1, nbuckets - 1, (nbuckets << 1) - 1
        buckets: list[list[tuple[bytes, bytes]]] = [[] for _ in range(nbuckets)]
        for k, d in items:
            buckets[_bucket(k, max_bucket, high, low)].append((k, d))
        pages = [_page(b) for b in buckets]
        if all(p is not None for p in pages):
            break
        l2 += 1
        if l2 > 16:
            raise InputError("a password database entry is too large for a 4 KB page")
    spares = [0] * NCACHED
    spares[l2] = spares[l2 + 1] = l2 + 1
    bitmaps = [0] * NCACHED
    bitmap_addr = (l2 << 11) + 1  # OADDR_OF(l2, 1)
    bitmaps[0] = bitmap_addr
    hdrpages = ((max(260, 512) - 1) >> BSHIFT) + 1
    nsegs = 1 << log2((nbuckets - 1) // SSIZE + 1)
    header = struct.pack(
        ">17i32i32H", HASHMAGIC, HASHVERSION, LITTLE_ENDIAN, BSIZE, BSHIFT, max(DSIZE, nsegs),
        SSIZE, SSHIFT, l2, 2, max_bucket, high, low, FFACTOR, len(items), hdrpages,
        _signed(hash4(CHARKEY)), *spares, *bitmaps)

    def bucket_page(b: int) -> int:
        return b + hdrpages + (spares[log2(b + 1) - 1] if b else 0)

    bitmap_page = bucket_page((1 << l2) - 1) + 1  # OADDR_TO_PAGE(bitmap_addr)
    out = bytearray((bitmap_page + 1) * BSIZE)
    out[: len(header)] = header
    for b, page in enumerate(pages):
        assert page is not None
        start = bucket_page(b) * BSIZE
        out[start : start + BSIZE] = page
    # __ibitmap: the overflow bitmap, l2 + 1 bits in use (the first one marked), the
    # rest of the first word and every later one set.
    nbits = l2 + 1
    clearints = ((nbits - 1) >> 5) + 1
    words = [0] * clearints + [0xFFFFFFFF] * (BSIZE // 4 - clearints)
    words[clearints - 1] = (0xFFFFFFFF << (nbits & 31)) & 0xFFFFFFFF
    words[0] |= 1
    struct.pack_into(f"<{BSIZE // 4}I", out, bitmap_page * BSIZE, *words)
    return bytes(out)


def _signed(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def read_hash(data: bytes) -> dict[bytes, bytes]:
    """Every pair of a hash file this module wrote (bucket pages, no overflow chains)."""
    f = struct.unpack_from(">17i32i32H", data, 0)
    if f[0] != HASHMAGIC:
        raise InputError("not a Berkeley DB hash file")
    lorder, bsize, max_bucket, hdrpages = f[2], f[3], f[10], f[15]
    spares = f[17:49]
    e = "<" if lorder == LITTLE_ENDIAN else ">"
    out: dict[bytes, bytes] = {}
    for b in range(max_bucket + 1):
        start = (b + hdrpages + (spares[log2(b + 1) - 1] if b else 0)) * bsize
        page = data[start : start + bsize]
        if len(page) < bsize:
            continue
        n = struct.unpack_from(f"{e}H", page, 0)[0]
        offs = struct.unpack_from(f"{e}{n}H", page, 2)
        prev = bsize
        for i in range(0, n, 2):
            ko, do = offs[i], offs[i + 1]
            out[page[ko:prev]] = page[do:ko]
            prev = do
    return out


def _user_record(f: list[str], password: str) -> bytes:
    name, _, uid, gid, cls, change, expire, gecos, home, shell = f
    flags = 0
    if not uid:
        flags |= 0x01
    if not gid:
        flags |= 0x02
    if not change:
        flags |= 0x04
    if not expire:
        flags |= 0x08

    def z(s: str) -> bytes:
        return s.encode() + b"\0"

    return (z(name) + z(password) + struct.pack("<II", int(uid or 0), int(gid or 0))
            + struct.pack("<q", int(change or 0)) + z(cls) + z(gecos) + z(home) + z(shell)
            + struct.pack("<q", int(expire or 0)) + struct.pack("<I", flags))


def databases(master_passwd: Iterable[str]) -> tuple[bytes, bytes]:
    """``(pwd.db, spwd.db)`` for the lines of ``master.passwd``."""
    insecure: list[tuple[bytes, bytes]] = []
    secure: list[tuple[bytes, bytes]] = []
    uids: set[int] = set()
    lineno = 0
    for line in master_passwd:
        if not line.strip() or line.startswith("#"):
            continue
        lineno += 1
        f = line.split(":")
        if len(f) != 10:
            raise InputError(f"master.passwd line {lineno}: {line!r} does not have 10 fields")
        uid = int(f[2] or 0)
        for pairs, password in ((insecure, "*"), (secure, f[1])):
            rec = _user_record(f, password)
            pairs.append((KEYBYNAME + f[0].encode(), rec))
            pairs.append((KEYBYNUM + struct.pack("<I", lineno), rec))
            if uid not in uids:  # R_NOOVERWRITE: the first user of a uid keeps it
                pairs.append((KEYBYUID + struct.pack("<I", uid), rec))
        uids.add(uid)
    version = (b"VERSION\0", struct.pack("<I", PW_VERSION))
    return write_hash([version, *insecure]), write_hash([version, *secure])


def add_databases(tree: object, master_passwd: Sequence[str], mtime: int) -> None:
    """Put ``etc/pwd.db`` and ``etc/spwd.db`` for *master_passwd* into *tree*."""
    from smolfs.fs.filedata import BytesData
    from smolfs.fs.tree import Kind, Node

    pwd, spwd = databases(master_passwd)
    for name, data, mode in (("etc/pwd.db", pwd, 0o644), ("etc/spwd.db", spwd, 0o600)):
        tree.add(name, Node(Kind.FILE, mode=mode, mtime=mtime,  # type: ignore[attr-defined]
                            data=BytesData(data)))
