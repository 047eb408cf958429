"""Where NetBSD publishes what: release and branch spellings, the tree of a release on a
mirror, set and kernel file names, and the checksum lists published beside them.

Pure functions of names and text: nothing here touches the network or the cache (that is
:mod:`smolfs.sets.fetch`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from smolfs.arch import Arch
from smolfs.errors import FetchError, UsageError

DEFAULT_RELEASE = "10.1"
#: ``--arch`` values; ``aarch64`` is NetBSD's ``evbarm-aarch64`` port (smolfs.arch.Arch).
ARCHES = ("amd64", "i386", "aarch64")
#: Set names NetBSD publishes for amd64/i386/evbarm-aarch64 (a release's SHA512 list is the
#: authority).
KNOWN_SETS = (
    "base", "comp", "debug", "etc", "games", "gpufw", "man", "manhtml", "misc", "modules",
    "rescue", "tests", "text", "xbase", "xcomp", "xdebug", "xetc", "xfont", "xserver",
    "kern-GENERIC", "kern-GENERIC64",
)  # fmt: skip
#: Suggested when the mirror cannot list its releases.
KNOWN_RELEASES = ("10.1", "10.0", "9.4", "9.3", "9.2", "8.3", "8.2")
DAILY_SPELLINGS = (
    "'current' (daily build of NetBSD-current) or 'netbsd-10' (daily build of a branch)"
)
SET_EXTENSIONS = (".tar.xz", ".tgz")

RELEASE_RE = re.compile(r"(\d+)\.\d+(\.\d+)?(_[A-Za-z0-9]+)?")
BRANCH_RE = re.compile(r"netbsd-(\d+)(-\d+)?")


@dataclass(frozen=True)
class Release:
    """A NetBSD release (``10.1``) or the latest daily build of a branch (``HEAD``)."""

    name: str
    daily: bool
    major: int | None  # None for HEAD: newer than any release

    @classmethod
    def parse(cls, spec: str) -> Release:
        s = spec.strip()
        s = re.sub(r"^netbsd-(?=\d+\.)", "", s, flags=re.IGNORECASE)  # NetBSD-10.1 → 10.1
        if s.lower() in ("current", "head", "-current"):
            return cls("HEAD", True, None)
        if m := BRANCH_RE.fullmatch(s.lower()):
            return cls(s.lower(), True, int(m.group(1)))
        if m := RELEASE_RE.fullmatch(s):
            return cls(s, False, int(m.group(1)))
        hint = f"give a version like {DEFAULT_RELEASE} or 9.4, or {DAILY_SPELLINGS}"
        if s.isdigit():
            hint = f"give the full version, e.g. {s}.0 or {s}.1; or {DAILY_SPELLINGS}"
        raise UsageError(f"unknown NetBSD release {spec!r}", hint=hint)

    def tree(self, arch: str) -> str:
        """The release's directory for ``arch``, relative to the mirror root (the port's
        name: ``aarch64`` is ``evbarm-aarch64``)."""
        port = Arch.parse(arch).port
        if self.daily:
            return f"pub/NetBSD-daily/{self.name}/latest/{port}"
        return f"pub/NetBSD/NetBSD-{self.name}/{port}"

    def set_extension(self, arch: str) -> str:
        """``.tar.xz`` on amd64 and evbarm-aarch64 from NetBSD 10 on, ``.tgz`` before and
        on i386."""
        return Arch.parse(arch).set_extension(self.major)

    def __str__(self) -> str:
        return f"NetBSD-{self.name} (daily)" if self.daily else f"NetBSD {self.name}"




def check_arch(arch: str) -> str:
    """The canonical name of ``arch`` (``evbarm-aarch64`` and ``arm64`` → ``aarch64``)."""
    try:
        return Arch.parse(arch).value
    except UsageError:
        raise UsageError(
            f"unknown architecture {arch!r}", hint=f"choose one of: {', '.join(ARCHES)}"
        ) from None


def set_filename(set: str, release: str = DEFAULT_RELEASE, arch: str = "amd64") -> str:
    """The file name NetBSD gives a set: ``set_filename("base", "10.1", "amd64")`` →
    ``base.tar.xz``; ``"9.3"`` or ``"i386"`` → ``base.tgz``."""
    return set_name(set) + Release.parse(release).set_extension(check_arch(arch))


def set_name(spec: str) -> str:
    """``base``, ``base.tgz`` and ``base.tar.xz`` all name the set ``base``."""
    for ext in SET_EXTENSIONS:
        spec = spec.removesuffix(ext)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", spec):
        raise UsageError(f"invalid set name {spec!r}", hint=f"known sets: {', '.join(KNOWN_SETS)}")
    return spec


def kernel_filename(spec: str, arch: str = "amd64") -> str:
    """``GENERIC``, ``netbsd-GENERIC`` and ``netbsd-GENERIC.gz`` → ``netbsd-GENERIC.gz``;
    on aarch64 the bootable image: ``GENERIC64`` → ``netbsd-GENERIC64.img.gz`` (a name
    ending in ``.gz`` is taken as given: ``netbsd-GENERIC64.gz`` is the ELF)."""
    if spec.endswith(".gz"):
        name = spec.removesuffix(".gz")
        explicit = True
    else:
        name, explicit = spec, False
    if not name.startswith("netbsd"):
        name = f"netbsd-{name}"
    if not re.fullmatch(r"netbsd(-[A-Za-z0-9_.+-]+)?", name):
        raise UsageError(f"invalid kernel name {spec!r}", hint="e.g. --kernel GENERIC")
    if explicit:
        return name + ".gz"
    return Arch.parse(arch).kernel_files(name.removeprefix("netbsd-"))[0]


def parse_checksums(text: str, source: str, algo: str = "sha512") -> dict[str, str]:
    """``{file name: lowercase hex digest}`` from a checksum list in BSD format
    (``SHA512 (base.tar.xz) = <hex>``, as NetBSD publishes) or GNU format (``<hex>  name``)."""
    n = hashlib.new(algo).digest_size * 2
    bsd = re.compile(rf"{algo.upper()} \((?P<name>[^)]+)\) = (?P<hex>[0-9a-fA-F]{{{n}}})")
    gnu = re.compile(rf"(?P<hex>[0-9a-fA-F]{{{n}}}) [ *](?P<name>\S.*)")
    digests = {}
    for line in text.splitlines():
        line = line.strip()
        if m := bsd.fullmatch(line) or gnu.fullmatch(line):
            digests[m.group("name").strip()] = m.group("hex").lower()
    if not digests:
        raise FetchError(
            f"{source} is not a {algo.upper()} list "
            f"(expected lines like '{algo.upper()} (base.tar.xz) = ...')",
            hint="check that the mirror serves a NetBSD release tree",
        )
    return digests


def parse_sha512(text: str, source: str) -> dict[str, str]:
    return parse_checksums(text, source, "sha512")


def digest_for(name: str, text: str, source: str, algo: str) -> str | None:
    """The digest of ``name`` in a checksum list; a file of one digest (``NAME.sha256``
    holding just the hex, or a line for another spelling of the name) counts for ``name``."""
    bare = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]+", bare) and len(bare) == hashlib.new(algo).digest_size * 2:
        return bare
    try:
        digests = parse_checksums(text, source, algo)
    except FetchError:
        return None
    if name in digests:
        return digests[name]
    if source != "SHA512" and len(digests) == 1:
        return next(iter(digests.values()))
    return None


def published_sets(sums: dict[str, str]) -> list[str]:
    return sorted(f.removesuffix(e) for f in sums for e in SET_EXTENSIONS if f.endswith(e))


def published_kernels(sums: dict[str, str]) -> list[str]:
    return sorted({
        f.removeprefix("netbsd-").removesuffix(".gz").removesuffix(".img")
        for f in sums
        if f.startswith("netbsd-") and not f.endswith((".symbols.gz", ".symbols"))
    })


def version_key(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", release))
