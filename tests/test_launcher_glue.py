"""The thin glue to kstrip (``--strip``) and smolfs.build (``startnb SERVICE``).

Both components are exercised through stand-ins honouring their agreed signatures, so
this checks the launcher's side of the contract: call shape, caching by digest, errors.
"""

from __future__ import annotations

import shlex
import sys
import types
from pathlib import Path

import pytest
from kernels import TestKernels

from launcher.glue import strip_kernel
from launcher.kernel import inspect_kernel
from smolfs.errors import LaunchError


def test_strip_is_cached_by_digest(tmp_path: Path, test_kernels: TestKernels,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, Path]] = []

    def strip(kernel: Path, out: Path | None = None, **kw: object) -> object:
        assert out is not None
        calls.append((Path(kernel), out))
        out.write_bytes(Path(kernel).read_bytes())
        return types.SimpleNamespace(out=out)

    monkeypatch.setitem(sys.modules, "kstrip", types.SimpleNamespace(strip=strip))
    info = inspect_kernel(test_kernels.pvh_gz, cache=tmp_path)
    out = strip_kernel(info, cache=tmp_path)
    assert calls == [(info.path, calls[0][1])] and out.suffix == ".stripped"
    assert out.parent == tmp_path / "stripped" and len(out.stem) == 64
    assert out.read_bytes() == test_kernels.pvh.read_bytes()
    assert strip_kernel(info, cache=tmp_path) == out and len(calls) == 1  # reused


def test_strip_missing_function(tmp_path: Path, test_kernels: TestKernels,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kstrip", types.SimpleNamespace())
    info = inspect_kernel(test_kernels.pvh, cache=tmp_path)
    with pytest.raises(LaunchError, match=r"no strip\(\) function"):
        strip_kernel(info, cache=tmp_path)


@pytest.mark.qemu  # --print-cmd still checks that QEMU is installed
def test_service_name_builds_then_boots(tmp_path: Path, test_kernels: TestKernels,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "rescue.img"
    image.write_bytes(b"\0" * 4096)
    asked: list[dict[str, object]] = []

    def build(service: str = "rescue", image: Path | None = None, **kw: object) -> object:
        asked.append({"service": service, "image": image})
        return types.SimpleNamespace(image=tmp_path / "rescue.img",
                                     manifest={"kernel": str(test_kernels.pvh)})

    fake = types.ModuleType("smolfs.build")
    fake.build = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smolfs.build", fake)
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    import services

    (tmp_path / "services" / "rescue").mkdir(parents=True)
    monkeypatch.setattr(services, "shipped_dir", lambda: tmp_path / "services")
    from launcher.__main__ import main

    assert main(["rescue", "--print-cmd", "--accel", "tcg"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert asked == [{"service": "rescue", "image": None}]
    assert argv[argv.index("-kernel") + 1] == str(test_kernels.pvh)
    assert f"file={image}" in argv[argv.index("-drive") + 1]
    # An explicit -k wins over the kernel the build names.
    assert main(["-k", str(test_kernels.multiboot), "rescue", "--print-cmd"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[argv.index("-kernel") + 1] == str(test_kernels.multiboot)
    # A name that is neither a file nor a service is a missing kernel.
    assert main(["rescuee"]) == 1
    assert "kernel not found: rescuee" in capsys.readouterr().err
