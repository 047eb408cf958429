"""NetBSD mtree(5) specifications applied to a tree, as ``makefs -F`` applies them.

:func:`parse_spec` reads both layouts (full paths and hierarchical), :func:`apply_spec`
sets attributes and creates the entries a spec declares. Where and why it differs from
``makefs`` (a missing ``file`` entry is an error, reproducible times, NetBSD's own user
tables): ``smolfs/fs/README.md``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from smolfs.errors import InputError
from smolfs.fs.filedata import HostFileData
from smolfs.fs.tree import Kind, Node, Tree, source_date_epoch

#: NetBSD's standard users (``/etc/master.passwd`` of a fresh install).
USERS: dict[str, int] = {
    "root": 0, "toor": 0, "daemon": 1, "operator": 2, "bin": 3, "games": 7, "postfix": 12,
    "named": 14, "ntpd": 15, "sshd": 16, "_pflogd": 18, "_rwhod": 19, "_proxy": 21,
    "_timedc": 22, "_sdpd": 23, "_httpd": 24, "_mdnsd": 25, "_tests": 26, "_tcpdump": 27,
    "_tss": 28, "_rtadvd": 30, "_unbound": 32, "_nsd": 33, "uucp": 66, "nobody": 32767,
}

#: NetBSD's standard groups (``/etc/group`` of a fresh install).
GROUPS: dict[str, int] = {
    "wheel": 0, "daemon": 1, "kmem": 2, "sys": 3, "tty": 4, "operator": 5, "mail": 6,
    "bin": 7, "news": 8, "wsrc": 9, "maildrop": 10, "postfix": 12, "games": 13, "named": 14,
    "ntpd": 15, "sshd": 16, "_pflogd": 18, "_rwhod": 19, "staff": 20, "_proxy": 21,
    "_timedc": 22, "_sdpd": 23, "_httpd": 24, "_mdnsd": 25, "_tests": 26, "_tcpdump": 27,
    "_tss": 28, "_gpio": 29, "_rtadvd": 30, "guest": 31, "_unbound": 32, "_nsd": 33,
    "nobody": 39, "utmp": 45, "authpf": 72, "users": 100, "dialer": 117, "nvmm": 221,
    "nogroup": 32766,
}

TYPES: dict[str, Kind] = {
    "file": Kind.FILE, "dir": Kind.DIR, "link": Kind.SYMLINK, "char": Kind.CHR,
    "block": Kind.BLK, "fifo": Kind.FIFO, "socket": Kind.SOCK,
}

#: chflags(1) names → BSD file flag bits.
FLAGS: dict[str, int] = {
    "nodump": 0x1, "uchg": 0x2, "uchange": 0x2, "uimmutable": 0x2, "uappnd": 0x4,
    "uappend": 0x4, "opaque": 0x8, "arch": 0x10000, "archived": 0x10000, "schg": 0x20000,
    "schange": 0x20000, "simmutable": 0x20000, "sappnd": 0x40000, "sappend": 0x40000,
}

_IGNORED = {
    "cksum", "md5", "md5digest", "rmd160", "rmd160digest", "sha1", "sha1digest", "sha256",
    "sha256digest", "sha384", "sha384digest", "sha512", "sha512digest", "size", "nlink",
    "tags", "ignore", "nochange", "resdev",
}
_KNOWN = {"type", "mode", "uid", "gid", "uname", "gname", "link", "device", "time",
          "flags", "contents", "optional"} | _IGNORED
_BARE = {"optional", "ignore", "nochange"}


@dataclass
class SpecEntry:
    """One line of a spec: the entry's path in the image and its keywords (with the
    ``/set`` defaults in force merged in)."""

    path: bytes
    keywords: dict[str, str] = field(default_factory=dict)
    line: int = 0


# ---------------------------------------------------------------------------
# Parsing

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "\\": "\\", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "E": "\x1b", "#": "#", " ": " "}


def unvis(text: str) -> bytes:
    """Undo ``vis(3)`` C-style and octal escapes: ``a\\040b`` → ``b"a b"``."""
    raw = os.fsencode(text)
    if b"\\" not in raw:
        return raw

    def sub(m: re.Match[bytes]) -> bytes:
        code = m.group(1)
        if len(code) == 3:
            return bytes([int(code, 8) & 0xFF])
        return os.fsencode(_ESCAPES.get(code.decode("latin-1"), code.decode("latin-1")))

    return re.sub(rb"\\([0-7]{3}|.)", sub, raw, flags=re.DOTALL)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
            if line.lstrip().startswith("#"):
                continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        if full.strip():
            out.append((start, full))
    if pending.strip():
        out.append((start, pending))
    return out


def _keywords(tokens: list[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if key not in _KNOWN:
            raise InputError(f"{where}: unknown keyword {key!r}")
        if not eq and key not in _BARE:
            raise InputError(f"{where}: keyword {key!r} needs a value ({key}=...)")
        out[key] = value
    return out


def parse_spec(text: str, source: str = "spec") -> list[SpecEntry]:
    """Parse spec *text* into entries, in order; *source* names it in errors."""
    defaults: dict[str, str] = {}
    cwd: list[list[bytes]] = []  # hierarchical format: the open directories
    entries: list[SpecEntry] = []
    for number, line in _logical_lines(text):
        where = f"{source}:{number}"
        tokens = line.split()
        head, rest = tokens[0], tokens[1:]
        if head == "/set":
            defaults.update(_keywords(rest, where))
            continue
        if head == "/unset":
            for key in rest:
                if key == "all":
                    defaults.clear()
                else:
                    defaults.pop(key, None)
            continue
        if head.startswith("/"):
            raise InputError(f"{where}: unknown command {head!r} (only /set and /unset)")
        if head == "..":
            if rest:
                raise InputError(f"{where}: '..' takes no keywords")
            if cwd:
                cwd.pop()
            continue
        kw = dict(defaults)
        kw.update(_keywords(rest, where))
        name = unvis(head)
        if b"/" in name:  # full path: relative to the root, never opens a directory
            parts = [p for p in name.split(b"/") if p not in (b"", b".")]
        else:
            parts = [p for level in cwd for p in level]
            if name != b".":
                parts.append(name)
        if b".." in parts:
            raise InputError(f"{where}: path {os.fsdecode(name)!r} contains '..'")
        if b"/" not in name and kw.get("type") == "dir":
            cwd.append([] if name == b"." else [name])
        entries.append(SpecEntry(b"/".join(parts), kw, number))
    return entries


# ---------------------------------------------------------------------------
# Values


def parse_mode(text: str, current: int = 0) -> int:
    """Octal (``0755``) or symbolic (``u=rwx,go=rx``, ``a+x``, ``u+s``) permissions."""
    if re.fullmatch(r"[0-7]{1,5}", text):
        return int(text, 8) & 0o7777
    mode = current & 0o7777
    for clause in text.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*|[ugo])", clause)
        if not m:
            raise ValueError(text)
        who, op, perms = m.groups()
        who = who or "a"
        mask = 0
        if "u" in who or "a" in who:
            mask |= 0o4700
        if "g" in who or "a" in who:
            mask |= 0o2070
        if "o" in who or "a" in who:
            mask |= 0o0007
        if perms in ("u", "g", "o"):
            shift = {"u": 6, "g": 3, "o": 0}[perms]
            rwx = (mode >> shift) & 7
            bits = (rwx << 6 | rwx << 3 | rwx) & mask
        else:
            bits = 0
            for p in perms:
                bits |= {"r": 0o444, "w": 0o222, "x": 0o111, "X": 0o111, "s": 0o6000,
                         "t": 0o1000}[p]
            bits &= mask | (0o1000 if "t" in perms else 0)
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mode = (mode & ~mask) | bits
    return mode


def parse_device(text: str) -> tuple[int, int]:
    """``netbsd,2,2``, ``2,2`` or a raw NetBSD device number → ``(major, minor)``."""
    parts = text.split(",")
    if len(parts) == 3:
        parts = parts[1:]
    if len(parts) == 2:
        return int(parts[0], 0), int(parts[1], 0)
    if len(parts) == 1:
        raw = int(parts[0], 0)
        return (raw & 0x000FFF00) >> 8, (raw & 0xFF) | ((raw & 0xFFF00000) >> 12)
    raise ValueError(text)


def parse_flags(text: str) -> int:
    value = 0
    for word in text.split(","):
        if word in ("", "none"):
            continue
        if word not in FLAGS:
            raise ValueError(word)
        value |= FLAGS[word]
    return value


# ---------------------------------------------------------------------------
# Applying


def _read_spec(spec: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(spec, str) and ("\n" in spec or "=" in spec.split("/")[-1]):
        return spec, "spec"
    path = os.fspath(spec)
    try:
        return Path(path).read_text(encoding="utf-8", errors="surrogateescape"), path
    except OSError as err:
        raise InputError(f"cannot read spec {path}: {err.strerror}") from err


def apply_spec(tree: Tree, spec: str | os.PathLike[str]) -> int:
    """Apply an mtree spec to *tree*; return the number of entries it named.

    *spec* is a path (``str`` or ``Path``) or the spec's text (a ``str`` holding a
    newline). Errors name the spec line and the entry.
    """
    text, source = _read_spec(spec)
    entries = parse_spec(text, source)
    when = _default_time(tree)
    for entry in entries:
        _apply(tree, entry, source, when)
    return len(entries)


def _default_time(tree: Tree) -> int:
    """Time of entries the spec creates without ``time=``: ``SOURCE_DATE_EPOCH`` when
    set, else the newest time in the tree — reproducible either way."""
    epoch = source_date_epoch()
    if epoch is not None:
        return epoch
    return max((node.mtime for _, node in tree.walk()), default=0)


def _apply(tree: Tree, entry: SpecEntry, source: str, when: int) -> None:
    kw = entry.keywords
    shown = "./" + os.fsdecode(entry.path) if entry.path else "."
    where = f"{source}:{entry.line}: {shown}"
    kind = None
    if "type" in kw:
        kind = TYPES.get(kw["type"])
        if kind is None:
            raise InputError(f"{where}: unknown type {kw['type']!r} "
                             f"(choose from {', '.join(TYPES)})")
    node = tree.get(entry.path)
    if node is not None and kind is not None and node.kind != kind:
        raise InputError(f"{where}: type mismatch: the spec says {kw['type']}, "
                         f"the sources have {_type_name(node.kind)}")
    if node is None:
        if "optional" in kw and "contents" not in kw:
            return
        if kind is None:
            raise InputError(f"{where}: missing from the sources and the spec gives no type")
        if kind == Kind.FILE and "contents" not in kw:
            raise InputError(f"{where}: named in the spec but missing from the sources",
                             hint="add the file to a source, or mark the entry 'optional'")
        node = _new_node(kind, kw, where, when)
        tree.add(entry.path, node)
    _set_attributes(node, kw, where)


def _type_name(kind: Kind) -> str:
    return next(name for name, k in TYPES.items() if k == kind)


_DEFAULT_MODES = {Kind.DIR: 0o755, Kind.FILE: 0o644, Kind.SYMLINK: 0o755, Kind.CHR: 0o600,
                  Kind.BLK: 0o600, Kind.FIFO: 0o644, Kind.SOCK: 0o644}


def _new_node(kind: Kind, kw: dict[str, str], where: str, mtime: int) -> Node:
    node = Node(kind, mode=_DEFAULT_MODES[kind], mtime=mtime)
    if kind == Kind.SYMLINK and "link" not in kw:
        raise InputError(f"{where}: a new symlink needs link=TARGET")
    if kind in (Kind.CHR, Kind.BLK) and "device" not in kw:
        raise InputError(f"{where}: a new device node needs device=netbsd,MAJOR,MINOR")
    return node


def _set_attributes(node: Node, kw: dict[str, str], where: str) -> None:
    for key, value in kw.items():
        try:
            if key == "mode":
                node.mode = parse_mode(value, node.mode)
            elif key == "uid":
                node.uid = int(value)
            elif key == "gid":
                node.gid = int(value)
            elif key in ("uname", "gname"):
                names, what, field = ((USERS, "user", "uid") if key == "uname"
                                      else (GROUPS, "group", "gid"))
                if value not in names:
                    raise InputError(f"{where}: unknown {what} {value!r}",
                                     hint=f"use {field}=NUMBER for {what}s outside NetBSD's "
                                          "standard ones")
                setattr(node, field, names[value])
            elif key == "time":
                node.mtime = int(value.split(".")[0])
                node.atime = node.ctime = None
            elif key == "flags":
                node.flags = parse_flags(value)
            elif key == "link" and node.kind == Kind.SYMLINK:
                node.target = unvis(value)
            elif key == "device" and node.kind in (Kind.CHR, Kind.BLK):
                node.rdev = parse_device(value)
            elif key == "contents" and node.kind == Kind.FILE:
                if not os.path.isfile(value):
                    raise InputError(f"{where}: contents={value}: no such file")
                node.data = HostFileData(value)
        except ValueError:
            raise InputError(f"{where}: invalid {key}={value}") from None
