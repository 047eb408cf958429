"""``smolfs mkfs`` as a user runs it: a subprocess, its output, its exit code, and what
it leaves (or does not leave) in the destination directory."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from helpers import setsynth
from helpers.fsimage import fsck_ffs

from conftest import REPO


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smolfs", "mkfs", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, **(env or {})})


def has_writer(fstype: str) -> bool:
    module = importlib.import_module(f"smolfs.fs.{fstype}")
    return hasattr(module, "write") and hasattr(module, "minimum_size")


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *texts: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith("smolfs: error: ")]
    assert len(errors) == 1, proc.stderr
    assert all(line.startswith(("smolfs: error: ", "smolfs: hint: ", "‣ ", "  "))
               for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr
    for text in texts:
        assert text in errors[0], proc.stderr
    assert proc.stdout == ""


def test_help_teaches():
    proc = run("--help")
    assert proc.returncode == 0
    for text in ("-t TYPE", "-o KEY=VAL", "-F SPEC", "examples:", "smolfs mkfs -t ext2"):
        assert text in proc.stdout


def test_verb_module_is_cheap_to_import():
    code = ("import sys, smolfs.cli.mkfs; "
            "print(sorted(m for m in sys.modules if m.startswith('smolfs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert "smolfs.sets.sources" not in out and "smolfs.image.mkfs'" not in out


def test_usage_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run("-t", "zfs", out / "a.img", src), 2, "unknown filesystem type")
    assert_one_line_error(run("-s", "lots", out / "a.img", src), 2, "invalid image size 'lots'")
    assert_one_line_error(run("--owner", "root", out / "a.img", src), 2, "--owner")
    assert_one_line_error(run(out / "a.img"), 2)
    assert os.listdir(out) == []


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_bad_inputs_leave_nothing(tmp_path, fstype):
    if not has_writer(fstype):
        pytest.skip(f"the {fstype} writer is not in this tree yet")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    bad_tar = tmp_path / "evil.tar"
    bad_tar.write_bytes(setsynth.tar_bytes([setsynth.Entry("../../etc/passwd", "file", 0o644,
                                                           data=b"x")]))
    cut = tmp_path / "base.tar.xz"
    blob = setsynth.make_set(tmp_path, "base", "xz").read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    spec = tmp_path / "missing.spec"
    spec.write_text("./etc/rc type=file mode=0644\n")
    out = tmp_path / "out"
    out.mkdir()
    img = out / "root.img"
    cases = [
        ((img, tmp_path / "nope"), "nope"),
        ((img, bad_tar), "'../../etc/passwd' contains '..'"),
        ((img, cut), "base.tar.xz: corrupt or truncated archive"),
        (("-F", spec, img, src), "./etc/rc"),
        (("-o", "nosuchkey=1", img, src), "nosuchkey"),
    ]
    for args, text in cases:
        proc = run("-t", fstype, *args)
        assert_one_line_error(proc, 2 if "nosuchkey" in text else 1, text)
        assert os.listdir(out) == [], args


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_too_small_names_the_minimum(tmp_path, fstype):
    if not has_writer(fstype):
        pytest.skip(f"the {fstype} writer is not in this tree yet")
    base = setsynth.make_set(tmp_path, "base", "zst")
    out = tmp_path / "out"
    out.mkdir()
    proc = run("-t", fstype, "-s", "512k", out / "root.img", base)
    assert_one_line_error(proc, 1, "cannot hold the content; the minimum is")
    assert "hint: use -s " in proc.stderr
    hinted = proc.stderr.split("use -s ")[1].split(",")[0]
    assert os.listdir(out) == []
    proc = run("-t", fstype, "-s", hinted, out / "root.img", base)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(out) == ["root.img"]


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_success_is_deterministic(tmp_path, fstype):
    if not has_writer(fstype):
        pytest.skip(f"the {fstype} writer is not in this tree yet")
    rescue = setsynth.make_set(tmp_path, "rescue", "xz")
    devices = setsynth.make_set(tmp_path, "dev", "gz")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    images = []
    for name in ("a.img", "b.img"):
        proc = run("-t", fstype, tmp_path / name, rescue, devices, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{tmp_path / name}: {fstype}, ")
        assert " files, " in proc.stdout and len(proc.stdout.splitlines()) == 1
        assert "read archive" in proc.stderr and "write" in proc.stderr
        images.append((tmp_path / name).read_bytes())
        if fstype == "ffs":
            fsck_ffs(tmp_path / name)
    assert images[0] == images[1]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["a.img", "b.img", rescue.name, devices.name])


def test_interrupted_leaves_nothing(tmp_path):
    """Ctrl-C while reading a source: exit 130, no image, no temporary file, no spool."""
    if not has_writer("ffs"):
        pytest.skip("the ffs writer is not in this tree yet")
    import signal
    import time

    fifo = tmp_path / "base.tar.xz"
    os.mkfifo(fifo)  # nobody writes: mkfs waits on it, mid-way
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "smolfs", "mkfs", out / "root.img", fifo],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # "‣ read archive ...": mkfs is waiting on the pipe
    assert "read archive" in first, first + proc.communicate()[1]
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert os.listdir(out) == []


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_sizes_below_one_mib_in_kib(tmp_path, fstype):
    """Issue 11: ``-s 1k`` said "the minimum is 0.0 MiB"."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    proc = run("-t", fstype, "-s", "1k", tmp_path / "o.img", src)
    assert_one_line_error(proc, 1, "1 KiB cannot hold the content; the minimum is ")
    assert "0.0 MiB" not in proc.stderr and " KiB" in proc.stderr.split("minimum is ")[1]
    hinted = proc.stderr.split("use -s ")[1].split(",")[0]
    assert hinted.endswith("k")
    proc = run("-t", fstype, "-s", hinted, tmp_path / "o.img", src)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(", ")[1].endswith(" KiB")


def test_size_over_the_bound_needs_force(tmp_path):
    """Issue 11: ``-s 1t`` silently made a 1 TiB sparse file."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    for size in ("1t", "65g"):
        proc = run("-s", size, out / "o.img", src)
        assert_one_line_error(proc, 2, "over 64 GiB", "--force")
        assert ("1 TiB" if size == "1t" else "65 GiB") in proc.stderr
        assert os.listdir(out) == []
    proc = run("-s", "65g", "--force", out / "o.img", src)
    assert proc.returncode == 0, proc.stderr
    assert os.stat(out / "o.img").st_size == 65 << 30
    from smolfs.fs.fsstat import stat_image

    assert stat_image(out / "o.img").size == 65 << 30  # (fsck_ffs takes 15 s over it)
