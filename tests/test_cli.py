"""The three commands as a user meets them: --help, --version, error format, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from smolfs.errors import InputError, SmolError, UsageError

COMMANDS = {"smolfs": "smolfs", "kstrip": "kstrip", "startnb": "launcher"}


def cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("prog", COMMANDS)
def test_help_and_version(prog: str) -> None:
    r = cli(COMMANDS[prog], "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:") and prog in r.stdout
    r = cli(COMMANDS[prog], "--version")
    assert r.returncode == 0 and r.stdout.split() == [prog, "0.1.0"]


@pytest.mark.parametrize("prog", COMMANDS)
def test_usage_error_is_one_line_and_exit_2(prog: str) -> None:
    r = cli(COMMANDS[prog], "--no-such-flag")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"{prog}") and ": error: " in lines[0]
    assert "Traceback" not in r.stderr


def test_smolfs_unknown_verb() -> None:
    r = cli("smolfs", "frobnicate")
    assert r.returncode == 2
    assert "unknown verb 'frobnicate'" in r.stderr and "mkfs" in r.stderr


def test_run_main_maps_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from smolfs.cli import run_main

    def fail_input(argv: object) -> int:
        raise InputError("no such file: x.img", hint="check the path")

    def fail_usage(argv: object) -> int:
        raise UsageError("bad flag")

    assert run_main("smolfs", fail_input, []) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["smolfs: error: no such file: x.img", "smolfs: hint: check the path"]
    assert run_main("smolfs", fail_usage, []) == 2
    assert issubclass(UsageError, SmolError)


def test_entry_points_import_little() -> None:
    """--help must not pull in the heavy libraries (start-up time is a feature)."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['x', '--help']\n"
        "for mod in ('smolfs', 'kstrip', 'launcher'):\n"
        "    try:\n"
        "        runpy.run_module(mod + '.__main__', run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = {'requests', 'construct', 'elftools', 'zstandard', 'tarfile'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("script", "usage"), [("mkimg.sh", "usage: smolfs build"),
                                               ("kstrip.sh", "usage: kstrip"),
                                               ("startnb.sh", "usage: startnb")])
def test_old_command_lines_still_work(script: str, usage: str) -> None:
    r = subprocess.run([str(REPO / script), "--help"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(usage)


def test_compat_script_under_its_own_name_refuses() -> None:
    r = subprocess.run([str(REPO / "compat.sh"), "--help"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "mkimg.sh, kstrip.sh or startnb.sh" in r.stderr


@pytest.mark.parametrize("name", ["build", "mkfs", "fetch"])
@pytest.mark.parametrize("module_first", [False, True])
def test_package_functions_callable_whatever_was_imported_first(name: str,
                                                                module_first: bool) -> None:
    """``smolfs.X(...)`` calls the function X both before and after the module that holds
    it is imported; a fresh interpreter for each order."""
    module = {"build": "smolfs.image.build", "mkfs": "smolfs.image.mkfs",
              "fetch": "smolfs.sets.fetch"}[name]
    code = "\n".join([
        "import importlib, smolfs",
        f"importlib.import_module('{module}')" if module_first else "",
        f"api = smolfs.{name}",
        f"importlib.import_module('{module}')",
        "try:",
        "    api(no_such_argument=1)",
        "except TypeError as err:",
        f"    assert '{name}() got an unexpected keyword' in str(err), err",
        "else:",
        "    raise AssertionError('no TypeError')",
        f"smolfs.{name}(no_such_argument=1)",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 1 and f"{name}() got an unexpected keyword" in r.stderr, r.stderr
