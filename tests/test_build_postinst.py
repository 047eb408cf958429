"""postinst scripts: staging, read-back into the tree, bubblewrap confinement, failures."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smolfs import postinst
from smolfs.postinst import PostinstError, bwrap_problem, run_scripts, script_argv
from smolfs.tree import BytesData, Kind, Node, Tree


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    bwrap_problem.cache_clear()
    yield
    bwrap_problem.cache_clear()


def sample_tree() -> Tree:
    t = Tree(mtime=100)
    t.mkdirs("rescue", mtime=100)
    crunch = Node(Kind.FILE, mode=0o555, uid=0, gid=0, mtime=100, data=BytesData(b"\x7fELF" * 9))
    t.add("rescue/sh", crunch)
    t.link("rescue/ls", "rescue/sh")
    t.link("rescue/cat", "rescue/sh")
    t.add("etc/passwd", Node(Kind.FILE, mode=0o644, uid=0, gid=0, mtime=100,
                             data=BytesData(b"root:*:0:0::/root:/bin/sh\n")))
    t.add("etc/motd", Node(Kind.FILE, mode=0o644, uid=7, gid=8, mtime=100,
                           data=BytesData(b"hello\n")))
    t.add("etc/old", Node(Kind.FILE, mode=0o600, uid=3, gid=3, mtime=100, data=BytesData(b"x")))
    t.add("bin/sh", Node(Kind.SYMLINK, mtime=100, target=b"/rescue/sh"))
    t.add("dev/console", Node(Kind.CHR, mode=0o600, mtime=100, rdev=(0, 0)))
    t.add("var/empty", Node(Kind.DIR, mode=0o755, uid=0, gid=0, mtime=100))
    return t


def script(tmp_path: Path, name: str, body: str) -> Path:
    d = tmp_path / "svc" / "postinst"
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(body)
    return p


def test_argv_confined_and_not(tmp_path: Path) -> None:
    s = tmp_path / "svc/postinst/10-a.sh"
    argv = script_argv(s, tmp_path / "root", confined=True)
    assert argv[0] == "bwrap" and argv[-4:] == ["sh", "-c", 'umask 022; exec sh -e "$0"', str(s)]
    i = argv.index("--tmpfs")
    # the staging and script binds come after the private /tmp, or it would hide them
    assert argv.index("--bind") > i and argv[argv.index("--bind") + 1] == str(tmp_path / "root")
    assert {"--unshare-all", "--die-with-parent"} <= set(argv)
    assert argv[argv.index("--ro-bind") + 1: argv.index("--ro-bind") + 3] == ["/", "/"]
    assert script_argv(s, tmp_path, confined=False) == argv[-4:]


def _check_read_back(tree: Tree) -> None:
    # created by the script: root:wheel, content from the staging tree
    www = tree.get("var/www/index.html")
    assert www is not None and (www.uid, www.gid) == (0, 0)
    assert www.data is not None and www.data.read(0, 100) == b"hello rescue\n"
    assert www.mode == 0o644
    d = tree.get("var/www")
    assert d is not None and d.kind == Kind.DIR and d.mode == 0o755
    # changed: new node, root:wheel
    motd = tree.get("etc/motd")
    assert motd is not None and (motd.uid, motd.gid) == (0, 0)
    assert motd.data is not None and motd.data.read(0, 100) == b"hello\nmore\n"
    # removed
    assert tree.get("etc/old") is None
    # untouched: original nodes, owners and hard links kept
    assert tree.get("etc/passwd").mtime == 100  # type: ignore[union-attr]
    sh = tree.get("rescue/sh")
    assert sh is tree.get("rescue/ls") is tree.get("rescue/cat") and tree.nlink(sh) == 3  # type: ignore[arg-type]
    assert sh.mode == 0o555  # type: ignore[union-attr]
    # devices never staged, still there
    assert tree.get("dev/console").rdev == (0, 0)  # type: ignore[union-attr]
    # new hard link and symlink
    a, b = tree.get("var/www/a"), tree.get("var/www/b")
    assert a is b and a is not None and tree.nlink(a) == 2
    ln = tree.get("var/www/link")
    assert ln is not None and ln.kind == Kind.SYMLINK and ln.target == b"index.html"
    # the symlink to /rescue/sh was staged as a symlink, not followed
    assert tree.get("bin/sh").target == b"/rescue/sh"  # type: ignore[union-attr]


BODY = """\
mkdir -p var/www
echo "hello $SERVICE" > var/www/index.html
echo more >> etc/motd
rm etc/old
echo x > var/www/a
ln var/www/a var/www/b
ln -s index.html var/www/link
test "$(pwd)" = "$HOME"
test -h bin/sh
test ! -e dev/console
"""


def test_read_back_confined(tmp_path: Path) -> None:
    if bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    tree = sample_tree()
    run_scripts(tree, [script(tmp_path, "10-a.sh", BODY)], tmp_path / "root",
                {"SERVICE": "rescue"})
    _check_read_back(tree)


def path_without_bwrap(tmp_path: Path) -> str:
    """A PATH holding the usual tools but no bwrap: a host without bubblewrap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "mkdir", "rm", "ln", "cat", "echo", "test", "pwd", "chmod", "touch"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_read_back_without_bwrap_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", path_without_bwrap(tmp_path))
    tree = sample_tree()
    run_scripts(tree, [script(tmp_path, "10-a.sh", BODY)], tmp_path / "root",
                {"SERVICE": "rescue"})
    _check_read_back(tree)
    err = capsys.readouterr().err
    assert "warning: bubblewrap (bwrap) is not installed: postinst scripts run unconfined" in err


def test_write_outside_staging_fails_when_confined(tmp_path: Path) -> None:
    if bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    # outside /tmp (the sandbox has a private /tmp): the host's own file system
    outside = Path(tempfile.mkdtemp(prefix="smolfs-escape-", dir="/var/tmp"))
    os.chmod(outside, 0o777)
    s = script(tmp_path, "20-escape.sh", f"echo ok > etc/motd\necho pwned > {outside}/x\n")
    with pytest.raises(PostinstError) as exc:
        run_scripts(sample_tree(), [s], tmp_path / "root", {})
    msg = exc.value.message
    assert msg.startswith("postinst svc/postinst/20-escape.sh failed with exit status ")
    assert "Read-only file system" in msg or "Permission denied" in msg
    assert exc.value.returncode != 0
    assert not (outside / "x").exists()
    shutil.rmtree(outside)


def test_no_network_when_confined(tmp_path: Path) -> None:
    if bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    # only a loopback interface (and it is down) inside the sandbox
    s = script(tmp_path, "10-net.sh", "cat /proc/net/dev > net.txt\n")
    tree = sample_tree()
    run_scripts(tree, [s], tmp_path / "root", {})
    lines = tree.get("net.txt").data.read(0, 4096).splitlines()[2:]  # type: ignore[union-attr]
    assert [ln.split(b":")[0].strip() for ln in lines] == [b"lo"]


def test_failure_names_script_status_and_stderr(tmp_path: Path) -> None:
    scripts = [script(tmp_path, "10-ok.sh", "touch ran-10\n"),
               script(tmp_path, "20-bad.sh", "echo one >&2\necho two >&2\nexit 3\n"),
               script(tmp_path, "30-never.sh", "touch ran-30\n")]
    with pytest.raises(PostinstError) as exc:
        run_scripts(sample_tree(), scripts, tmp_path / "root", {})
    assert exc.value.message == (
        "postinst svc/postinst/20-bad.sh failed with exit status 3: one | two")
    assert (tmp_path / "root" / "ran-10").exists() and not (tmp_path / "root" / "ran-30").exists()


def test_scripts_run_in_name_order_with_sh_e(tmp_path: Path) -> None:
    scripts = [script(tmp_path, "10-a.sh", "echo a >> order\n"),
               script(tmp_path, "20-b.sh", "false\necho never >> order\n")]
    with pytest.raises(PostinstError, match=r"20-b\.sh failed with exit status 1"):
        run_scripts(Tree(), scripts, tmp_path / "root", {})
    assert (tmp_path / "root" / "order").read_text() == "a\n"


def test_umask_and_chmod(tmp_path: Path) -> None:
    s = script(tmp_path, "10.sh", "echo x > f\nmkdir d\nchmod 700 var/empty\n"
                                  "chmod 755 etc/passwd\n")
    tree = sample_tree()
    old = os.umask(0o077)
    try:
        run_scripts(tree, [s], tmp_path / "root", {})
    finally:
        os.umask(old)
    assert tree.get("f").mode == 0o644 and tree.get("d").mode == 0o755  # type: ignore[union-attr]
    assert tree.get("var/empty").mode == 0o700  # type: ignore[union-attr]
    p = tree.get("etc/passwd")
    assert p is not None and p.mode == 0o755 and (p.uid, p.gid) == (0, 0)


def test_directory_replaced_by_file_keeps_link_counts(tmp_path: Path) -> None:
    tree = sample_tree()
    tree.link("var/empty/sh", "rescue/sh")
    s = script(tmp_path, "10.sh", "rm -r var/empty\necho x > var/empty\n")
    run_scripts(tree, [s], tmp_path / "root", {})
    assert tree.get("var/empty").kind == Kind.FILE  # type: ignore[union-attr]
    assert tree.nlink(tree.get("rescue/sh")) == 3  # type: ignore[arg-type]


def test_no_scripts_no_staging(tmp_path: Path) -> None:
    run_scripts(sample_tree(), [], tmp_path / "root", {})
    assert not (tmp_path / "root").exists()


def test_bwrap_probe_reports_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert bwrap_problem() == ("bwrap cannot create a sandbox here "
                               "(bwrap: No permissions to create new namespace)")
    assert postinst.bwrap_problem() is bwrap_problem()  # cached
