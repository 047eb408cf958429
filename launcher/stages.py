"""Boot stages read from the serial console, and the timing report built from them.

Stages, in order: QEMU exec → first console byte → kernel banner (``NetBSD X.Y (CONF)``)
→ root mounted (``root file system type: ...``) → first line from ``/etc/rc`` (the first
console line after the root mount that is not a kernel message) → ready (judged by the
readiness probe). :class:`StageDetector` is pure: feed it lines with their times.
"""

from __future__ import annotations

import re
from typing import NamedTuple

STAGES = ("exec", "first_byte", "banner", "root", "rc", "ready")
LABELS = {
    "exec": "QEMU exec",
    "first_byte": "first console byte",
    "banner": "kernel banner",
    "root": "root mounted",
    "rc": "first rc line",
    "ready": "ready",
}

BANNER = r"^NetBSD \d+\.\d+\S* \([^)]*\) #\d+"
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
        if "banner" not in self.times and re.match(BANNER, line):
            self.mark("banner", t)
            new.append("banner")
        elif "root" not in self.times and line.startswith(ROOT):
            self.mark("root", t)
            new.append("root")
        elif "root" in self.times and "rc" not in self.times and not re.match(KERNEL_LINE, line):
            self.mark("rc", t)
            new.append("rc")
        return new


class TimingReport(NamedTuple):
    """Seconds: ``total`` from the command start to ready; stages from QEMU's exec."""

    total: float | None
    startup: float  # command start → QEMU exec (the launcher's own overhead)
    stages: dict[str, float | None]  # stage → seconds since QEMU exec, None if not seen

    def to_json(self) -> dict[str, object]:
        return {"total": _r(self.total), "startup": _r(self.startup),
                "stages": {k: _r(v) for k, v in self.stages.items()}}

    def human(self) -> str:
        rows = [f"  {'launcher start-up':20} {self.startup * 1e3:8.1f} ms"]
        prev = 0.0
        for stage in STAGES[1:]:
            t = self.stages.get(stage)
            if t is None:
                rows.append(f"  {LABELS[stage]:20} {'—':>8}")
                continue
            rows.append(f"  {LABELS[stage]:20} {t * 1e3:8.1f} ms  (+{(t - prev) * 1e3:.1f})")
            prev = t
        total = f"{self.total:.3f} s" if self.total is not None else "not ready"
        return "\n".join([f"startnb: ready in {total} (from command start; stages from "
                          "QEMU exec)", *rows])


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def report(command_start: float, detector: StageDetector) -> TimingReport:
    """Build the report; ``detector.times`` must hold ``exec`` (same clock as the start)."""
    t = detector.times
    exec_t = t.get("exec", command_start)
    stages = {s: (t[s] - exec_t if s in t else None) for s in STAGES[1:]}
    total = t["ready"] - command_start if "ready" in t else None
    return TimingReport(total=total, startup=exec_t - command_start, stages=stages)
