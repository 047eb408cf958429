"""The build options, each declared once: :data:`OPTIONS` and :class:`BuildOptions`.

``smolfs build``'s parser, the ``service.conf`` keys that set a service's defaults,
the option tables of the READMEs, the manifest, the staleness request and what
``startnb SERVICE`` forwards are all derived from :data:`OPTIONS`. Cheap to import
(no dataclasses, no typing): the launcher's ``--help`` reads it.
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import Any

FILESYSTEMS = ("ffs", "ext2")
ARCHES = ("amd64", "i386", "aarch64")


def split_list(value: str) -> list[str]:
    """``"base, etc  rescue"`` → ``["base", "etc", "rescue"]``."""
    return [v for v in re.split(r"[,\s]+", value.strip()) if v]


# -- parsers: a string (a flag's value, a service.conf value) to a value; ValueError says
#    what was expected, with a service.conf example (the CLI drops the "KEY=").

def parse_sets(value: str) -> tuple[str, ...]:
    names = tuple(split_list(value))
    if not names:
        raise ValueError("expected one or more set names, e.g. SETS=base,etc")
    return names


def parse_size(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ValueError("expected a whole number of megabytes, e.g. SIZE_MB=64")
    return int(value)


def parse_bool(value: str) -> bool:
    low = value.lower()
    if low in ("yes", "true", "1", "on"):
        return True
    if low in ("no", "false", "0", "off"):
        return False
    raise ValueError("expected yes or no")


def parse_fs(value: str) -> str:
    if value not in FILESYSTEMS:
        raise ValueError(f"expected one of {', '.join(FILESYSTEMS)}")
    return value


def parse_pkgs(value: str) -> tuple[str, ...]:
    names = tuple(split_list(value))
    if not names:
        raise ValueError("expected one or more package names, e.g. PKGS=caddy")
    return names


def parse_repo(value: str) -> str:
    if not value:
        raise ValueError("expected a URL or a directory, e.g. PKG_REPO=https://...")
    return value


def parse_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError("expected a number of seconds (0: no limit), e.g. POSTINST_TIMEOUT=600")
    return seconds


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def parse_hostname(value: str) -> str:
    """A host name NetBSD takes from ``/etc/myname``: dot-separated labels of letters,
    digits and inner hyphens, at most 255 characters."""
    if not value or len(value) > 255 or not all(_LABEL.fullmatch(la)
                                                for la in value.split(".")):
        raise ValueError("expected a host name (letters, digits, '-', dot-separated), "
                         "e.g. HOSTNAME=web1")
    return value


class Option:
    """One build option: the keyword of :func:`smolfs.image.build.build` (``name``), its flags,
    its ``service.conf`` key (a service's default for it), how a string becomes its value,
    its default (None: the service's, else ``fallback``), its help.

    ``kind``: ``value`` (one value), ``list`` (repeatable, comma/space-separated),
    ``switch`` (a flag that sets True), ``off`` (a flag that sets False), ``ro``
    (``--ro``/``--rw``). ``decides``: part of what a build is asked
    (:func:`request`; a recorded image is reused only for the same request);
    ``keyed``: its resolved value is part of the image's inputs digest; ``manifest``:
    its resolved value is recorded in the manifest (``IMAGE.json``); ``path``: a path,
    made absolute in the request; ``startnb``: ``startnb SERVICE`` has the flag too and
    forwards it by name.
    """

    __slots__ = (
        "choices",
        "decides",
        "default",
        "fallback",
        "flags",
        "help",
        "key",
        "keyed",
        "kind",
        "manifest",
        "metavar",
        "name",
        "parse",
        "path",
        "startnb",
    )

    def __init__(self, name: str, flags: tuple[str, ...], help: str, *,
                 key: str | None = None, parse: Callable[[str], Any] | None = None,
                 default: Any = None, fallback: Any = None, metavar: str | None = None,
                 choices: tuple[str, ...] | None = None, kind: str = "value",
                 decides: bool = False, keyed: bool = False, manifest: bool = False,
                 path: bool = False, startnb: bool = False) -> None:
        for attr, value in (("name", name), ("flags", flags), ("key", key), ("parse", parse),
                            ("default", default), ("fallback", fallback), ("help", help),
                            ("metavar", metavar), ("choices", choices), ("kind", kind),
                            ("decides", decides), ("keyed", keyed), ("manifest", manifest),
                            ("path", path), ("startnb", startnb)):
            object.__setattr__(self, attr, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Option {self.name!r} is frozen")

    def __repr__(self) -> str:
        return f"Option({self.name!r}, {self.flags!r})"

    def from_string(self, value: str) -> Any:
        """*value* (a flag's or a ``service.conf`` value) parsed; ValueError when bad."""
        return self.parse(value) if self.parse is not None else value


#: Every build option, in the order of ``smolfs build --help``.
OPTIONS: tuple[Option, ...] = (
    Option("service", ("-s", "--service"), "service to build (default: %(default)s)",
           default="rescue", metavar="SERVICE", decides=True, keyed=True, manifest=True),
    Option("size_mb", ("-m", "--megabytes"),
           "image size in MiB (default: the service's SIZE_MB, else automatic: the content "
           "plus 10%%, and for a read-write root at least 32 MiB and 4096 inodes free)",
           key="SIZE_MB", parse=parse_size, metavar="MB", decides=True, keyed=True),
    Option("image", ("-i", "--image"), "image file to write (default: SERVICE-ARCH.img here)",
           metavar="IMAGE", decides=True, path=True),
    Option("sets", ("-x", "--sets"),
           "sets to install: names (rescue, base, etc...) or archive files, comma- or "
           "space-separated, repeatable (default: the service's SETS, else rescue)",
           key="SETS", parse=parse_sets, fallback=("rescue",), metavar="SETS", kind="list",
           decides=True),
    Option("fs", ("--fs",), "root filesystem (default: the service's FS, else ffs)",
           key="FS", parse=parse_fs, fallback="ffs", choices=FILESYSTEMS, decides=True,
           keyed=True, manifest=True),
    Option("arch", ("--arch",), "NetBSD architecture (default: %(default)s; aarch64 is "
           "NetBSD's evbarm-aarch64)", default="amd64", choices=ARCHES, decides=True,
           keyed=True, manifest=True, startnb=True),
    Option("release", ("--release",),
           "NetBSD release of fetched sets (default: the newest supported)", metavar="R",
           decides=True, keyed=True, manifest=True, startnb=True),
    Option("ro", ("--ro", "--rw"),
           "read-only root filesystem (--rw: read-write even if the service defaults to "
           "read-only)", key="RO", parse=parse_bool, fallback=False, kind="ro",
           decides=True, keyed=True, manifest=True),
    Option("hostname", ("--hostname",),
           "host name written to /etc/myname (default: the service's HOSTNAME, else the "
           "sets' /etc/myname if any)", key="HOSTNAME", parse=parse_hostname,
           metavar="NAME", decides=True, keyed=True, manifest=True, startnb=True),
    Option("services_dir", ("--services-dir",),
           "directory of service definitions (default: the shipped ones)", metavar="DIR",
           decides=True, path=True, startnb=True),
    Option("mirror", ("--mirror",),
           "NetBSD mirror for sets not in the cache (https, http, file)", metavar="URL"),
    Option("offline", ("--offline",),
           "never download: use only cached sets and archive files", default=False,
           kind="switch", startnb=True),
    Option("kernel", ("-k", "--kernel"),
           "also fetch this kernel of the release (e.g. GENERIC) and name it in the "
           "manifest, for startnb", metavar="NAME", decides=True),
    Option("force", ("-f", "--force"),
           "rebuild even when the image is up to date; allow an image over 64 GiB",
           default=False, kind="switch"),
    Option("pkgs", ("--pkg",),
           "pkgsrc packages to install with their dependencies: names or patterns "
           "('nginx>=1.24', 'py3*-flask'), repeatable (default: the service's PKGS)",
           key="PKGS", parse=parse_pkgs, fallback=(), metavar="NAME[,NAME...]", kind="list",
           decides=True, keyed=True),
    Option("pkg_repo", ("--pkg-repo",),
           "package repository: https, http, file URL or a directory of .tgz (default: the "
           "service's PKG_REPO, $MKSMOLNB_PKG_REPO, else the official one for the release "
           "and arch)", key="PKG_REPO", parse=parse_repo, metavar="URL", decides=True,
           keyed=True),
    Option("fast_copies", ("--no-fast-copy",),
           "read the set archives themselves: neither use nor keep the zstd copies of sets "
           "that make later builds faster", default=True, kind="off"),
    Option("postinst_timeout", ("--postinst-timeout",),
           "time limit of each postinst script: past it the script and every process it "
           "started are killed and the build fails (default: the service's "
           "POSTINST_TIMEOUT, else 300; 0: none)", key="POSTINST_TIMEOUT",
           parse=parse_seconds, fallback=300.0, metavar="SECONDS"),
)
BY_NAME = {o.name: o for o in OPTIONS}
#: The options a service's ``service.conf`` gives defaults for, by key.
BY_KEY = {o.key: o for o in OPTIONS if o.key}
#: The options ``startnb SERVICE`` has and forwards to the build, by name.
STARTNB = tuple(o.name for o in OPTIONS if o.startnb)


class BuildOptions:
    """The options of one build, frozen: one attribute per :data:`OPTIONS` entry.

    ``BuildOptions(service="bozohttpd", sets="base,etc")``; unknown names are a
    TypeError, as for a function; :meth:`replace` makes a changed copy."""

    __slots__ = tuple(BY_NAME)

    def __init__(self, **given: Any) -> None:
        unknown = [k for k in given if k not in BY_NAME]
        if unknown:
            raise TypeError(f"unknown build option {unknown[0]!r} "
                            f"(known: {', '.join(BY_NAME)})")
        for o in OPTIONS:
            object.__setattr__(self, o.name, given.get(o.name, o.default))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BuildOptions is frozen: use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("BuildOptions is frozen")

    def replace(self, **changes: Any) -> BuildOptions:
        return BuildOptions(**{**dict(self.items()), **changes})

    def items(self) -> Iterator[tuple[str, Any]]:
        for o in OPTIONS:
            yield o.name, getattr(self, o.name)

    def given(self) -> dict[str, Any]:
        """The options that differ from their default."""
        return {k: v for k, v in self.items() if v != BY_NAME[k].default}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BuildOptions) and list(self.items()) == list(other.items())

    def __hash__(self) -> int:
        return hash(tuple(repr(v) for _, v in self.items()))

    def __repr__(self) -> str:
        return "BuildOptions(" + ", ".join(f"{k}={v!r}" for k, v in self.given().items()) + ")"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BuildOptions:
        """From a namespace parsed by a parser :func:`add_arguments` filled."""
        return cls(**{o.name: getattr(args, o.name) for o in OPTIONS if hasattr(args, o.name)})


def _cli_type(option: Option) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        import argparse

        try:
            return option.from_string(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                str(err).replace(f"{option.key}=", "") if option.key else str(err)) from None

    convert.__name__ = option.name  # argparse names it in "invalid X value"
    return convert


def add_arguments(parser: Any, names: Any = None) -> None:
    """Declare the options (all, or those in *names*) on an argparse parser or group."""
    for o in OPTIONS:
        if names is not None and o.name not in names:
            continue
        if o.kind == "switch":
            parser.add_argument(*o.flags, dest=o.name, action="store_true", help=o.help)
        elif o.kind == "off":
            parser.add_argument(*o.flags, dest=o.name, action="store_false", help=o.help)
        elif o.kind == "ro":
            on, off = o.flags
            group = parser.add_mutually_exclusive_group()
            ro_help, rw_help = o.help.split(" (", 1)
            group.add_argument(on, action="store_const", const=True, dest=o.name,
                               default=None, help=ro_help)
            group.add_argument(off, action="store_const", const=False, dest=o.name,
                               help=rw_help.removeprefix(f"{off}: ").rstrip(")"))
        elif o.kind == "list":
            parser.add_argument(*o.flags, dest=o.name, action="append", default=None,
                                metavar=o.metavar, help=o.help)
        else:
            parser.add_argument(*o.flags, dest=o.name, default=o.default, metavar=o.metavar,
                                choices=o.choices, help=o.help,
                                type=None if o.choices or o.parse is None else _cli_type(o))


def request(options: BuildOptions) -> dict[str, object]:
    """What a build was asked for, for :func:`smolfs.image.staleness.request`: the options that
    decide the image, paths made absolute, the default image named."""
    out: dict[str, object] = {}
    for o in OPTIONS:
        if not o.decides:
            continue
        value = getattr(options, o.name)
        if o.name == "image" and value is None:
            value = f"{options.service}-{options.arch}.img"
        if o.path and value is not None:
            value = os.path.abspath(os.fspath(value))
        elif o.kind == "list" and value is not None:
            value = [os.fspath(v) for v in ([value] if isinstance(value, str | os.PathLike)
                                            else value)]
        out[o.name] = value
    return out


def markdown_table() -> str:
    """The README's table of build options; † marks those ``startnb SERVICE`` has too."""
    rows = ["| option | `service.conf` | what it does |", "|---|---|---|"]
    for o in OPTIONS:
        flags = " / ".join(f"`{f}`" for f in o.flags) + (" †" if o.startnb else "")
        key = f"`{o.key}=`" if o.key else ""
        text = o.help.replace("%%", "%").replace("%(default)s", str(o.default))
        rows.append(f"| {flags} | {key} | {text} |")
    return "\n".join(rows) + "\n"
