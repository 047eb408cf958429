"""Console stage detection, kept to ``re``: the fast path's relay runs it while QEMU boots
(:mod:`launcher.stages` re-exports it with the timing report).

Stages, in order: QEMU exec → first console byte → kernel banner (``NetBSD X.Y (CONF)``)
→ root mounted (``root file system type: ...``) → first line from ``/etc/rc`` (the first
console line after the root mount that is not a kernel message) → ready (judged by the
readiness probe). :class:`StageDetector` is pure: feed it lines with their times.

NetBSD 9 and later prefix every kernel message on the console with the kernel's uptime
(``[   1.0000000] NetBSD 10.1 (GENERIC64) #0: ...``): such a line is the kernel's, and its
text after the prefix is what the banner and root patterns are matched against.
"""

from __future__ import annotations

import re

BANNER = r"^NetBSD \d+\.\d+\S* \([^)]*\) #\d+"
#: The uptime prefix of kernel messages (NetBSD >= 9).
KERNEL_STAMP = r"\[\s*\d+\.\d+\] ?"
ROOT = "root file system type: "
#: Lines the kernel itself prints after mounting root, before init's children speak.
KERNEL_LINE = (r"^(\s*$|kern\.|clock: |WARNING: |warning: |entropy: |boot device|root on "
               r"|dump |swap|\[ |[a-z]+\d+( at |: )|mainbus|autoconfiguration)")


class StageDetector:
    """Records when each stage is first seen; times are whatever clock the caller uses."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

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
        line = line.strip("\r")
        stamp = re.match(KERNEL_STAMP, line)
        if stamp:
            line = line[stamp.end():]
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
