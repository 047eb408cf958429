"""The image's users and groups: read from, and added to, ``/etc/master.passwd``,
``/etc/passwd`` and ``/etc/group`` in the tree (never the host's)."""

from __future__ import annotations

from dataclasses import dataclass

from smolfs.errors import InputError
from smolfs.fs.filedata import BytesData
from smolfs.fs.tree import Kind, Node, Tree

#: What every NetBSD image has, even one without the etc set.
BUILTIN_USERS = {"root": (0, 0)}
BUILTIN_GROUPS = {"wheel": 0}
FIRST_ID = 1000  # useradd(8)/groupadd(8)'s default range starts here


@dataclass
class User:
    name: str
    uid: int
    gid: int
    gecos: str = ""
    home: str = "/nonexistent"
    shell: str = "/sbin/nologin"
    password: str = "*"
    cls: str = ""


def _read(tree: Tree, path: str) -> list[str]:
    node = tree.get(path)
    if node is None or node.kind != Kind.FILE or node.data is None:
        return []
    return node.data.read(0, node.data.size).decode("utf-8", "replace").splitlines()


class Accounts:
    """Users and groups of the tree, plus those added; :meth:`write` puts them back."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.master = _read(tree, "etc/master.passwd")
        self.passwd = _read(tree, "etc/passwd")
        self.group = _read(tree, "etc/group")
        self.users: dict[str, User] = {}
        self.groups: dict[str, int] = dict(BUILTIN_GROUPS)
        lines = self.master or self.passwd
        for line in lines:
            f = line.split(":")
            if len(f) >= 7 and f[2].isdigit() and f[3].isdigit():
                if len(f) >= 10:
                    self.users[f[0]] = User(f[0], int(f[2]), int(f[3]), f[7], f[8], f[9],
                                            f[1], f[4])
                else:
                    self.users[f[0]] = User(f[0], int(f[2]), int(f[3]), f[4], f[5], f[6],
                                            f[1])
        for line in self.group:
            f = line.split(":")
            if len(f) >= 3 and f[2].isdigit():
                self.groups[f[0]] = int(f[2])
        for name, (uid, gid) in BUILTIN_USERS.items():
            self.users.setdefault(name, User(name, uid, gid, "Charlie &", "/root", "/bin/sh"))
        self.changed = False

    def uid(self, name: str) -> int | None:
        if name.isdigit():
            return int(name)
        u = self.users.get(name)
        return u.uid if u else None

    def gid(self, name: str) -> int | None:
        if name.isdigit():
            return int(name)
        return self.groups.get(name)

    def add_group(self, name: str, gid: int | None, who: str) -> None:
        if name in self.groups:
            return
        if gid is None:
            gid = _free(set(self.groups.values()))
        elif gid in self.groups.values():
            other = next(n for n, g in self.groups.items() if g == gid)
            raise InputError(f"{who}: group {name} wants gid {gid}, which {other} has")
        self.groups[name] = gid
        self.group.append(f"{name}:*:{gid}:")
        self.changed = True

    def add_user(self, user: User, group: str, who: str) -> None:
        if user.name in self.users:
            return
        gid = self.gid(group)
        if gid is None:
            raise InputError(f"{who}: user {user.name} is in group {group}, which neither "
                             "the image nor the package defines")
        user.gid = gid
        taken = {u.uid for u in self.users.values()}
        if user.uid < 0:
            user.uid = _free(taken)
        elif user.uid in taken:
            other = next(u.name for u in self.users.values() if u.uid == user.uid)
            raise InputError(f"{who}: user {user.name} wants uid {user.uid}, which {other} has")
        self.users[user.name] = user
        self.master.append(f"{user.name}:{user.password}:{user.uid}:{user.gid}:{user.cls}:0:0:"
                           f"{user.gecos}:{user.home}:{user.shell}")
        self.passwd.append(f"{user.name}:*:{user.uid}:{user.gid}:{user.gecos}:{user.home}:"
                           f"{user.shell}")
        self.changed = True

    def write(self, mtime: int) -> None:
        """Write the three files (and the databases libc reads) when something was added."""
        if not self.changed:
            return
        if not self.master:
            self.master = ["root:*:0:0::0:0:Charlie &:/root:/bin/sh"]
            self.passwd = ["root:*:0:0:Charlie &:/root:/bin/sh"]
        master = [ln for ln in self.master if ln]
        if not any(ln.startswith("root:") for ln in master):
            master.insert(0, "root:*:0:0::0:0:Charlie &:/root:/bin/sh")
        passwd = [ln for ln in self.passwd if ln] or [
            f"{f[0]}:*:{f[2]}:{f[3]}:{f[7]}:{f[8]}:{f[9]}" for f in (m.split(":") for m in master)]
        group = [ln for ln in self.group if ln]
        if not any(ln.startswith("wheel:") for ln in group):
            group.insert(0, "wheel:*:0:root")
        for path, lines, mode in (("etc/master.passwd", master, 0o600),
                                  ("etc/passwd", passwd, 0o644), ("etc/group", group, 0o644)):
            self.tree.mkdirs("etc", mtime=mtime)
            self.tree.add(path, Node(Kind.FILE, mode=mode, mtime=mtime,
                                     data=BytesData(("\n".join(lines) + "\n").encode())))
        from smolfs.pkg import pwdb

        pwdb.add_databases(self.tree, master, mtime)


def _free(taken: set[int]) -> int:
    i = FIRST_ID
    while i in taken:
        i += 1
    return i
