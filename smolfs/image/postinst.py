"""Run a service's ``postinst/*.sh`` scripts at build time, on a staging tree.

The tree is written out only when there are scripts, and read back after them. Each
script runs with ``sh -e``, contained (:mod:`smolfs.guard`), within its time limit
(:data:`DEFAULT_TIMEOUT`), confined by bubblewrap when it works (:func:`script_argv`).
What a script sees: ``services/README.md``; the round trip: ``smolfs/image/README.md``."""

from __future__ import annotations

import functools
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from smolfs.errors import InputError, SmolError
from smolfs.fs.filedata import FileData
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.log import debug, info, step, warn
from smolfs.run import CommandTimeout, run

#: mtime given to every materialised entry, so any later write shows as a change
#: even on filesystems with coarse timestamps.
_SENTINEL_NS = 1_000_000_000

Signature = tuple[int, int, int, int, int]

#: Seconds each script may run unless the service or the command line says otherwise.
DEFAULT_TIMEOUT = 300.0

#: Host paths a confined script runs programs from, shown read-only when present (a
#: symlink, as /bin is on merged-/usr systems, is reproduced as the same symlink).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: What the dynamic loader and Debian's alternatives need from /etc, read-only.
ETC_PATHS = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")

#: Where a confined script finds the image tree (its working directory), itself, its home.
SANDBOX_ROOT = "/staging"
SANDBOX_SCRIPTS = "/postinst"
SANDBOX_HOME = "/home/build"
#: Paths of the sandbox itself, which a POSTINST_BIND may not cover.
_SANDBOX_OWN = ("/proc", "/dev", "/tmp", SANDBOX_ROOT, SANDBOX_SCRIPTS, SANDBOX_HOME)

#: (host path, symlink target or None): what :func:`host_view` found of the paths above.
HostView = tuple[tuple[str, "str | None"], ...]


class PostinstError(SmolError):
    """A postinst script failed."""

    def __init__(self, script: str, returncode: int, stderr_tail: str) -> None:
        lines = [ln for ln in stderr_tail.strip().splitlines() if ln.strip()][-3:]
        detail = f": {' | '.join(lines)}" if lines else " (no output on stderr)"
        super().__init__(f"postinst {script} failed with exit status {returncode}{detail}",
                         hint="the image was not written; fix the script and build again")
        self.script = script
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class PostinstTimeout(SmolError):
    """A postinst script ran past its time limit; it and all it started were killed."""

    def __init__(self, script: str, limit: float) -> None:
        super().__init__(
            f"postinst {script} did not finish within its time limit of {limit:g} s; "
            "it was killed with every process it started",
            hint="the image was not written; if the script needs longer, raise the limit "
                 "with --postinst-timeout SECONDS or POSTINST_TIMEOUT= in service.conf "
                 "(0: no limit)")
        self.script = script
        self.limit = limit


def _sig(st: os.stat_result) -> Signature:
    return (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# ---------------------------------------------------------------------------
# tree → staging directory


def materialise(tree: Tree, root: Path) -> dict[bytes, Signature]:
    """Write *tree* below the empty directory *root*; return each written path's signature."""
    base = os.fsencode(root)
    first: dict[int, bytes] = {}
    written: list[bytes] = []
    dirs: list[bytes] = []
    for path, node in tree.walk():
        if not path:
            continue
        host = base + b"/" + path
        if node.kind == Kind.DIR:
            os.mkdir(host)
            os.chmod(host, 0o755)  # whatever the umask
            dirs.append(path)
        elif node.kind == Kind.FILE:
            if id(node) in first:
                os.link(base + b"/" + first[id(node)], host)
            else:
                first[id(node)] = path
                _write_file(host, node)
        elif node.kind == Kind.SYMLINK:
            os.symlink(node.target, host)
            os.utime(host, ns=(_SENTINEL_NS, _SENTINEL_NS), follow_symlinks=False)
        else:
            continue  # devices, FIFOs and sockets stay in the tree only
        written.append(path)
    for path in reversed(dirs):
        os.utime(base + b"/" + path, ns=(_SENTINEL_NS, _SENTINEL_NS))
    return {p: _sig(os.lstat(base + b"/" + p)) for p in written}


def _write_file(host: bytes, node: Node) -> None:
    mode = 0o755 if node.mode & 0o111 else 0o644
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if node.data is not None and node.data.size:
            os.ftruncate(fd, node.data.size)
            for off, length in node.data.extents():
                node.data.copy_to(fd, off, off, length)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.utime(host, ns=(_SENTINEL_NS, _SENTINEL_NS))


# ---------------------------------------------------------------------------
# staging directory → tree


def read_back(tree: Tree, root: Path, recorded: Mapping[bytes, Signature]) -> None:
    """Bring *tree* in line with the staging directory *root*: what changed, went or stayed
    (see ``smolfs/image/README.md``)."""
    base = os.fsencode(root)
    links: dict[tuple[int, int], bytes] = {}

    def visit(dnode: Node, rel: bytes) -> None:
        host_dir = base + (b"/" + rel if rel else b"")
        names = set(os.listdir(host_dir))
        prefix = rel + b"/" if rel else b""
        for name in sorted(dnode.children):
            if name not in names and prefix + name in recorded:
                _drop(tree, prefix + name)
        for name in sorted(names):
            path = prefix + name
            host = base + b"/" + path
            st = os.lstat(host)
            old = dnode.children.get(name)
            rec = recorded.get(path)
            if old is not None and rec is not None:
                if stat.S_ISDIR(st.st_mode) and old.kind == Kind.DIR:
                    if stat.S_IMODE(st.st_mode) != stat.S_IMODE(rec[0]):
                        old.mode = stat.S_IMODE(st.st_mode)
                    visit(old, path)
                    continue
                if _sig(st) == rec:
                    continue
            if old is not None and old.kind == Kind.DIR and not stat.S_ISDIR(st.st_mode):
                _drop(tree, path)  # a directory replaced by something else
            mtime = int(st.st_mtime)
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                node = tree.add(path, Node(Kind.DIR, mode=perm, mtime=mtime))
                visit(node, path)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    tree.link(path, links[key])
                    continue
                links[key] = path
                data = FileData(os.fsdecode(host), 0, st.st_size)
                tree.add(path, Node(Kind.FILE, mode=perm, mtime=mtime, data=data))
            elif stat.S_ISLNK(st.st_mode):
                tree.add(path, Node(Kind.SYMLINK, mode=0o755, mtime=mtime,
                                    target=os.readlink(host)))
            elif stat.S_ISFIFO(st.st_mode):
                tree.add(path, Node(Kind.FIFO, mode=perm, mtime=mtime))
            # sockets made by a script are not image content: ignored

    visit(tree.root, b"")


def _drop(tree: Tree, path: bytes) -> None:
    """Remove *path* and keep the link counts of hard links below it right."""
    node = tree.get(path)
    if node is not None and node.kind == Kind.DIR:
        for sub in _below(node):
            if sub.kind != Kind.DIR and sub.nlink_extra:
                sub.nlink_extra -= 1
    tree.remove(path)


def _below(node: Node) -> Iterator[Node]:
    for child in node.children.values():
        yield child
        if child.kind == Kind.DIR:
            yield from _below(child)


# ---------------------------------------------------------------------------
# running the scripts

@functools.cache
def bwrap_problem() -> str | None:
    """None when bubblewrap can confine scripts here, else why it cannot (probed once)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    proc = run([exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
               check=False, timeout=20)
    if proc.returncode == 0:
        return None
    last = (proc.stderr or "").strip().splitlines()[-1:] or ["no message"]
    return f"bwrap cannot create a sandbox here ({last[0]})"


def host_view() -> HostView:
    """Which of :data:`SYSTEM_PATHS` and :data:`ETC_PATHS` this host has, and how."""
    found: list[tuple[str, str | None]] = []
    for path in (*SYSTEM_PATHS, *ETC_PATHS):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        found.append((path, os.readlink(path) if stat.S_ISLNK(st.st_mode) else None))
    return tuple(found)


def script_argv(script: Path, staging: Path, confined: bool, host: HostView = (),
                binds: Sequence[str] = ()) -> list[str]:
    """The command that runs *script* (pure: tested without running it).

    Confined, the sandbox holds exactly: *host* (system paths read-only, symlinks as
    symlinks), *binds* read-only at their own paths, the script read-only in
    :data:`SANDBOX_SCRIPTS`, *staging* read-write as :data:`SANDBOX_ROOT` (the working
    directory), an empty ``$HOME`` (:data:`SANDBOX_HOME`) and ``/tmp``, fresh ``/proc``
    and ``/dev``; ``/`` itself is read-only; no network, a pid namespace of its own."""
    if not confined:
        return ["sh", "-c", 'umask 022; exec sh -e "$0"', str(script)]
    inside = f"{SANDBOX_SCRIPTS}/{script.name}"
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", SANDBOX_HOME]
    for path, target in host:
        argv += ["--symlink", target, path] if target is not None else ["--ro-bind", path, path]
    for path in binds:
        argv += ["--ro-bind", path, path]
    return [*argv, "--ro-bind", str(script), inside, "--bind", str(staging), SANDBOX_ROOT,
            "--remount-ro", "/", "--chdir", SANDBOX_ROOT, "--setenv", "HOME", SANDBOX_HOME,
            "sh", "-c", 'umask 022; exec sh -e "$0"', inside]


def check_binds(binds: Sequence[str], home: str | None = None) -> list[str]:
    """The real paths of the directories a service asks to show its scripts.

    Refused: a path that is not an absolute existing directory, the root, the user's
    home or one of its parents, anything below a hidden directory of the home
    (``~/.ssh``, ``~/.config``...), and the sandbox's own paths (``/tmp``,
    :data:`SANDBOX_ROOT`...), symlinks resolved first."""
    home_real = os.path.realpath(home if home is not None else os.path.expanduser("~"))
    out: list[str] = []
    for path in binds:
        if not os.path.isabs(path):
            raise InputError(f"POSTINST_BIND: {path!r} is not an absolute path")
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            raise InputError(f"POSTINST_BIND: {path} is not a directory")
        if real == "/" or home_real == real or home_real.startswith(real.rstrip("/") + "/"):
            raise InputError(f"POSTINST_BIND: {path} would show the whole home directory "
                             "to the scripts", hint="name the one directory they need")
        if any(real == own or own.startswith(real + "/")
               or (own != "/tmp" and real.startswith(own + "/")) for own in _SANDBOX_OWN):
            raise InputError(f"POSTINST_BIND: {path} would hide a path of the sandbox itself "
                             f"({', '.join(_SANDBOX_OWN)})")
        rel = os.path.relpath(real, home_real)
        if not rel.startswith("..") and any(p.startswith(".") for p in rel.split(os.sep)):
            raise InputError(f"POSTINST_BIND: {path} is a hidden directory of the home "
                             "(keys and tokens live there)",
                             hint="copy what the scripts need to a directory of its own")
        out.append(real)
    return out


def run_scripts(tree: Tree, scripts: Sequence[Path], staging: Path,
                env: Mapping[str, str], timeout: float | None = DEFAULT_TIMEOUT,
                binds: Sequence[str] = ()) -> None:
    """Materialise *tree* in *staging*, run *scripts* there, read the result back.

    Unconfined, ``$HOME`` and ``$TMPDIR`` are new empty directories beside *staging*
    (``home``, ``tmp``); confined, see :func:`script_argv`. *timeout*: seconds per
    script, None or 0 for no limit.
    *binds*: host directories shown read-only to confined scripts (see
    :func:`check_binds`)."""
    if not scripts:
        return
    problem = bwrap_problem()
    if problem:
        warn(f"{problem}: postinst scripts run unconfined (they must use relative paths only)")
    binds = check_binds(binds)
    for path in binds if problem is None else ():
        info(f"postinst scripts see {path} (read-only, POSTINST_BIND)")
    staging.mkdir(mode=0o700)
    with step("stage the image tree for postinst scripts"):
        recorded = materialise(tree, staging)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        **env,
    }
    if problem:
        for var, name in (("HOME", "home"), ("TMPDIR", "tmp")):
            staging.with_name(name).mkdir(mode=0o700)
            full_env[var] = str(staging.with_name(name))
    view = host_view() if problem is None else ()
    for script in scripts:
        script = script.resolve()
        name = f"{script.parent.parent.name}/postinst/{script.name}"
        with step(f"postinst {script.name}"):
            argv = script_argv(script, staging, problem is None, view, binds)
            try:
                proc = run(argv, cwd=str(staging), env=full_env, check=False,
                           timeout=timeout or None, contain=True)
            except CommandTimeout:
                raise PostinstTimeout(name, timeout or 0) from None
            for line in (proc.stdout or "").splitlines():
                debug(f"{script.name}: {line}")
            if proc.returncode != 0:
                raise PostinstError(name, proc.returncode, proc.stderr or "")
    with step("read back the staging tree"):
        read_back(tree, staging, recorded)
