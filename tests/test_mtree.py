"""mtree specs applied the way makefs -F applies them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smolfs.errors import InputError
from smolfs.fs.filedata import BytesData
from smolfs.fs.mtree import apply_spec, parse_device, parse_mode, parse_spec, unvis
from smolfs.fs.tree import Kind, Node, Tree

FULL = """\
# devices and owners for a rescue image
/set type=file uname=root gname=wheel mode=0444
.               type=dir mode=0755
./dev           type=dir mode=0755
./dev/console   type=char mode=0600 device=netbsd,0,0
./dev/null      type=char mode=0666 device=netbsd,2,2
./dev/ld0a      type=block mode=0640 gname=operator device=netbsd,19,0
./dev/initctl   type=fifo mode=0600
./bin           type=dir mode=0755
./bin/sh        type=link link=/rescue/sh
./etc           type=dir mode=0755
./etc/rc        mode=0644 time=1700000000.000000000
./etc/master.passwd mode=0600
/unset all
./tmp           type=dir mode=01777 uid=0 gid=0
"""

HIER = """\
/set type=file uname=root gname=wheel mode=0444
.               type=dir mode=0755
    dev         type=dir mode=0755
        console type=char mode=0600 device=netbsd,0,0
        null    type=char mode=0666 device=netbsd,2,2
        ld0a    type=block mode=0640 gname=operator device=netbsd,19,0
        initctl type=fifo mode=0600
    ..
    bin         type=dir mode=0755
        sh      type=link link=/rescue/sh
    ..
    etc         type=dir mode=0755
        rc      mode=0644 time=1700000000.000000000
        master.passwd \\
                mode=0600
    ..
/unset all
    tmp         type=dir mode=01777 uid=0 gid=0
    ..
..
"""


def base_tree() -> Tree:
    tree = Tree()
    for path in ("etc/rc", "etc/master.passwd"):
        tree.add(path, Node(Kind.FILE, mode=0o777, uid=1000, gid=1000, mtime=5,
                            data=BytesData(b"x")))
    return tree


def summary(tree: Tree) -> list[tuple]:
    return [(p, n.kind, n.mode, n.uid, n.gid, n.mtime, n.rdev, n.target)
            for p, n in tree.walk()]


def test_full_path_format():
    tree = base_tree()
    assert apply_spec(tree, FULL) == 12
    assert tree.get("dev/console").kind == Kind.CHR
    assert tree.get("dev/null").rdev == (2, 2)
    ld = tree.get("dev/ld0a")
    assert (ld.kind, ld.rdev, ld.mode, ld.gid) == (Kind.BLK, (19, 0), 0o640, 5)
    assert tree.get("dev/initctl").kind == Kind.FIFO
    assert tree.get("bin/sh").target == b"/rescue/sh"
    rc = tree.get("etc/rc")
    assert (rc.mode, rc.uid, rc.gid, rc.mtime) == (0o644, 0, 0, 1_700_000_000)
    assert tree.get("etc/master.passwd").mode == 0o600
    assert tree.get("tmp").mode == 0o1777


def test_hierarchical_format_means_the_same(tmp_path):
    full, hier = base_tree(), base_tree()
    apply_spec(full, FULL)
    spec = tmp_path / "rescue.spec"
    spec.write_text(HIER)
    apply_spec(hier, spec)
    assert summary(hier) == summary(full)


def test_hierarchical_paths():
    entries = parse_spec(HIER)
    assert [e.path for e in entries][:4] == [b"", b"dev", b"dev/console", b"dev/null"]
    assert entries[-1].path == b"tmp"
    assert "uname" not in entries[-1].keywords  # /unset all


def test_missing_file_is_an_error_unless_optional():
    with pytest.raises(InputError) as err:
        apply_spec(base_tree(), "/set type=file\n./etc/ttys mode=0644\n")
    assert "./etc/ttys" in err.value.message and "spec:2" in err.value.message
    assert "optional" in err.value.hint
    tree = base_tree()
    apply_spec(tree, "./etc/ttys type=file mode=0644 optional\n")
    assert tree.get("etc/ttys") is None


def test_type_mismatch_and_incomplete_entries():
    with pytest.raises(InputError, match="type mismatch"):
        apply_spec(base_tree(), "./etc/rc type=dir\n")
    with pytest.raises(InputError, match="device=netbsd"):
        apply_spec(base_tree(), "./dev/null type=char\n")
    with pytest.raises(InputError, match="link=TARGET"):
        apply_spec(base_tree(), "./bin/sh type=link\n")
    with pytest.raises(InputError, match="unknown keyword 'colour'"):
        apply_spec(base_tree(), "./etc/rc colour=red\n")
    with pytest.raises(InputError, match="unknown type 'door'"):
        apply_spec(base_tree(), "./etc/rc type=door\n")
    with pytest.raises(InputError, match="invalid mode=0999"):
        apply_spec(base_tree(), "./etc/rc mode=0999\n")


def test_names_and_groups():
    tree = base_tree()
    apply_spec(tree, "./etc/rc uname=_httpd gname=_httpd\n./etc/master.passwd uname=operator "
                     "gname=kmem\n")
    assert (tree.get("etc/rc").uid, tree.get("etc/rc").gid) == (24, 24)
    assert (tree.get("etc/master.passwd").uid, tree.get("etc/master.passwd").gid) == (2, 2)
    with pytest.raises(InputError, match="unknown user 'alice'") as err:
        apply_spec(base_tree(), "./etc/rc uname=alice\n")
    assert "uid=" in err.value.hint
    with pytest.raises(InputError, match="unknown group 'staffers'"):
        apply_spec(base_tree(), "./etc/rc gname=staffers\n")


def test_escapes_continuations_comments_flags(tmp_path):
    (tmp_path / "motd").write_text("welcome\n")
    tree = base_tree()
    spec = ("# comment\n"
            "./etc/my\\040file type=file mode=0644 \\\n"
            f"    contents={tmp_path / 'motd'}\n"
            "  # indented comment\n"
            "./etc/rc flags=schg,nodump mode=u=rwx,go=rx\n")
    apply_spec(tree, spec)
    motd = tree.get(b"etc/my file")
    assert motd.kind == Kind.FILE and motd.data.read(0, 100) == b"welcome\n"
    assert tree.get("etc/rc").flags == 0x20001
    assert tree.get("etc/rc").mode == 0o755
    assert unvis("a\\040b\\\\c\\tz") == b"a b\\c\tz"


@pytest.mark.parametrize(("text", "current", "want"), [
    ("0755", 0, 0o755), ("4555", 0, 0o4555), ("u=rwx,go=rx", 0, 0o755), ("a+x", 0o644, 0o755),
    ("go-w", 0o666, 0o644), ("u+s", 0o755, 0o4755), ("+t", 0o777, 0o1777), ("g=u", 0o700, 0o770),
])
def test_modes(text, current, want):
    assert parse_mode(text, current) == want


def test_devices():
    assert parse_device("netbsd,19,0") == (19, 0)
    assert parse_device("2,12") == (2, 12)
    assert parse_device("4864") == (19, 0)  # NetBSD makedev(19, 0)
    assert parse_device(str((168 << 8) | 0x30 | (0x1 << 20))) == (168, 0x130)


def test_created_entries_get_a_reproducible_time(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    tree = base_tree()
    tree.get("etc/rc").mtime = 1_600_000_000
    apply_spec(tree, "./dev/null type=char device=2,2\n")
    assert tree.get("dev/null").mtime == 1_600_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    apply_spec(tree, "./dev/zero type=char device=2,12\n")
    assert tree.get("dev/zero").mtime == 1234


# ---------------------------------------------------------------------------
# Property: both layouts of the same spec build the same tree


def vis(name: bytes) -> str:
    """Encode a name the way mtree writes it: octal escapes for anything unusual."""
    return "".join(chr(b) if 0x21 <= b < 0x7F and chr(b) not in "\\#=" else f"\\{b:03o}"
                   for b in name)


names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b".."))
leaf = st.tuples(st.sampled_from(["link", "char", "fifo", "block"]),
                 st.integers(0, 0o7777), st.integers(0, 70000), st.integers(0, 255))
trees = st.recursive(st.dictionaries(names, leaf, max_size=4),
                     lambda kids: st.dictionaries(names, kids, max_size=4), max_leaves=25)


def spec_lines(tree: dict, parts: list[bytes], full: bool) -> list[str]:
    out = []
    for name, value in sorted(tree.items()):
        path = "./" + "/".join(vis(p) for p in [*parts, name]) if full else vis(name)
        if isinstance(value, dict):
            out.append(f"{path} type=dir mode=0750 uid=3")
            out += spec_lines(value, [*parts, name], full)
            if not full:
                out.append("..")
        else:
            kind, mode, uid, minor = value
            extra = {"link": f"link={vis(name)}", "char": f"device=netbsd,2,{minor}",
                     "block": f"device={minor}", "fifo": ""}[kind]
            out.append(f"{path} type={kind} mode={mode:o} uid={uid} {extra}")
    return out


@settings(max_examples=40, deadline=None)
@given(trees)
def test_full_and_hierarchical_layouts_agree(tree):
    full, hier = Tree(), Tree()
    apply_spec(full, "\n".join(["# full", *spec_lines(tree, [], True)]) + "\n")
    apply_spec(hier, "\n".join([". type=dir", *spec_lines(tree, [], False), ".."]) + "\n")
    assert summary(full) == summary(hier)
    assert len(list(full.walk())) == 1 + sum(1 for _ in _leaves_and_dirs(tree))


def _leaves_and_dirs(tree: dict):
    for value in tree.values():
        yield value
        if isinstance(value, dict):
            yield from _leaves_and_dirs(value)
