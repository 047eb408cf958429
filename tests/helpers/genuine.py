"""Shared by the tests that boot genuine NetBSD (``$MKSMOLNB_NETBSD_DIR``): finding its
files (a skip naming what is missing), the console lines that count as errors, reading a
detached VM's console and report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import NETBSD_DIR_VAR
from helpers.runner import Runner

#: TCG on a loaded CI machine; a boot here takes one or two seconds.
BOOT_TIMEOUT = "180"

#: A console line that reports something going wrong: the ``prog: object: strerror`` of
#: NetBSD's tools (``mount_ffs: /dev/ld0a on /: Operation not supported``), the shell's
#: ``not found`` and syntax errors, usage messages, failures, kernel warnings and panics.
ERROR_LINE = re.compile(
    r": (Operation not (supported|permitted)|No such (file or directory|device|process)"
    r"|Permission denied|Read-only file system|Invalid argument|Device not configured"
    r"|No space left on device|File exists|Device busy|Bad file descriptor"
    r"|Function not implemented|Inappropriate ioctl|[Nn]ot a directory|not found"
    r"|Network is unreachable|Address already in use|Connection refused)"
    r"|[Ss]yntax error|[Cc]annot |[Cc]an't |[Cc]ouldn't |[Ff]ailed|[Uu]sage: "
    r"|^WARNING: |^panic: |^fatal |^init: |^Enter pathname of shell"
    r"|not clean|UNEXPECTED INCONSISTENCY|RUN fsck|REBOOT NOW|not reloaded")


#: A line that matches :data:`ERROR_LINE` and says nothing about the boot: NetBSD 7's
#: kernel runs a statistical test (FIPS 140-2 style) on its random generator's output
#: now and then, and a sound generator fails it by chance (``sys/kern/subr_cprng.c``:
#: the generator is then reseeded).
CHANCE_LINE = re.compile(r"^cprng \S+: failed statistical RNG test$")


def error_lines(console: str) -> list[str]:
    """The error lines among what the console says after the root is mounted (the kernel
    lines before it name drivers "not configured", which is no error)."""
    after = console.split("root file system type: ", 1)
    if len(after) < 2:
        return ["(the root was never mounted)"]
    return [line for line in after[1].splitlines()
            if ERROR_LINE.search(line) and not CHANCE_LINE.search(line.strip())]


def netbsd_root() -> Path:
    value = os.environ.get(NETBSD_DIR_VAR)
    if not value or not os.path.isdir(value):
        pytest.skip(f"netbsd: set {NETBSD_DIR_VAR} to a directory of genuine NetBSD kernels "
                    "and sets")
    return Path(value)


def first(directory: Path, *names: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    pytest.skip(f"netbsd: {directory} has none of {', '.join(names)}")


def rescue_set(root: Path) -> Path:
    return first(root / "sets", "rescue.tgz", "rescue.tar.xz")


def report_of(stdout: str) -> dict:
    """The ``--json`` report: the first line of startnb's output."""
    return dict(json.loads(stdout.strip().splitlines()[0]))


def assert_stages_in_order(report: dict) -> None:
    """Every boot stage seen, each no earlier than the one before."""
    stages = report["timing"]["stages"]
    order = ["first_byte", "banner", "root", "rc", "ready"]
    assert all(stages[s] is not None for s in order), stages
    times = [stages[s] for s in order]
    assert times == sorted(times), stages


def boot_detached(runner: Runner, name: str, kernel: Path, image: Path, *args: str
                  ) -> tuple[dict, str]:
    """``startnb -d`` until ready (``--json``); its report and the console so far."""
    r = runner.startnb("-d", "--name", name, "-k", str(kernel), "-i", str(image), "--json",
                       "--timeout", BOOT_TIMEOUT, *args)
    console = runner.state / name / "serial.log"
    text = console.read_text(errors="replace") if console.exists() else ""
    assert r.returncode == 0, f"{r.stderr}\n--- console\n{text}"
    return report_of(r.stdout), text
