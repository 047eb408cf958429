"""The timing report of a boot: seconds from the command start to QEMU's exec, and from
the exec to each stage :mod:`launcher.stagescan` finds on the console (re-exported here)."""

from __future__ import annotations

from .stagescan import BANNER, KERNEL_LINE, ROOT, StageDetector

__all__ = ["BANNER", "KERNEL_LINE", "LABELS", "ROOT", "STAGES", "StageDetector",
           "TimingReport", "report"]

STAGES = ("exec", "first_byte", "banner", "root", "rc", "ready")
LABELS = {
    "exec": "QEMU exec",
    "first_byte": "first console byte",
    "banner": "kernel banner",
    "root": "root mounted",
    "rc": "first rc line",
    "ready": "ready",
}


class TimingReport:
    """Seconds: ``total`` from the command start to ready; stages from QEMU's exec. (A
    plain class: ``typing.NamedTuple`` would cost a detached run from its plan 5 ms of
    imports while the guest boots.)"""

    __slots__ = ("stages", "startup", "total")

    def __init__(self, total: float | None, startup: float,
                 stages: dict[str, float | None]) -> None:
        self.total = total
        self.startup = startup  # command start → QEMU exec (the launcher's own overhead)
        self.stages = stages  # stage → seconds since QEMU exec, None if not seen

    def __repr__(self) -> str:
        return (f"TimingReport(total={self.total!r}, startup={self.startup!r}, "
                f"stages={self.stages!r})")

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
