"""The two doors to external programs: run() and spawn()."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from smolfs import log
from smolfs.errors import ExternalCommandError
from smolfs.run import package_of, run, spawn


def test_run_captures_and_checks() -> None:
    assert run([sys.executable, "-c", "print('hi')"]).stdout == "hi\n"
    with pytest.raises(ExternalCommandError) as err:
        run([sys.executable, "-c", "import sys; sys.stderr.write('bad\\n'); sys.exit(3)"])
    assert err.value.returncode == 3 and "bad" in err.value.message


def test_missing_program_names_its_package() -> None:
    with pytest.raises(ExternalCommandError) as err:
        run(["/nonexistent/qemu-system-x86_64", "--version"])
    assert err.value.hint == "install it: apt-get install qemu-system-x86"
    with pytest.raises(ExternalCommandError) as err:
        spawn(["/nonexistent/qemu-system-aarch64"], die_with_parent=True)
    assert "not found" in err.value.message
    assert err.value.hint == "install it: apt-get install qemu-system-arm"


def test_package_table() -> None:
    assert package_of("/usr/bin/bwrap") == "bubblewrap"
    assert package_of("no-such-program") is None


def test_spawn_returns_a_running_child_with_stdin_closed() -> None:
    out_r, out_w = os.pipe()
    try:
        pid = spawn([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"],
                    stdout=out_w, die_with_parent=True)
    finally:
        os.close(out_w)
    with os.fdopen(out_r) as out:
        text = out.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert text.strip() == "''"


def test_spawn_finds_the_program_on_path_and_logs_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    monkeypatch.setattr(log, "DEBUG", True)
    pid = spawn([os.path.basename(sys.executable), "-c", "pass"], die_with_parent=False)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert f"+ {os.path.basename(sys.executable)} -c pass" in capsys.readouterr().err


def test_spawn_failure_to_start_is_a_typed_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    with pytest.raises(ExternalCommandError) as err:
        spawn([str(garbage)], die_with_parent=False)
    assert err.value.message == f"{garbage} cannot be started: Exec format error"
    assert err.value.argv == [str(garbage)]
