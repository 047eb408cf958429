"""The ``pkg_summary`` index of a binary package repository (``pkg_summary(5)``), and
``+BUILD_INFO`` read with the same reader, so that a directory of packages without an
index is described from the packages themselves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from smolfs.errors import InputError

#: Variables that hold one item per line (the others are joined with newlines).
LIST_VARS = ("DEPENDS", "CONFLICTS", "REQUIRES", "PROVIDES", "SUPERSEDES")


@dataclass
class Package:
    """One package of an index: its variables, as lists of lines."""

    vars: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        lines = self.vars.get(key)
        return "\n".join(lines) if lines else default

    def list(self, key: str) -> list[str]:
        return [v for v in self.vars.get(key, []) if v.strip()]

    @property
    def name(self) -> str:
        return self.get("PKGNAME")

    @property
    def file_name(self) -> str:
        """``FILE_NAME``, else ``PKGNAME.tgz`` (as pkg_summary(5) says)."""
        return self.get("FILE_NAME") or f"{self.name}.tgz"

    @property
    def depends(self) -> list[str]:
        return self.list("DEPENDS")

    @property
    def conflicts(self) -> list[str]:
        return self.list("CONFLICTS")

    @property
    def requires(self) -> list[str]:
        return self.list("REQUIRES")

    @property
    def provides(self) -> list[str]:
        return self.list("PROVIDES")

    @property
    def file_size(self) -> int | None:
        v = self.get("FILE_SIZE").strip()
        return int(v) if v.isdigit() else None

    @property
    def file_cksum(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` from ``FILE_CKSUM`` (``sha256 <hex>``), if given."""
        v = self.get("FILE_CKSUM").split()
        return (v[0].lower(), v[1].lower()) if len(v) == 2 else None

    @property
    def comment(self) -> str:
        return self.get("COMMENT")


def parse(text: str, source: str = "pkg_summary") -> list[Package]:
    """Every package of a ``pkg_summary`` text; a line that is not ``VAR=value``, or a
    package without ``PKGNAME``, is an :class:`InputError` naming the line."""
    return list(_packages(text.splitlines(), source))


def _packages(lines: Iterable[str], source: str) -> Iterator[Package]:
    cur = Package()
    start = 1
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            if cur.vars:
                yield _checked(cur, source, start)
            cur, start = Package(), lineno + 1
            continue
        key, eq, value = line.partition("=")
        if not eq or not key or not key.replace("_", "").isalnum():
            raise InputError(f"{source}:{lineno}: expected VARIABLE=value, got {line[:60]!r}",
                             hint="the file is not a pkg_summary (see pkg_summary(5))")
        cur.vars.setdefault(key, []).append(value)
    if cur.vars:
        yield _checked(cur, source, start)


def _checked(pkg: Package, source: str, lineno: int) -> Package:
    if not pkg.name:
        raise InputError(f"{source}:{lineno}: a package without PKGNAME",
                         hint="the file is not a pkg_summary (see pkg_summary(5))")
    return pkg


def parse_build_info(text: str) -> dict[str, list[str]]:
    """``+BUILD_INFO``: the same ``VAR=value`` lines, for one package; other lines ignored."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key and key.replace("_", "").isalnum():
            out.setdefault(key, []).append(value)
    return out


def format_package(pkg: Package) -> str:
    """One package as ``pkg_summary`` lines (with the blank line that ends it)."""
    return "".join(f"{k}={v}\n" for k, vals in pkg.vars.items() for v in vals) + "\n"
