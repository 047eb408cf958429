"""The one way a long-lived child is started (smolfs.spawn): exec errors, the descriptors
and signals the child gets, its session, and its death with the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.pipes import read_all

from smolfs.spawn import hold_terminal, spawn, spawn_in_group


def test_spawn_reports_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        spawn([str(tmp_path / "no-such-qemu")], 0, 1, 2, die_with_parent=True)


def test_spawn_reports_a_failure_in_the_child(tmp_path: Path) -> None:
    target = tmp_path / "not-executable"
    target.write_text("data")
    with pytest.raises(PermissionError):
        spawn([str(target)], 0, 1, 2, die_with_parent=False)


#: A program that reports what it got: its descriptors, its blocked and ignored signals,
#: its session and process group. The signal masks are read first and by the shell
#: itself: a shell blocks every signal while it forks and waits for a command, so a
#: ``grep`` of the shell's status could see that passing mask instead of the one given.
PROBE = ["/bin/sh", "-c",
         "while read -r key value; do case $key in SigBlk:|SigIgn:) echo $key $value;; "
         "esac; done </proc/$$/status; ls /proc/$$/fd; ps -o sid=,pgid= -p $$"]


def _what_it_gets(start: Callable[[list[str], int], int]
                  ) -> tuple[list[int], int, int, tuple[int, ...], str]:
    """Start :data:`PROBE` with ``start(argv, stdout)`` while this process holds an
    inheritable descriptor (one a caller of startnb passed down): (its descriptors, its
    ignored signals, its blocked signals, (session, process group), its whole report)."""
    keep_r, keep_w = os.pipe()
    os.set_inheritable(keep_w, True)
    out_r, out_w = os.pipe()
    try:
        pid = start(PROBE, out_w)
    finally:
        os.close(out_w)
    text = read_all(out_r).decode()
    os.waitpid(pid, 0)
    os.close(keep_w)
    os.close(keep_r)
    masks = dict(line.split() for line in text.splitlines()[:2])
    *fds, ids = text.splitlines()[2:]
    return (sorted(map(int, fds)), int(masks["SigIgn:"], 16), int(masks["SigBlk:"], 16),
            tuple(map(int, ids.split())), text)


def test_spawned_child_inherits_no_stray_fds_and_default_sigpipe() -> None:
    """Only 0, 1, 2 reach the program (an inherited pipe end would keep a caller waiting
    for end of file as long as a detached VM runs), and SIGPIPE/SIGXFSZ are no longer
    ignored as they are in Python."""
    fds, ignored, _, _, text = _what_it_gets(
        lambda argv, out: spawn(argv, 0, out, 2, die_with_parent=True))
    assert fds == [0, 1, 2], text
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig!r} still ignored: {ignored:#x}"


@pytest.mark.parametrize("new_session", [True, False])
def test_spawned_child_leads_a_session_of_its_own_when_asked(new_session: bool) -> None:
    """QEMU attached to a terminal must not get the Ctrl-C meant for startnb; the
    keeper's QEMU stays in the keeper's session (the keeper has one of its own)."""
    out_r, out_w = os.pipe()
    try:
        pid = spawn([sys.executable, "-c", "import os; print(os.getsid(0), os.getpgid(0))"],
                    0, out_w, 2, die_with_parent=False, new_session=new_session)
    finally:
        os.close(out_w)
    sid, pgid = map(int, read_all(out_r).split())
    os.waitpid(pid, 0)
    if new_session:
        assert sid == pgid == pid
    else:
        assert (sid, pgid) == (os.getsid(0), os.getpgid(0))


def _orphan(code: str) -> tuple[int, str]:
    """Run ``code`` in a Python that starts a child and prints its pid first on a line,
    then SIGKILL that Python (no clean-up at all): (the child's pid, the rest of the
    line)."""
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    assert parent.stdout is not None
    pid, _, rest = parent.stdout.readline().partition(" ")
    child = int(pid)
    os.kill(child, 0)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    return child, rest.strip()


def _ended(pid: int, seconds: float) -> bool:
    """True once ``pid`` (not our child) is gone or a zombie, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
@pytest.mark.parametrize("die_with_parent", [True, False])
def test_spawned_child_dies_with_its_parent(die_with_parent: bool) -> None:
    """A parent that is SIGKILLed (no clean-up at all) still takes the child down, when
    asked; otherwise the child lives on."""
    code = ("import os, sys, time\n"
            "from smolfs.spawn import spawn\n"
            f"pid = spawn(['/bin/sleep', '60'], 0, 1, 2, die_with_parent={die_with_parent})\n"
            "print(pid, flush=True)\n"
            "time.sleep(60)\n")
    child, _ = _orphan(code)
    died = _ended(child, 5 if die_with_parent else 0.5)
    if not died:
        os.kill(child, signal.SIGKILL)
    assert died is die_with_parent, ("the spawned child outlived its SIGKILLed parent"
                                     if die_with_parent else "the child died with its parent")


# -- spawn_in_group, for a process that holds a terminal (the keeper of a detached VM) ---


def test_spawn_in_group_gives_the_program_0_1_2_default_signals_and_our_group() -> None:
    """No other descriptor of ours (even an inheritable one a caller passed down), SIGPIPE
    and SIGXFSZ back to their default, none blocked, and our session and process group."""
    fds, ignored, blocked, ids, text = _what_it_gets(
        lambda argv, out: spawn_in_group(argv, 0, out, 2))
    assert fds == [0, 1, 2], text
    assert blocked == 0, text
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig!r} still ignored: {ignored:#x}"
    assert ids == (os.getsid(0), os.getpgid(0))


def test_spawn_in_group_reports_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        spawn_in_group([str(tmp_path / "no-such-qemu")], 0, 1, 2)


@pytest.mark.parametrize("holds", [True, False], ids=["terminal", "none"])
def test_a_terminal_holder_takes_its_group_with_it(holds: bool) -> None:
    """A session leader holding a terminal (hold_terminal) is SIGKILLed: what it started
    in its group (spawn_in_group) gets SIGHUP and ends. Without the terminal the same
    child outlives it: the terminal is what ends it."""
    code = ("import os, time\n"
            "from smolfs.spawn import hold_terminal, spawn_in_group\n"
            "os.setsid()\n"
            f"held = hold_terminal() if {holds} else 'none'\n"
            "pid = spawn_in_group(['/bin/sleep', '60'], 0, 1, 2)\n"
            "print(pid, held is not None, flush=True)\n"
            "time.sleep(60)\n")
    child, held = _orphan(code)
    assert held == "True", "no pseudo-terminal here"
    ended = _ended(child, 5 if holds else 0.5)
    if not ended:
        os.kill(child, signal.SIGKILL)
    assert ended is holds, ("the child outlived the terminal's holder" if holds
                            else "the child died without a terminal to end it")


def test_hold_terminal_needs_a_session_of_its_own() -> None:
    """A process that leads no session cannot take a terminal (the launcher never gets
    one by accident): None, nothing left open."""
    before = sorted(os.listdir("/proc/self/fd"))
    assert os.getsid(0) != os.getpid()
    assert hold_terminal() is None
    assert sorted(os.listdir("/proc/self/fd")) == before
