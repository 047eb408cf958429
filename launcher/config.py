"""What the user asked for: one frozen :class:`LaunchConfig`, and the parsers of its values.

Pure: nothing here touches the host. ``-p``, ``--ready`` and ``--console`` values are parsed
into small immutable records so :func:`launcher.qemu.qemu_argv` never sees a raw string.
Records are ``typing.NamedTuple`` rather than dataclasses: this module is on the path to
QEMU's exec, and importing ``dataclasses`` alone costs about 10 ms there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

from smolfs.errors import UsageError

DEFAULT_MEMORY_MB = 256
DEFAULT_READY = "console:SERVICE READY"
ACCELS = ("auto", "kvm", "hvf", "nvmm", "tcg")
MACHINES = ("auto", "microvm", "pc", "virt")
#: The root device when none is given: the first virtio disk under each port's release
#: kernel (GENERIC64 wires ld0-ld3 to sdmmc, so virtio's first disk is ld4 on aarch64).
DEFAULT_ROOT = {"amd64": "ld0a", "i386": "ld0a", "aarch64": "ld4a"}


class PortForward(NamedTuple):
    """One ``-p [tcp|udp:][HOSTIP:]HPORT:GPORT``: host port forwarded to a guest port."""

    proto: str
    host_ip: str
    host_port: int
    guest_port: int

    def hostfwd(self) -> str:
        """The value of QEMU's ``hostfwd=`` for this forward."""
        return f"{self.proto}:{self.host_ip}:{self.host_port}-:{self.guest_port}"

    def __str__(self) -> str:
        return f"{self.proto}:{self.host_ip}:{self.host_port}->{self.guest_port}"


def _port(text: str, spec: str, flag: str = "-p") -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"bad port {text!r} in {flag} {spec!r}: a number from 1 to 65535",
                         hint="example: -p 8080:80 or -p udp:0.0.0.0:5353:53")
    return int(text)


def parse_port(spec: str) -> PortForward:
    """Parse ``[tcp|udp:][HOSTIP:]HPORT:GPORT``; the host address defaults to 127.0.0.1."""
    rest = spec
    proto = "tcp"
    head, sep, tail = rest.partition(":")
    if sep and head in ("tcp", "udp"):
        proto, rest = head, tail
    host_ip = "127.0.0.1"
    parts = rest.rsplit(":", 2)
    if len(parts) == 3:
        host_ip = parts[0].strip("[]")
        import ipaddress

        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError as err:
            raise UsageError(f"bad host address {host_ip!r} in -p {spec!r}: an IPv4 address",
                             hint="example: -p 0.0.0.0:8080:80") from err
        parts = parts[1:]
    if len(parts) != 2:
        raise UsageError(f"bad port forward -p {spec!r}: expected "
                         "[tcp|udp:][HOSTIP:]HPORT:GPORT", hint="example: -p 8080:80")
    return PortForward(proto, host_ip, _port(parts[0], spec), _port(parts[1], spec))


class Ready(NamedTuple):
    """How readiness is judged: a console line, an HTTP answer or a TCP peer in the guest."""

    kind: str  # "console" | "http" | "tcp"
    pattern: str = ""  # console regex
    port: int = 0  # host port (forwarded) for http/tcp
    path: str = "/"  # http path

    def __str__(self) -> str:
        if self.kind == "console":
            return f"console:{self.pattern}"
        if self.kind == "http":
            return f"http:{self.port}{self.path}"
        return f"tcp:{self.port}"


def parse_ready(spec: str) -> Ready:
    """Parse ``console:REGEX`` | ``http:PORT[/PATH]`` | ``tcp:PORT``."""
    kind, sep, value = spec.partition(":")
    hint = "examples: --ready 'console:^SERVICE READY', --ready http:8080/health, --ready tcp:22"
    if not sep or kind not in ("console", "http", "tcp"):
        raise UsageError(f"bad --ready {spec!r}: expected console:REGEX, http:PORT[/PATH] "
                         "or tcp:PORT", hint=hint)
    if kind == "console":
        try:
            re.compile(value)
        except re.error as err:
            raise UsageError(f"bad regular expression in --ready {spec!r}: {err}",
                             hint=hint) from err
        return Ready("console", pattern=value)
    port, slash, path = value.partition("/")
    if kind == "tcp" and slash:
        raise UsageError(f"bad --ready {spec!r}: tcp takes a port only", hint=hint)
    return Ready(kind, port=_port(port, spec, "--ready"), path="/" + path)


class Console(NamedTuple):
    """Where the guest's serial console goes: ``stdio``, ``file`` (with path) or ``none``."""

    kind: str
    path: Path | None = None


def parse_console(spec: str) -> Console:
    if spec in ("stdio", "none"):
        return Console(spec)
    if spec.startswith("file:") and len(spec) > 5:
        return Console("file", Path(spec[5:]))
    raise UsageError(f"bad --console {spec!r}: expected stdio, file:PATH or none",
                     hint="example: --console file:serial.log")


class _LaunchFields(NamedTuple):
    kernel: Path
    image: Path | None = None
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = 1
    ports: tuple[PortForward, ...] = ()
    network: str = "user"  # "user" | "none" | "tap"
    tap: str | None = None
    append: tuple[str, ...] = ()
    root: str | None = None  # None: DEFAULT_ROOT of the kernel's architecture
    readonly: bool = False
    console: Console = Console("stdio")
    accel: str = "auto"
    machine: str = "auto"
    ready: Ready | None = None
    timeout: float | None = None
    detach: bool = False
    qemu_args: tuple[str, ...] = ()


class LaunchConfig(_LaunchFields):
    """Everything that decides the QEMU command line, validated and immutable."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> LaunchConfig:
        self = super().__new__(cls, *args, **kwargs)
        self._validate()
        return self

    def _replace(self, **changes: Any) -> LaunchConfig:
        """A copy with ``changes``, validated again."""
        return LaunchConfig(**{**self._asdict(), **changes})

    def _validate(self) -> None:
        if self.memory_mb < 16:
            raise UsageError(f"bad -m {self.memory_mb}: at least 16 MB",
                             hint="example: -m 256")
        if not 1 <= self.cpus <= 64:
            raise UsageError(f"bad -c {self.cpus}: from 1 to 64 CPUs")
        if self.accel not in ACCELS:
            raise UsageError(f"bad --accel {self.accel!r}: one of {', '.join(ACCELS)}")
        if self.machine not in MACHINES:
            raise UsageError(f"bad --machine {self.machine!r}: one of {', '.join(MACHINES)}")
        if self.network == "tap" and not self.tap:
            raise UsageError("--tap needs an interface name", hint="example: --tap tap0")
        if self.ports and self.network != "user":
            raise UsageError("-p forwards ports through QEMU's user network: "
                             "drop -N/--tap or drop -p")
        if self.ready and self.ready.kind != "console" and self.network != "user":
            raise UsageError(f"--ready {self.ready} needs a forwarded port: "
                             "it cannot work with -N or --tap")
        if self.ready and self.ready.kind != "console" and not any(
            p.proto == "tcp" and p.host_port == self.ready.port for p in self.ports
        ):
            raise UsageError(f"--ready {self.ready} probes host port {self.ready.port}, "
                             "which no -p forwards",
                             hint=f"add -p {self.ready.port}:GUESTPORT")
        seen: set[tuple[str, int]] = set()
        for p in self.ports:
            if (p.proto, p.host_port) in seen:
                raise UsageError(f"host port {p.proto}:{p.host_port} is forwarded twice")
            seen.add((p.proto, p.host_port))
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"bad --timeout {self.timeout:g}: a positive number of seconds")

    def kernel_args(self, arch: str = "amd64") -> str:
        """The kernel command line: console, root device, then the user's extra words.

        NetBSD/evbarm reads the device tree's ``/chosen/bootargs`` (``root=``, boot flags)
        and takes its console from ``/chosen/stdout-path``, which QEMU's ``virt`` points at
        the PL011: no ``console=`` word there."""
        root = self.root or DEFAULT_ROOT.get(arch, "ld0a")
        console = [] if arch == "aarch64" else ["console=com"]
        words = [*console, f"root={root}", *self.append]
        return " ".join(w for w in words if w)
