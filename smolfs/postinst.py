"""Run a service's ``postinst/*.sh`` scripts at build time, on a staging tree.

Only when a service has scripts is the image tree written out to a temporary
directory (regular files, directories and symlinks; device nodes, FIFOs and
sockets are left out, and stay in the image untouched). Each script runs with
``sh -e`` as the invoking user, with the staging root as its working directory
and a umask of 022. Afterwards the staging tree is read back:

- entries the scripts created or changed become new nodes owned root:wheel (0:0);
- entries they removed are removed from the image;
- entries they did not touch keep their original node (owners, modes, links).

Confinement: when bubblewrap (``bwrap``) is installed and can create namespaces,
each script runs with the host read-only, only the staging tree writable, a
private ``/tmp`` and no network. Without it the scripts run unconfined, after a
warning, and must use relative paths only (the old behaviour).

Scripts see these environment variables: ``PATH``, ``LC_ALL=C``, ``HOME`` (the
staging root), ``SERVICE``, ``ARCH``, ``FS`` and ``RO`` (``yes``/``no``).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from smolfs.errors import SmolError
from smolfs.log import debug, step, warn
from smolfs.run import run
from smolfs.tree import FileData, Kind, Node, Tree

#: mtime given to every materialised entry, so any later write shows as a change
#: even on filesystems with coarse timestamps.
_SENTINEL_NS = 1_000_000_000

Signature = tuple[int, int, int, int, int]


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
    """Bring *tree* in line with the staging directory *root* (see the module doc)."""
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


def script_argv(script: Path, staging: Path, confined: bool) -> list[str]:
    """The command that runs *script* (pure: tested without running it)."""
    inner = ["sh", "-c", 'umask 022; exec sh -e "$0"', str(script)]
    if not confined:
        return inner
    s, d = str(staging), str(script.parent)
    return [
        "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        "--tmpfs", "/tmp", "--ro-bind", d, d, "--bind", s, s,
        "--unshare-all", "--die-with-parent", "--new-session", "--chdir", s,
        *inner,
    ]


def run_scripts(tree: Tree, scripts: Sequence[Path], staging: Path,
                env: Mapping[str, str]) -> None:
    """Materialise *tree* in *staging*, run *scripts* there, read the result back."""
    if not scripts:
        return
    problem = bwrap_problem()
    if problem:
        warn(f"{problem}: postinst scripts run unconfined (they must use relative paths only)")
    staging.mkdir(mode=0o700)
    with step("stage the image tree for postinst scripts"):
        recorded = materialise(tree, staging)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "HOME": str(staging),
        **env,
    }
    for script in scripts:
        script = script.resolve()
        with step(f"postinst {script.name}"):
            argv = script_argv(script, staging, confined=problem is None)
            proc = run(argv, cwd=str(staging), env=full_env, check=False)
            for line in (proc.stdout or "").splitlines():
                debug(f"{script.name}: {line}")
            if proc.returncode != 0:
                name = f"{script.parent.parent.name}/postinst/{script.name}"
                raise PostinstError(name, proc.returncode, proc.stderr or "")
    with step("read back the staging tree"):
        read_back(tree, staging, recorded)
