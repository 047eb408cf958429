"""The declarative lines of a package's ``+INSTALL`` (``# USER:``, ``# GROUP:``, ``# DIR:``,
``# FILE:``, ``# SHELL:``), applied at build time; the rest of the script runs at first
boot (see ``smolfs/pkg/README.md``)."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from smolfs.errors import InputError
from smolfs.fs.filedata import BytesData
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.pkg.users import Accounts, User

_LINE = re.compile(r"^# (USER|GROUP|DIR|FILE|SHELL): (.*)$")


@dataclass(frozen=True)
class Directive:
    kind: str  # USER GROUP DIR FILE SHELL
    args: tuple[str, ...]
    line: str


def parse(text: str, pkg: str = "package") -> list[Directive]:
    out = []
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        kind, rest = m.group(1), m.group(2).strip()
        try:
            args = tuple(shlex.split(rest)) if kind in ("DIR", "FILE") else (rest,)
        except ValueError as err:
            raise InputError(f"{pkg}: +INSTALL: {raw.strip()!r}: {err}") from None
        out.append(Directive(kind, args, raw.strip()))
    return out


#: What +INSTALL does before the files are extracted (PRE-INSTALL) and after.
PHASES = {"pre": ("GROUP", "USER"), "post": ("DIR", "FILE", "SHELL")}


def apply(directives: list[Directive], tree: Tree, accounts: Accounts, prefix: str,
          pkg: str, mtime: int, phase: str) -> None:
    """The directives of *phase*, in the script's order: groups, users (``pre``, before
    the files, so that ``@owner`` can name them); directories, files, shells (``post``)."""
    kinds = PHASES[phase]
    for d in sorted((d for d in directives if d.kind in kinds),
                    key=lambda d: kinds.index(d.kind)):
        _apply(d, tree, accounts, prefix, pkg, mtime)


def _abs(path: str, prefix: str) -> str:
    return path if path.startswith("/") else f"{prefix.rstrip('/')}/{path}"


def _owner(accounts: Accounts, owner: str | None, group: str | None, pkg: str, line: str
           ) -> tuple[int, int]:
    uid = accounts.uid(owner) if owner else 0
    gid = accounts.gid(group) if group else 0
    if uid is None or gid is None:
        missing = owner if uid is None else group
        raise InputError(f"{pkg}: +INSTALL {line!r}: unknown user or group {missing!r}",
                         hint="the package must add it with a USER/GROUP line, or the image "
                              "must have it (the etc set)")
    return uid, gid


def _mode(text: str | None, default: int, pkg: str, line: str) -> int:
    if not text:
        return default
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise InputError(f"{pkg}: +INSTALL {line!r}: mode {text!r} is not octal")
    return int(text, 8)


def _apply(d: Directive, tree: Tree, accounts: Accounts, prefix: str, pkg: str,
           mtime: int) -> None:
    if d.kind == "GROUP":
        name, _, gid = d.args[0].partition(":")
        accounts.add_group(name, int(gid) if gid.isdigit() else None, pkg)
    elif d.kind == "USER":
        f = d.args[0].split(":")
        if len(f) < 2 or not f[0] or not f[1]:
            raise InputError(f"{pkg}: +INSTALL {d.line!r}: expected user:group[:uid...]")
        f += [""] * (6 - len(f))
        user = User(f[0], int(f[2]) if f[2].isdigit() else -1, 0, f[3],
                    f[4] or "/nonexistent", f[5] or "/sbin/nologin")
        accounts.add_user(user, f[1], pkg)
    elif d.kind == "DIR":
        if len(d.args) < 2:
            raise InputError(f"{pkg}: +INSTALL {d.line!r}: expected path flags [mode owner group]")
        path, flags = _abs(d.args[0], prefix), d.args[1]
        if "m" not in flags and "o" not in flags:
            return
        mode = _mode(d.args[2] if len(d.args) > 2 else None, 0o755, pkg, d.line)
        uid, gid = _owner(accounts, d.args[3] if len(d.args) > 3 else None,
                          d.args[4] if len(d.args) > 4 else None, pkg, d.line)
        node = tree.mkdirs(path, mtime=mtime)
        node.mode, node.uid, node.gid = mode, uid, gid
    elif d.kind == "FILE":
        if len(d.args) < 3:
            raise InputError(f"{pkg}: +INSTALL {d.line!r}: expected path flags example ...")
        path, flags, example = _abs(d.args[0], prefix), d.args[1], _abs(d.args[2], prefix)
        if "r" in flags or "c" not in flags:
            return
        if tree.get(path) is not None:
            return  # never overwrite a configuration file
        src = tree.get(example)
        if src is None or src.kind != Kind.FILE:
            raise InputError(f"{pkg}: +INSTALL {d.line!r}: the example {example} is not "
                             "in the package")
        mode = _mode(d.args[3] if len(d.args) > 3 else None, src.mode, pkg, d.line)
        uid, gid = _owner(accounts, d.args[4] if len(d.args) > 4 else None,
                          d.args[5] if len(d.args) > 5 else None, pkg, d.line)
        tree.mkdirs(os.path.dirname(path), mtime=mtime)
        tree.add(path, Node(Kind.FILE, mode=mode, uid=uid, gid=gid, mtime=mtime,
                            data=src.data))
    elif d.kind == "SHELL":
        shell = d.args[0]
        node = tree.get("etc/shells")
        text = b""
        if node is not None and node.kind == Kind.FILE and node.data is not None:
            text = node.data.read(0, node.data.size)
        if shell.encode() in text.split():
            return
        if text and not text.endswith(b"\n"):
            text += b"\n"
        tree.mkdirs("etc", mtime=mtime)
        tree.add("etc/shells", Node(Kind.FILE, mode=0o644, mtime=mtime,
                                    data=BytesData(text + shell.encode() + b"\n")))
