"""Human-readable listing of a kernel's driver table (``kstrip --list``)."""

from __future__ import annotations

from kstrip.api import StripResult
from kstrip.cfdata import FState


def describe(result: StripResult) -> str:
    """One line about the kernel: release, architecture, layout."""
    release = f"NetBSD {result.version}" if result.version else "NetBSD (version unknown)"
    gz = ", gzip" if result.compressed else ""
    return f"{result.kernel}: {release}, {result.arch} ({result.bits}-bit{gz}), " \
           f"{result.layout.label} table layout"


def format_table(result: StripResult) -> str:
    """Index, driver, attachment, unit, state and action of every entry."""
    rows = [("index", "driver", "attachment", "unit", "state", "action")]
    for e in result.entries:
        action = e.action.label
        if e.new_state is not None:
            action += f" -> {e.new_state.name}"
        unit = f"{e.unit}*" if e.state in (FState.STAR, FState.DSTAR) else str(e.unit)
        rows.append((str(e.index), e.driver, e.attachment, unit, e.state.name, action))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [describe(result)]
    for r in rows:
        cells = [r[0].rjust(widths[0]), *(c.ljust(w) for c, w in zip(r[1:], widths[1:],
                                                                       strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.append(result.summary())
    return "\n".join(lines)
