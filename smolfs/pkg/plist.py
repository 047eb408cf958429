"""A package's packing list, ``+CONTENTS``, read as pkg_install's ``lib/plist.c`` reads it
(the commands: ``smolfs/pkg/README.md``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from smolfs.errors import InputError

COMMANDS = ("cwd", "cd", "src", "exec", "unexec", "mode", "owner", "group", "comment",
            "ignore", "name", "display", "pkgdep", "pkgcfl", "pkgdir", "dirrm", "option",
            "blddep")


@dataclass
class Entry:
    """A file of the list, with the state in force where it appears."""

    name: str  # as written, relative to cwd
    cwd: str
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    md5: str | None = None
    symlink: str | None = None
    ignored: bool = False


@dataclass
class Plist:
    name: str | None = None
    cwd: str | None = None  # the first @cwd: the package's prefix
    files: list[Entry] = field(default_factory=list)
    pkgdirs: list[str] = field(default_factory=list)  # absolute
    pkgdeps: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    execs: list[str] = field(default_factory=list)  # with %F %D %B %f substituted
    lines: list[str] = field(default_factory=list)


def parse(text: str, pkg: str = "package") -> Plist:
    pl = Plist()
    cwd: str | None = None
    mode = owner = group = None
    last: Entry | None = None
    ignore_next = False
    for raw in text.splitlines():
        pl.lines.append(raw)
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("@"):
            cmd, _, arg = line[1:].partition(" ")
            cmd, arg = cmd.strip(), arg.strip()
            if cmd not in COMMANDS:
                raise InputError(f"{pkg}: +CONTENTS: unknown command @{cmd}")
            if cmd in ("cwd", "cd"):
                if not arg.startswith("/"):
                    raise InputError(f"{pkg}: +CONTENTS: @cwd {arg!r} is not an absolute path")
                cwd = arg.rstrip("/") or "/"
                if pl.cwd is None:
                    pl.cwd = cwd
            elif cmd == "mode":
                mode = arg or None
            elif cmd == "owner":
                owner = arg or None
            elif cmd == "group":
                group = arg or None
            elif cmd == "comment":
                if last is not None and arg.startswith("MD5:"):
                    last.md5 = arg[4:].strip().lower()
                elif last is not None and arg.startswith("Symlink:"):
                    last.symlink = arg[8:]
            elif cmd == "ignore":
                ignore_next = True
            elif cmd == "name":
                pl.name = arg
            elif cmd == "pkgdep":
                pl.pkgdeps.append(arg)
            elif cmd == "pkgcfl":
                pl.conflicts.append(arg)
            elif cmd == "pkgdir":
                pl.pkgdirs.append(_join(cwd or "/usr/pkg", arg))
            elif cmd == "exec":
                pl.execs.append(_subst(arg, cwd or "/usr/pkg", last))
            continue
        if cwd is None:
            cwd = pl.cwd = "/usr/pkg"
        last = Entry(line, cwd, mode, owner, group, ignored=ignore_next)
        ignore_next = False
        pl.files.append(last)
    return pl


def _join(cwd: str, name: str) -> str:
    return name if name.startswith("/") else f"{cwd.rstrip('/')}/{name}"


def _subst(cmd: str, cwd: str, last: Entry | None) -> str:
    f = last.name if last else ""
    full = _join(cwd, f) if f else cwd
    d, _, b = full.rpartition("/")
    return (cmd.replace("%F", f).replace("%D", cwd).replace("%B", d or "/")
            .replace("%f", b))


def with_prefix(text: str, name: str, prefix: str) -> str:
    """*text* as the package database keeps it: ``@name`` first, ``@cwd`` the prefix."""
    out: list[str] = []
    have_name = False
    for line in text.splitlines():
        if line.startswith("@name "):
            have_name = True
            out.append(f"@name {name}")
        else:
            out.append(line)
    if not have_name:
        out.insert(0, f"@name {name}")
    if not any(line.startswith(("@cwd ", "@cd ")) for line in out):
        out.insert(1, f"@cwd {prefix}")
    return "\n".join(out) + "\n"
