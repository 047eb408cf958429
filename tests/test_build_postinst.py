"""postinst scripts: staging, read-back into the tree, bubblewrap confinement, failures,
time limits, and the processes a script starts (none outlives it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, live_processes
from smolfs.errors import InputError
from smolfs.fs.filedata import BytesData
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.image import postinst
from smolfs.image.postinst import (
    PostinstError,
    PostinstTimeout,
    bwrap_problem,
    check_binds,
    host_view,
    run_scripts,
    script_argv,
)


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


def test_argv_confined_shows_only_the_view(tmp_path: Path) -> None:
    s = tmp_path / "svc/postinst/10-a.sh"
    root = tmp_path / "root"
    host = (("/usr", None), ("/bin", "usr/bin"), ("/etc/ld.so.cache", None))
    argv = script_argv(s, root, True, host, ["/opt/www"])
    assert argv == [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/home/build",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
        "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind", "/opt/www", "/opt/www",
        "--ro-bind", str(s), "/postinst/10-a.sh", "--bind", str(root), "/staging",
        "--remount-ro", "/", "--chdir", "/staging", "--setenv", "HOME", "/home/build",
        "sh", "-c", 'umask 022; exec sh -e "$0"', "/postinst/10-a.sh"]
    assert script_argv(s, root, confined=False) == [
        "sh", "-c", 'umask 022; exec sh -e "$0"', str(s)]


def test_host_view_reproduces_symlinks() -> None:
    view = dict(host_view())
    assert view["/usr"] is None
    for path in ("/bin", "/lib", "/sbin"):
        if os.path.islink(path):
            assert view[path] == os.readlink(path)
    assert "/etc/ld.so.cache" in view and "/home" not in view and "/etc" not in view


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
test -z "$(ls -A "$HOME")"
touch "$HOME/cache"
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
    for tool in ("sh", "mkdir", "rm", "ln", "cat", "echo", "test", "pwd", "chmod", "touch",
                 "ls", "sleep", "setsid"):
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
    assert "Directory nonexistent" in msg  # /var is not in the sandbox at all
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


def test_root_and_system_directories_are_read_only_when_confined(tmp_path: Path) -> None:
    if bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    for i, target in enumerate(("/x", "/usr/x", "/etc/x")):
        s = script(tmp_path, f"{i}.sh", f"echo x > {target}\n")
        (tmp_path / f"root{i}").mkdir()
        with pytest.raises(PostinstError, match=r"Read-only file system|Directory nonexistent"):
            run_scripts(sample_tree(), [s], tmp_path / f"root{i}" / "root", {})
        assert not Path(target).exists()


# ---------------------------------------------------------------------------
# what a confined script can see


def test_confined_script_sees_no_secret_of_the_user(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's script cannot copy the user's keys into the image: neither the home
    directory nor any other directory of the user exists in the sandbox."""
    if bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    # outside /tmp (private in the sandbox in any case): where homes and data really are
    home = Path(tempfile.mkdtemp(prefix="smolfs-fakehome-", dir="/var/tmp"))
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/id_rsa").write_text("PRIVATE KEY\n")
    (home / ".config").mkdir()
    (home / ".config/token").write_text("TOKEN\n")
    other = Path(tempfile.mkdtemp(prefix="smolfs-userdata-", dir="/var/tmp"))
    (other / "notes.txt").write_text("SECRET NOTES\n")
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc/x.txt").write_text("beside the script\n")
    body = f"""\
for f in {home}/.ssh/id_rsa {home}/.config/token {other}/notes.txt {tmp_path}/svc/x.txt; do
  if test -e "$f"; then echo "$f" >> seen; cat "$f" >> stolen 2>/dev/null || true; fi
done
ls -A "$HOME" > home.txt
ls -A /tmp > tmp.txt
ls / > root.txt
echo "$HOME" > homevar.txt
"""
    (tmp_path / "w").mkdir()
    try:
        tree = sample_tree()
        run_scripts(tree, [script(tmp_path, "10-steal.sh", body)], tmp_path / "w" / "root", {})
    finally:
        shutil.rmtree(other)
        shutil.rmtree(home)

    def text(path: str) -> bytes:
        node = tree.get(path)
        assert node is not None and node.data is not None, path
        return node.data.read(0, 1 << 16)

    assert tree.get("seen") is None and tree.get("stolen") is None
    assert text("home.txt") == b"" and text("tmp.txt") == b""
    top = set(text("root.txt").split())
    assert top <= {b"usr", b"bin", b"sbin", b"lib", b"lib32", b"lib64", b"libx32", b"etc",
                   b"proc", b"dev", b"tmp", b"home", b"staging", b"postinst"}, top
    assert text("homevar.txt") == b"/home/build\n"


def test_postinst_bind_shows_a_named_directory_read_only(tmp_path: Path) -> None:
    if bwrap_problem():
        pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    extra = Path(tempfile.mkdtemp(prefix="smolfs-www-", dir="/var/tmp"))
    (extra / "index.html").write_text("from the host\n")
    body = (f"cp {extra}/index.html got.html\n"
            f"if ( echo x > {extra}/new ) 2>/dev/null; then touch wrote; fi\n")
    try:
        tree = sample_tree()
        run_scripts(tree, [script(tmp_path, "10.sh", body)], tmp_path / "root", {},
                    binds=[str(extra)])
        assert not (extra / "new").exists()
    finally:
        shutil.rmtree(extra)
    assert tree.get("got.html").data.read(0, 100) == b"from the host\n"  # type: ignore[union-attr]
    assert tree.get("wrote") is None


def test_postinst_bind_refuses_the_home_and_its_hidden_directories(tmp_path: Path) -> None:
    home = tmp_path / "h"
    (home / ".ssh").mkdir(parents=True)
    (home / "www").mkdir()
    (tmp_path / "link").symlink_to(home / ".ssh")
    assert check_binds([str(home / "www")], home=str(home)) == [str(home / "www")]
    for bad, why in ((home, "whole home"), (tmp_path, "whole home"), (Path("/"), "whole home"),
                     (home / ".ssh", "hidden directory"), (tmp_path / "link", "hidden directory"),
                     (home / "absent", "not a directory")):
        with pytest.raises(InputError, match=why):
            check_binds([str(bad)], home=str(home))
    with pytest.raises(InputError, match="not an absolute path"):
        check_binds(["www"], home=str(home))
    with pytest.raises(InputError, match="a path of the sandbox itself"):
        check_binds(["/proc"], home=str(home))


def test_unconfined_home_and_tmpdir_are_empty_and_thrown_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without_bwrap(tmp_path))
    s = script(tmp_path, "10.sh", 'test -z "$(ls -A "$HOME")"\ntest -z "$(ls -A "$TMPDIR")"\n'
                                  'echo "$HOME $TMPDIR" > where\n')
    tree = sample_tree()
    (tmp_path / "w").mkdir()
    run_scripts(tree, [s], tmp_path / "w" / "root", {})
    where = tree.get("where").data.read(0, 4096).split()  # type: ignore[union-attr]
    assert where == [str(tmp_path / "w/home").encode(), str(tmp_path / "w/tmp").encode()]


# ---------------------------------------------------------------------------
# time limit, and no process left behind


def marker_pids(marker: str) -> list[int]:
    return [pid for pid, argv in live_processes() if any(marker.encode() in a for a in argv)]


def wait_gone(marker: str, seconds: float = 10.0) -> list[int]:
    """Pids still showing *marker* after waiting up to *seconds* for them to go."""
    deadline = time.monotonic() + seconds
    while (left := marker_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def sleeper_body(marker: str, then: str) -> str:
    """A script that leaves processes behind in three ways, then runs *then*. Each
    sleep's argument ends with *marker* (digits), so it can be found."""
    return (f"sleep 3599.{marker}1 &\n"
            f"setsid sleep 3599.{marker}2 &\n"
            f"( sleep 3599.{marker}3 & ) \n"
            f"touch started\n{then}\n")


@pytest.fixture(params=["bwrap", "no-bwrap"])
def confinement(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "bwrap":
        if bwrap_problem():
            pytest.skip(f"bubblewrap unusable: {bwrap_problem()}")
    else:
        monkeypatch.setenv("PATH", path_without_bwrap(tmp_path))
    return str(request.param)


def test_time_limit_kills_the_script_and_all_it_started(tmp_path: Path,
                                                       confinement: str) -> None:
    marker = str(uuid.uuid4().int)[:12]
    s = script(tmp_path, "30-forever.sh", sleeper_body(marker, f"sleep 3599.{marker}4"))
    start = time.monotonic()
    with pytest.raises(PostinstTimeout) as exc:
        run_scripts(sample_tree(), [s], tmp_path / "root", {}, timeout=1.5)
    assert time.monotonic() - start < 15
    assert exc.value.message == (
        "postinst svc/postinst/30-forever.sh did not finish within its time limit of 1.5 s; "
        "it was killed with every process it started")
    assert "--postinst-timeout" in (exc.value.hint or "")
    assert (tmp_path / "root/started").exists()
    assert wait_gone(marker) == []


def test_what_a_script_leaves_running_is_killed_when_it_ends(tmp_path: Path,
                                                            confinement: str) -> None:
    marker = str(uuid.uuid4().int)[:12]
    s = script(tmp_path, "10-daemon.sh", sleeper_body(marker, "echo done"))
    start = time.monotonic()
    run_scripts(sample_tree(), [s], tmp_path / "root", {}, timeout=60)
    assert time.monotonic() - start < 15  # the build does not wait for the leftovers
    assert wait_gone(marker) == []


def test_no_time_limit_with_zero(tmp_path: Path) -> None:
    s = script(tmp_path, "10.sh", "sleep 0.2\ntouch done\n")
    tree = sample_tree()
    run_scripts(tree, [s], tmp_path / "root", {}, timeout=0)
    assert tree.get("done") is not None


# ---------------------------------------------------------------------------
# the time limit from the command line and service.conf


def build_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smolfs", "build", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "MKSMOLNB_CACHE": str(cwd / "cache"), **(env or {})})


@pytest.mark.parametrize(("conf", "flag"), [
    ("", ["--postinst-timeout", "1"]),
    ("POSTINST_TIMEOUT=1\n", []),
    ("POSTINST_TIMEOUT=600\n", ["--postinst-timeout", "1"]),  # the command line wins
])
def test_build_fails_on_a_script_past_its_limit(tmp_path: Path, conf: str,
                                                flag: list[str]) -> None:
    setsynth = pytest.importorskip("helpers.setsynth")
    marker = str(uuid.uuid4().int)[:12]
    svc = tmp_path / "svcs/hang"
    (svc / "etc").mkdir(parents=True)
    (svc / "etc/rc").write_text("#!/bin/sh\n")
    (svc / "service.conf").write_text(conf)
    (svc / "postinst").mkdir()
    (svc / "postinst/10-hang.sh").write_text(sleeper_body(marker, f"sleep 3599.{marker}4"))
    rescue = setsynth.make_set(tmp_path / "rescue.tar.xz", kind="rescue")
    out = tmp_path / "out"
    out.mkdir()
    start = time.monotonic()
    r = build_cli("--services-dir", tmp_path / "svcs", "-s", "hang", "-x", rescue,
                  "-i", out / "h.img", *flag, cwd=tmp_path)
    assert time.monotonic() - start < 60
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
    assert errors == ["smolfs: error: postinst hang/postinst/10-hang.sh did not finish within "
                      "its time limit of 1 s; it was killed with every process it started"]
    assert list(out.iterdir()) == []  # no image, no staging directory
    assert wait_gone(marker) == []


# ---------------------------------------------------------------------------
# the guard itself (smolfs.run with contain=True)


def test_contained_run_reports_status_output_and_missing_programs() -> None:
    from smolfs.errors import ExternalCommandError
    from smolfs.run import run

    r = run(["sh", "-c", "echo out; echo err >&2; exit 3"], contain=True, check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert run(["sh", "-c", "kill -9 $$"], contain=True, check=False).returncode == 128 + 9
    with pytest.raises(ExternalCommandError, match="exited with status 3"):
        run(["sh", "-c", "exit 3"], contain=True)
    with pytest.raises(ExternalCommandError, match="no-such-program-here not found"):
        run(["no-such-program-here"], contain=True)


def test_contained_program_gets_sigpipe_and_its_own_process_group() -> None:
    """Python ignores SIGPIPE, and exec would pass that on: the guard restores it."""
    from smolfs.run import run

    r = run(["sh", "-c", "yes | head -n1; cut -d' ' -f5,6 /proc/$$/stat"],
            contain=True, check=False, timeout=30)
    lines = r.stdout.split()
    assert r.returncode == 0 and lines[0] == "y" and r.stderr == "", r.stderr
    assert int(lines[1]) != os.getpgrp() and int(lines[2]) != os.getsid(0)
