"""The two doors to external programs: run() and spawn()."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
        spawn(["/nonexistent/qemu-system-aarch64"])
    assert "not found" in err.value.message
    assert err.value.hint == "install it: apt-get install qemu-system-arm"


def test_package_table() -> None:
    assert package_of("/usr/bin/bwrap") == "bubblewrap"
    assert package_of("no-such-program") is None


def test_spawn_returns_a_running_child_with_stdin_closed() -> None:
    child = spawn([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"],
                  stdout=subprocess.PIPE, text=True)
    try:
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert out.strip() == "''" and child.returncode == 0


def test_spawn_missing_cwd_is_not_a_missing_program(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        spawn([sys.executable, "-c", "pass"], cwd=tmp_path / "absent")
