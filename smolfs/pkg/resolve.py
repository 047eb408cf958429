"""Which packages an image gets: the closure of what was asked for, checked before any
download (no match, cycle, two versions, conflicts, wrong platform), and
:func:`check_requires`: every ``REQUIRES`` library provided."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smolfs.errors import InputError
from smolfs.pkg import dewey, pattern
from smolfs.pkg.summary import Package

#: NetBSD port name → pkgsrc's MACHINE_ARCH.
MACHINE_ARCH = {"amd64": "x86_64", "i386": "i386", "aarch64": "aarch64"}


class ResolveError(InputError):
    """The packages asked for cannot be installed together (the message says why)."""


@dataclass(frozen=True)
class Platform:
    """What the image is: ``machine_arch`` (``x86_64``), ``opsys``, ``os_version`` (``10.1``)."""

    machine_arch: str
    os_version: str
    opsys: str = "NetBSD"

    @classmethod
    def for_image(cls, arch: str, release: str) -> Platform:
        return cls(MACHINE_ARCH.get(arch, arch), release)


def os_compatible(host: str, built_for: str) -> bool:
    """A package built for NetBSD *built_for* runs on *host* when both are of the same major
    release and the package is not newer (NetBSD keeps the ABI within a major release;
    pkg_install only warns, but an image cannot be fixed after the fact). A host without
    a version number (a daily build: ``HEAD``) is not checked; ``netbsd-10`` is a 10."""
    import re

    m = re.search(r"\d+(\.\d+)*", host)
    if m is None:
        return True
    host = m.group(0) if "." in m.group(0) else f"{m.group(0)}.99"
    hmaj, pmaj = host.split(".")[0], built_for.split(".")[0]
    if hmaj != pmaj:
        return False
    return dewey.compare(built_for.split("_")[0], host.split("_")[0]) <= 0


def check_platform(pkg: Package, platform: Platform) -> None:
    arch, opsys, osv = pkg.get("MACHINE_ARCH"), pkg.get("OPSYS"), pkg.get("OS_VERSION")
    if opsys and opsys != platform.opsys:
        raise ResolveError(f"{pkg.name} was built for {opsys}, not {platform.opsys}",
                           hint="use a repository of NetBSD packages (--pkg-repo)")
    if arch and arch != platform.machine_arch:
        raise ResolveError(
            f"{pkg.name} was built for {arch}, but the image is {platform.machine_arch}",
            hint=f"use a repository of {platform.machine_arch} packages (--pkg-repo), "
                 "or build for that architecture (--arch)")
    if osv and not os_compatible(platform.os_version, osv):
        raise ResolveError(
            f"{pkg.name} was built for NetBSD {osv}, which NetBSD {platform.os_version} "
            "cannot run",
            hint="use the repository of packages built for the image's release "
                 f"(NetBSD/{platform.machine_arch}/{platform.os_version.split('.')[0]}.0), "
                 "or pick that release with --release")


class Index:
    """The packages of a repository, by name, with the repository named for messages."""

    def __init__(self, packages: Sequence[Package], where: str = "the repository") -> None:
        self.by_name: dict[str, Package] = {}
        for p in packages:
            self.by_name.setdefault(p.name, p)
        self.where = where

    def best(self, pat: str) -> Package | None:
        name = pattern.best(pat, self.by_name)
        return self.by_name[name] if name else None

    def similar(self, pat: str, limit: int = 5) -> list[str]:
        stem = pattern.base_name(pat).lower()[:4]
        return sorted(n for n in self.by_name if stem and stem in n.lower())[:limit]


def resolve(requests: Sequence[str], index: Index, platform: Platform | None = None
            ) -> list[Package]:
    """The packages to install for *requests* (patterns), dependencies first."""
    chosen: dict[str, Package] = {}  # PKGNAME → package
    order: list[Package] = []
    by_base: dict[str, str] = {}  # name without version → PKGNAME chosen

    def pick(pat: str, wanted_by: Package | None) -> Package:
        for name, pkg in chosen.items():
            if pattern.match(pat, name):
                return pkg
        found = index.best(pat)
        if found is None:
            similar = index.similar(pat)
            hint = (f"{index.where} has: {', '.join(similar)}" if similar
                    else "check the name with 'smolfs pkg search'")
            if wanted_by is None:
                raise ResolveError(f"no package in {index.where} matches {pat!r}", hint=hint)
            raise ResolveError(
                f"{wanted_by.name} depends on {pat!r}, which no package in {index.where} "
                "matches (missing dependency)", hint=hint)
        return found

    def visit(pkg: Package, path: list[str]) -> None:
        if pkg.name in chosen:
            return
        if pkg.name in path:
            cycle = [*path[path.index(pkg.name):], pkg.name]
            raise ResolveError(f"dependency cycle: {' -> '.join(cycle)}",
                               hint="the repository is inconsistent: report it to its maintainer")
        base = pattern.split_name(pkg.name)[0]
        other = by_base.get(base)
        if other is not None and other != pkg.name:
            raise ResolveError(f"two versions of {base} are needed: {other} and {pkg.name}",
                               hint="ask for one version that satisfies every dependency")
        if platform is not None:
            check_platform(pkg, platform)
        by_base[base] = pkg.name
        for dep in pkg.depends:
            dpkg = pick(dep, pkg)
            visit(dpkg, [*path, pkg.name])
        chosen[pkg.name] = pkg
        order.append(pkg)

    for req in requests:
        pattern.check(req)
        visit(pick(req, None), [])
    check_conflicts(order)
    return order


def check_conflicts(pkgs: Sequence[Package]) -> None:
    for p in pkgs:
        for pat in p.conflicts:
            for q in pkgs:
                if q is not p and pattern.match(pat, q.name):
                    raise ResolveError(
                        f"{p.name} conflicts with {q.name} (CONFLICTS {pat!r})",
                        hint=f"leave out {q.name} or {p.name}, or the package that needs it")


def check_requires(pkgs: Sequence[Package], have: Callable[[str], bool],
                   sets: Sequence[str] = ()) -> None:
    """Every ``REQUIRES`` (a library path) of *pkgs* is some package's ``PROVIDES`` or a
    file for which *have* is true (the image's files from the sets)."""
    provided = {lib for p in pkgs for lib in p.provides}
    for p in pkgs:
        for lib in p.requires:
            if lib in provided or have(lib):
                continue
            raise ResolveError(
                f"{p.name} needs {lib}, which the image lacks"
                + (f" (sets: {', '.join(sets)})" if sets else ""),
                hint=f"add the set that holds {lib} ({_set_for(lib)}) with -x/SETS=, "
                     "or the package that provides it")


def _set_for(path: str) -> str:
    if path.startswith("/usr/X11R7/"):
        return "xbase"
    if path.startswith(("/usr/lib/", "/lib/", "/usr/libexec/")):
        return "base"
    if path.startswith("/usr/pkg/"):
        return "a package of the repository"
    return "base"
