"""smolfs.image.staleness: an image is fresh for the launcher only while every input the build
read keeps its stat, the request is the same, and the image is as the build left it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smolfs.image import staleness

VERSION = "9.9"


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fake build: sets, kernel, a services directory, an image with its manifest and
    the record the builder keeps."""
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    sets = tmp_path / "rescue.tar.xz"
    sets.write_bytes(b"set")
    kernel = tmp_path / "netbsd-GENERIC.gz"
    kernel.write_bytes(b"kernel")
    services = tmp_path / "services"
    (services / "web" / "etc").mkdir(parents=True)
    (services / "web" / "etc" / "rc").write_text("echo ready\n")
    image = tmp_path / "web-amd64.img"
    image.write_bytes(b"\0" * 4096)
    key, stats = staleness.inputs(("fields",), [sets, kernel], [services / "web"],
                                  dirs=[services])
    (tmp_path / "web-amd64.img.json").write_text(json.dumps(
        {"tool": "mksmolnb", "version": VERSION, "size": 4096, "inputs": key,
         "kernel": str(kernel)}))
    staleness.remember(image, key, stats, ask(services))
    return {"sets": sets, "kernel": kernel, "services": services, "image": image}


def ask(services: Path, **kw: object) -> list[object] | None:
    from smolfs.image.options import BuildOptions, request

    args: dict[str, object] = {"arch": "amd64", "release": None, "kernel": "GENERIC",
                               "services_dir": str(services), **kw}
    return staleness.request(request(BuildOptions(service="web", **args)))


def is_fresh(b: dict[str, Path], **kw: object) -> bool:
    return staleness.fresh(b["image"], ask(b["services"], **kw), VERSION) is not None


def test_fresh_after_the_build(built: dict[str, Path]) -> None:
    manifest = staleness.fresh(built["image"], ask(built["services"]), VERSION)
    assert manifest is not None and manifest["kernel"] == str(built["kernel"])


@pytest.mark.parametrize("change", [
    "set touched", "set replaced", "kernel rewritten", "kernel removed", "service file edited",
    "service file added", "service dir added", "common dir appears", "image written",
    "manifest rewritten", "record lost",
])
def test_one_changed_input_makes_the_image_stale(built: dict[str, Path], change: str) -> None:
    assert is_fresh(built)
    rc = built["services"] / "web" / "etc" / "rc"
    if change == "set touched":
        os.utime(built["sets"], ns=(1, 1))
    elif change == "set replaced":
        new = built["sets"].with_name("new")
        new.write_bytes(b"set")
        os.replace(new, built["sets"])
    elif change == "kernel rewritten":
        built["kernel"].write_bytes(b"another kernel")
    elif change == "kernel removed":
        built["kernel"].unlink()
    elif change == "service file edited":
        rc.write_text("echo other\n")
    elif change == "service file added":
        (rc.parent / "motd").write_text("hi\n")
    elif change == "service dir added":
        (rc.parent / "rc.d").mkdir()
    elif change == "common dir appears":
        (built["services"] / "common").mkdir()
    elif change == "image written":  # booted read-write after the build
        with built["image"].open("r+b") as f:
            f.write(b"guest")
        os.utime(built["image"], ns=(2**62, 2**62))
    elif change == "manifest rewritten":
        m = built["image"].with_name("web-amd64.img.json")
        m.write_text(m.read_text().replace("9.9", "9.9 "))
    elif change == "record lost":
        record = staleness.record_path(built["image"])
        assert record is not None
        os.unlink(record)
    assert not is_fresh(built)


@pytest.mark.parametrize("ro", [True, False, None])
def test_a_read_write_root_keeps_what_its_vm_wrote(built: dict[str, Path], ro: bool | None
                                                   ) -> None:
    """Written to after the build: stale for a read-only root (or a manifest that does not
    say), kept for a read-write one; a size that changed is stale for both."""
    m = built["image"].with_name("web-amd64.img.json")
    data = json.loads(m.read_text())
    data["ro"] = ro
    m.write_text(json.dumps(data))
    staleness.remember(built["image"], data["inputs"], json.loads(json.dumps(
        staleness.inputs(("fields",), [built["sets"], built["kernel"]],
                         [built["services"] / "web"], dirs=[built["services"]])[1])),
        ask(built["services"]))
    assert is_fresh(built)
    with built["image"].open("r+b") as f:
        f.write(b"guest")
    os.utime(built["image"], ns=(2**62, 2**62))
    assert is_fresh(built) is (ro is False)
    assert (staleness.up_to_date(built["image"], data["inputs"]) is not None) is (ro is False)
    with built["image"].open("ab") as f:
        f.write(b"grown")
    assert not is_fresh(built)


def test_another_request_or_version_is_not_fresh(built: dict[str, Path]) -> None:
    assert not is_fresh(built, arch="i386")
    assert not is_fresh(built, release="9.3")
    assert not is_fresh(built, kernel=None)
    assert staleness.fresh(built["image"], ask(built["services"]), "10.0") is None
    # A daily build's checksums move with every build: only the fetch can tell.
    assert ask(built["services"], release="current") is None
    assert staleness.fresh(built["image"], None, VERSION) is None


def test_another_environment_is_not_fresh(built: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert not is_fresh(built)


def test_the_key_is_the_builders_and_reads_content(tmp_path: Path) -> None:
    """Same content, new stat: same digest (the builder keeps the image); other content:
    another digest. Executable bits and symbolic links count."""
    tree = tmp_path / "svc"
    tree.mkdir()
    (tree / "rc").write_text("a")
    key, _ = staleness.inputs((1,), [], [tree])
    (tree / "rc").write_text("a")
    assert staleness.inputs((1,), [], [tree])[0] == key
    (tree / "rc").chmod(0o755)
    assert staleness.inputs((1,), [], [tree])[0] != key
    (tree / "rc").chmod(0o644)
    (tree / "link").symlink_to("rc")
    assert staleness.inputs((1,), [], [tree])[0] != key
    (tree / "link").unlink()
    assert staleness.inputs((2,), [], [tree])[0] != key


def test_module_imports_os_only() -> None:
    code = ("import sys; before = set(sys.modules); import smolfs.image.staleness\n"
            "print(sorted(set(sys.modules) - before))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=60)
    assert set(eval(r.stdout)) <= {'__future__', 'smolfs', 'smolfs.image',
                                'smolfs.image.staleness'}, r.stdout


def test_a_rebuild_drops_the_record_of_the_image_it_replaces(built: dict[str, Path]) -> None:
    record = staleness.record_path(built["image"])
    assert record is not None and os.path.exists(record)
    staleness.forget(built["image"])
    assert not os.path.exists(record) and not is_fresh(built)
