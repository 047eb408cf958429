"""The plan of a build: its options checked and completed by the service's defaults,
without side effects (:func:`plan`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolfs.arch import Arch
from smolfs.errors import InputError, UsageError
from smolfs.fs.tree import source_date_epoch
from smolfs.image.options import BY_NAME, FILESYSTEMS, OPTIONS, BuildOptions, split_list
from smolfs.image.service import Service, load


@dataclass(frozen=True)
class Plan:
    """Every choice of a build, resolved from the options and the service's defaults.

    ``options`` holds the resolved values (``fs``, ``ro``, ``size_mb``, ``release``,
    ``pkgs``, ``hostname``...: a service's ``service.conf`` default, else the option's
    fallback); they read as attributes of the plan too (``planned.fs``)."""

    service: Service
    image: Path
    set_tokens: tuple[str, ...]
    arch: Arch
    now: int  # SOURCE_DATE_EPOCH, else the current time
    options: BuildOptions

    def __getattr__(self, name: str) -> Any:
        if name in BY_NAME:
            return getattr(self.options, name)
        raise AttributeError(name)


def options_of(options: BuildOptions | None, given: dict[str, Any], caller: str
             ) -> BuildOptions:
    """The options of a call: the object given, or one made of the keywords."""
    if options is not None and given:
        raise TypeError(f"{caller}() takes options= or option keywords, not both")
    for name in given:
        if name not in BY_NAME:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    return options if options is not None else BuildOptions(**given)


def plan(*, options: BuildOptions | None = None, **given: Any) -> Plan:
    """Check the options and fill in the service's defaults (no side effects). Takes
    ``options=`` or the options as keywords, as :func:`build`."""
    asked = options_of(options, given, "plan")
    arch = Arch.parse(asked.arch)
    svc = load(asked.service, asked.services_dir)
    resolved = {o.name: _resolve(getattr(asked, o.name), svc.defaults.get(o.name), o.fallback)
                for o in OPTIONS if o.key}
    fs = resolved["fs"]
    if fs not in FILESYSTEMS:
        raise UsageError(f"unknown filesystem {fs!r} (choose from {', '.join(FILESYSTEMS)})")
    size_mb = resolved["size_mb"]
    if size_mb is not None and (isinstance(size_mb, bool) or not isinstance(size_mb, int)
                                or size_mb <= 0):
        raise UsageError(f"image size must be a positive number of megabytes, not {size_mb!r}")
    for o in OPTIONS:  # a string given through the API is checked as a flag's would be
        value = getattr(asked, o.name)
        if o.kind == "value" and o.parse is not None and isinstance(value, str):
            try:
                o.from_string(value)
            except ValueError as err:
                raise UsageError(f"{o.flags[-1]} {value!r}: "
                                 f"{str(err).replace(f'{o.key}=', '')}") from None
    tokens = tuple(_set_tokens(resolved["sets"]))
    image = asked.image
    dest = Path(image) if image is not None else Path(f"{svc.name}-{arch.value}.img")
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory; give the image file name with -i")
    parent = dest.resolve().parent
    if not parent.is_dir():
        raise InputError(f"cannot write {dest}: no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {dest}: directory {parent} is not writable")
    epoch = source_date_epoch()
    resolved.update(ro=bool(resolved["ro"]), pkgs=tuple(_pkg_tokens(resolved["pkgs"])),
                    pkg_repo=resolved["pkg_repo"] or None, sets=tokens)
    return Plan(
        service=svc, image=dest, set_tokens=tokens, arch=arch,
        now=int(time.time()) if epoch is None else epoch,
        options=asked.replace(image=dest, arch=arch.value, **resolved),
    )


def _resolve(given: Any, service_default: Any, fallback: Any) -> Any:
    """An option's value: given, else the service's default, else the fallback."""
    if given is not None:
        return given
    return service_default if service_default is not None else fallback


def _pkg_tokens(pkgs: str | Sequence[str]) -> list[str]:
    items = [pkgs] if isinstance(pkgs, str) else list(pkgs)
    return [t for item in items for t in split_list(item)]


def _set_tokens(sets: str | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(sets, str | os.PathLike):
        sets = [sets]
    tokens: list[str] = []
    for item in sets:
        if isinstance(item, os.PathLike):
            tokens.append(os.fspath(item))
        else:
            tokens.extend(split_list(item))
    if not tokens:
        raise UsageError("no sets given", hint="name sets (-x base,etc) or archive files")
    return tokens
