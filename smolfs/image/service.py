"""Service definitions: find them, read their ``service.conf``, check them.

A service is a directory with ``etc/`` (``etc/rc`` required), optional ``postinst/*.sh``
and ``service.conf`` (``services/README.md``). ``service.conf`` is parsed, never
executed: only the keys of :data:`SETTINGS`, anything else an error naming the line."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolfs.errors import InputError
from smolfs.image.options import BY_NAME, FILESYSTEMS, OPTIONS, parse_seconds, split_list

__all__ = ["FILESYSTEMS", "SETTINGS", "Service", "load", "parse_seconds", "split_list"]

CONF_NAME = "service.conf"
COMMON = "common"


#: READY= of a port in the guest: ``http:GUESTPORT[/PATH]`` or ``tcp:GUESTPORT``.
NETWORK_READY = re.compile(r"(http):(\d+)(/\S*)?|(tcp):(\d+)")


def _ready(value: str) -> str:
    """A console line's regular expression, or a guest port answering HTTP or TCP."""
    m = NETWORK_READY.fullmatch(value)
    if m is not None:
        port = int(m[2] or m[5])
        if not 1 <= port <= 65535:
            raise ValueError(f"guest port {port} out of range (1-65535)")
        return value
    return _regex(value)


def _regex(value: str) -> str:
    if not value:
        raise ValueError("expected a regular expression, e.g. READY=^web: listening")
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"not a regular expression: {err}") from None
    return value


def _dirs(value: str) -> tuple[str, ...]:
    paths = tuple(value.split())
    if not paths or not all(p.startswith("/") for p in paths):
        raise ValueError("expected absolute directory paths, space-separated, "
                         "e.g. POSTINST_BIND=/opt/www")
    return paths


@dataclass(frozen=True)
class Setting:
    key: str
    attr: str
    parse: Callable[[str], Any]
    help: str


#: The keys ``service.conf`` may hold beyond the build options' (:data:`OPTIONS`).
SERVICE_ONLY: tuple[Setting, ...] = (
    Setting("READY", "ready", _ready,
            "console line (regular expression) the service prints once it is ready, or "
            "http:GUESTPORT[/PATH] / tcp:GUESTPORT (the guest port answers, through the "
            "host port -p forwards to it): what `startnb SERVICE` waits for unless given "
            "--ready"),
    Setting("POSTINST_BIND", "postinst_bind", _dirs,
            "host directories (absolute, space-separated) shown read-only to the postinst "
            "scripts under bubblewrap, at their own paths"),
)
#: Every key ``service.conf`` may hold, declared once: the build options that have a key
#: (a service's default for that option) and the service's own (README and errors derive
#: from it).
SETTINGS: tuple[Setting, ...] = (
    *(Setting(o.key, o.name, o.from_string, o.help) for o in OPTIONS if o.key),
    *SERVICE_ONLY,
)
_BY_KEY = {s.key: s for s in SETTINGS}
_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Service:
    """A service directory and its ``service.conf``: ``defaults`` holds the build options
    it sets (by option name; read also as attributes: ``svc.sets``, None when unset)."""

    name: str
    path: Path
    common: Path | None
    ready: str | None = None
    postinst_bind: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __getattr__(self, name: str) -> Any:
        if name in BY_NAME and BY_NAME[name].key:
            return self.defaults.get(name)
        raise AttributeError(name)

    @property
    def etc(self) -> Path:
        return self.path / "etc"

    @property
    def postinst(self) -> list[Path]:
        """``postinst/*.sh`` in name order."""
        d = self.path / "postinst"
        if not d.is_dir():
            return []
        return sorted((p for p in d.iterdir() if p.suffix == ".sh" and p.is_file()),
                      key=lambda p: p.name)


def parse_conf(path: Path) -> dict[str, Any]:
    """Read ``service.conf``: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from err
    out: dict[str, Any] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise InputError(f"{path}:{lineno}: expected KEY=value, got {line!r}")
        key, value = m.group(1), _unquote(m.group(2).strip())
        setting = _BY_KEY.get(key)
        if setting is None:
            raise InputError(
                f"{path}:{lineno}: unknown key {key!r} (valid: {', '.join(_BY_KEY)})"
            )
        try:
            out[setting.attr] = setting.parse(value)
        except ValueError as err:
            raise InputError(f"{path}:{lineno}: {key}={value!r}: {err}") from None
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def shipped_dir() -> Path:
    from services import shipped_dir as _shipped

    return _shipped()


def available(services_dir: Path) -> list[str]:
    """Names of the services in *services_dir* (directories holding ``etc/rc``)."""
    if not services_dir.is_dir():
        return []
    return sorted(
        p.name for p in services_dir.iterdir()
        if p.is_dir() and p.name != COMMON and (p / "etc" / "rc").is_file()
    )


def load(name: str, services_dir: str | Path | None = None) -> Service:
    """Find and check service *name*; ``services_dir`` None means the shipped ones.

    ``common/`` is taken from *services_dir* when it has one, else from the
    shipped services.
    """
    base = Path(services_dir) if services_dir is not None else shipped_dir()
    if services_dir is not None and not base.is_dir():
        raise InputError(f"services directory {base} does not exist")
    if not name or "/" in name or name in (".", "..", COMMON):
        raise InputError(f"invalid service name {name!r}")
    path = base / name
    if not path.is_dir():
        names = available(base)
        raise InputError(
            f"unknown service {name!r} in {base} "
            f"(available: {', '.join(names) if names else 'none'})"
        )
    if not (path / "etc" / "rc").is_file():
        raise InputError(
            f"service {name!r} has no etc/rc ({path / 'etc' / 'rc'})",
            hint="init runs /etc/rc at boot: every service needs one",
        )
    common = base / COMMON
    if not common.is_dir():
        common = shipped_dir() / COMMON
    conf = parse_conf(path / CONF_NAME) if (path / CONF_NAME).is_file() else {}
    own = {s.attr: conf.pop(s.attr) for s in SERVICE_ONLY if s.attr in conf}
    return Service(name=name, path=path, common=common if common.is_dir() else None,
                   defaults=conf, **own)
