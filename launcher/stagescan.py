"""Console lines scanned for the boot's stages (kernel banner, root mounted, first rc
line) and the guest's end (halt, panic, fatal trap, debugger), kept to ``re``: the fast
path's relay and the keeper run it; :mod:`launcher.timing` builds the report. What each
stage and end is: ``launcher/README.md`` ("What the console says")."""

from __future__ import annotations

import re

BANNER = r"^NetBSD \d+\.\d+\S* \([^)]*\) #\d+"
#: The uptime prefix of kernel messages (NetBSD >= 9).
KERNEL_STAMP = r"\[\s*\d+\.\d+\] ?"
ROOT = "root file system type: "
#: Lines the kernel itself prints after mounting root, before init's children speak.
KERNEL_LINE = (r"^(\s*$|kern\.|clock: |WARNING: |warning: |entropy: |boot device|root on "
               r"|dump |swap|\[ |[a-z]+\d+( at |: )|mainbus|autoconfiguration)")

#: The kernel halted: nothing more will happen, though QEMU runs on.
HALTED = r"^The operating system has halted\."
#: The kernel trapped (``fatal page fault in supervisor mode``, ``fatal breakpoint trap
#: ...``), or its debugger stopped it (``Stopped in pid ...``, the ``db{0}>`` prompt).
PANIC = r"^(fatal [a-z ]*(trap|fault) in (supervisor|user) mode|Stopped in |db\{\d+\}>)"
#: The kernel's panic message (``[ time] panic: `` from NetBSD 9 on, the stamp removed)...
PANIC_MESSAGE = r"^panic: "
#: ... and the kernel lines that follow it at once (with :data:`PANIC`): with them it
#: is a kernel panic, not a program printing "panic: ".
PANIC_FOLLOWS = r"^(cpu\d+: Begin traceback|dump(ing)? to dev )"
#: The kernel debugger waits for a command: a panicking guest prints nothing more.
DEBUGGER_PROMPT = r"db\{\d+\}> ?$"
#: The longest unfinished console line :func:`scan_end` keeps (an end line is short).
MAX_PARTIAL = 4096


def guest_end(line: str) -> str | None:
    """``"halted"`` or ``"panic"`` when a console line says the guest ended so, else None."""
    if re.match(PANIC, line):
        return "panic"
    if re.match(HALTED, line):
        return "halted"
    return None


def end_after(pending: str | None, line: str
              ) -> tuple[tuple[str, str] | None, str | None]:
    """One console line (without its stamp) after ``pending``, a ``panic:`` line still
    waiting for the next one: ``(end, pending)``, ``end`` the guest's end as ``(kind,
    line)`` (a panic is reported by its message) or None."""
    if not line.strip():
        return None, pending
    kind = guest_end(line)
    if pending is not None and (kind == "panic" or re.match(PANIC_FOLLOWS, line)):
        return ("panic", pending), None
    if kind is not None:
        return (kind, line), None
    return None, line if re.match(PANIC_MESSAGE, line) else None


def unstamped(line: str) -> tuple[str, bool]:
    """A console line without the kernel's uptime stamp (NetBSD >= 9), and whether it
    had one (then the line is the kernel's)."""
    stamp = re.match(KERNEL_STAMP, line)
    return (line[stamp.end():], True) if stamp else (line, False)


def scan_end(partial: bytes, data: bytes) -> tuple[bytes, tuple[str, str] | None]:
    """Look for the guest's end in console bytes: ``data`` follows the unfinished line
    ``partial``. Returns the unfinished line to carry on with (its last
    :data:`MAX_PARTIAL` bytes) and the first complete line saying the guest ended, as
    ``(kind, line)`` (the line without its line end and uptime stamp), else None."""
    *lines, rest = (partial + data).split(b"\n")
    pending = None
    for raw in lines:
        line = unstamped(raw.decode("utf-8", "replace").strip("\r"))[0]
        end, pending = end_after(pending, line)
        if end is not None:
            return rest[-MAX_PARTIAL:], end
    if pending is not None:  # carried on in the unfinished line until the next line comes
        if re.search(DEBUGGER_PROMPT, rest.decode("utf-8", "replace")):
            return rest[-MAX_PARTIAL:], ("panic", pending)
        return (pending.encode() + b"\n" + rest)[-MAX_PARTIAL:], None
    return rest[-MAX_PARTIAL:], None


class StageDetector:
    """Records when each stage is first seen; times are whatever clock the caller uses.

    ``end``: the first line that said the guest ended (:func:`guest_end`) as ``(kind,
    line)``, ``end_at`` its time.
    """

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.end: tuple[str, str] | None = None
        self.end_at: float | None = None
        self._panic: tuple[str, float] | None = None  # a panic line, and when it came

    def exited(self) -> tuple[str, str] | None:
        """QEMU ended: a ``panic:`` line still waiting for the kernel's next line was the
        kernel's last word (a panic that reset the machine). The guest's end, if any."""
        if self.end is None and self._panic is not None:
            self.end, self.end_at = ("panic", self._panic[0]), self._panic[1]
        return self.end

    def mark(self, stage: str, t: float) -> bool:
        """Record ``stage`` at ``t`` unless already seen; True when newly recorded."""
        if stage in self.times:
            return False
        self.times[stage] = t
        return True

    def feed_bytes(self, t: float) -> None:
        self.mark("first_byte", t)

    def feed_line(self, t: float, line: str) -> list[str]:
        """Classify one console line (without its line end); the stages it reached."""
        self.mark("first_byte", t)
        new = []
        line, stamp = unstamped(line.strip("\r"))
        if self.end is None:
            pending = self._panic
            self.end, panic = end_after(pending[0] if pending else None, line)
            if self.end is not None:
                self.end_at = pending[1] if pending and self.end[0] == "panic" else t
            self._panic = (panic, pending[1] if pending and panic == pending[0] else t) \
                if panic is not None else None
        if "banner" not in self.times and re.match(BANNER, line):
            self.mark("banner", t)
            new.append("banner")
        elif "root" not in self.times and line.startswith(ROOT):
            self.mark("root", t)
            new.append("root")
        elif ("root" in self.times and "rc" not in self.times and not stamp
              and not re.match(KERNEL_LINE, line)):
            self.mark("rc", t)
            new.append("rc")
        return new
