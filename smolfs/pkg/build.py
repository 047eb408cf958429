"""Packages in ``smolfs build``: resolved and fetched before the image is assembled, then
streamed into its tree after the sets (the one place the build calls this package)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolfs.log import step
from smolfs.pkg.summary import Package


@dataclass(frozen=True)
class Prepared:
    """The packages of a build: what was asked, the repository, and each verified file."""

    requests: tuple[str, ...]
    repo: str
    items: tuple[tuple[Package, Path], ...]

    @property
    def files(self) -> list[Path]:
        return [path for _, path in self.items]

    def manifest(self) -> dict[str, Any]:
        return {"repo": self.repo, "requested": list(self.requests),
                "installed": [{"name": p.name, "file": path.name} for p, path in self.items]}


def prepare(requests: Sequence[str], repo: str | None, arch: str, release: str,
            mirror: str | None, offline: bool) -> Prepared:
    """Resolve *requests* against the repository and fetch every package, verified."""
    from smolfs.pkg.repo import open_repository
    from smolfs.pkg.resolve import Index, Platform, resolve

    repository = open_repository(repo, arch, release, mirror, offline)
    with step(f"resolve packages {', '.join(requests)} ({repository.url})"):
        index = Index(repository.index(), repository.url)
        pkgs = resolve(requests, index, Platform.for_image(arch, release))
    with step(f"fetch {len(pkgs)} package{'s' if len(pkgs) != 1 else ''}"):
        items = tuple((p, repository.fetch(p)) for p in pkgs)
    return Prepared(tuple(requests), repository.url, items)


def add_packages(tree: Any, prepared: Prepared, spool: Any, mtime: int,
                 sets: Sequence[str] = ()) -> None:
    """Check the packages' shared libraries against the tree, then install them."""
    from smolfs.pkg.install import Installer
    from smolfs.pkg.resolve import check_requires

    pkgs = [p for p, _ in prepared.items]
    check_requires(pkgs, lambda path: tree.get(path) is not None, sets)
    with step(f"install {len(pkgs)} package{'s' if len(pkgs) != 1 else ''}"):
        inst = Installer(tree, spool, mtime)
        inst.install_all([(path, pkg) for pkg, path in prepared.items])
        inst.finish(prepared.requests)
