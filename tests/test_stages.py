"""Stage detection on real NetBSD serial consoles (timestamps as QEMU produced them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launcher.timing import StageDetector, report

#: Serial consoles of genuine NetBSD boots under QEMU (see README.md there).
CONSOLES = Path(__file__).resolve().parent / "data" / "console"

LINE = re.compile(r"^\[\s*(\d+\.\d+)\] ?(.*)$", re.S)

# log → (first byte, banner, root mounted, first rc line, ready) in seconds since QEMU start
EXPECTED = {
    "amd64-GENERIC64-tcg.log": (0.177, 0.215, 4.359, 4.389, 4.439),
    "amd64-GENERIC64-stripped-tcg.log": (0.252, 0.299, 0.645, 0.679, 0.735),
    "amd64-pvh-tcg.log": (0.162, 0.202, 0.483, 0.757, 0.912),
    "i386-multiboot-tcg.log": (0.112, 0.135, 0.393, 0.888, 1.132),
}


def replay(name: str) -> tuple[StageDetector, dict[str, str]]:
    det = StageDetector()
    det.mark("exec", 0.0)
    ready = re.compile("SERVICE READY")
    which: dict[str, str] = {}
    for raw in (CONSOLES / name).read_bytes().decode().split("\n"):
        if not raw:
            continue
        m = LINE.match(raw)
        assert m, raw
        t, text = float(m.group(1)), m.group(2)
        for stage in det.feed_line(t, text):
            which[stage] = text.strip("\r")
        if ready.search(text) and det.mark("ready", t):
            which["ready"] = text
    return det, which


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stages_on_real_consoles(name: str) -> None:
    det, which = replay(name)
    first, banner, root, rc, ready = EXPECTED[name]
    assert det.times == {"exec": 0.0, "first_byte": first, "banner": banner, "root": root,
                         "rc": rc, "ready": ready}, which
    assert which["banner"].startswith("NetBSD 7.99.4 (")
    assert which["root"] == "root file system type: ffs"
    # The first rc line is userland speaking, never a kernel message.
    assert not which["rc"].startswith(("kern.module.path", "clock:"))
    rep = report(-0.05, det)
    assert rep.stages["ready"] == ready and rep.total == pytest.approx(ready + 0.05)
    assert rep.startup == pytest.approx(0.05)


def test_generic_cdrom_probe_delays_root() -> None:
    """QEMU's default CD-ROM costs a GENERIC kernel about 3 s before it mounts root."""
    generic, _ = replay("amd64-GENERIC64-tcg.log")
    stripped, _ = replay("amd64-GENERIC64-stripped-tcg.log")
    assert generic.times["root"] - generic.times["banner"] > 3.0
    assert stripped.times["root"] - stripped.times["banner"] < 0.5


def test_detector_rules() -> None:
    det = StageDetector()
    # A banner-like line inside text, or a root line before the banner, counts as seen once.
    assert det.feed_line(0.1, "SMOLTEST cmdline NetBSD 10.1 (X) #0") == []
    assert det.feed_line(0.2, "NetBSD 10.1 (SMOLTEST) #0: Mon Jan  1 00:00:00 UTC 2024\r") \
        == ["banner"]
    assert det.feed_line(0.3, "NetBSD 10.1 (SMOLTEST) #0: again") == []
    assert det.feed_line(0.35, "Starting before root.") == []
    assert det.feed_line(0.4, "root file system type: ext2fs") == ["root"]
    assert det.feed_line(0.45, "kern.module.path=/stand/amd64/10.1/modules") == []
    assert det.feed_line(0.46, "wsdisplay0: screen 1 added") == []
    assert det.feed_line(0.47, "") == []
    assert det.feed_line(0.5, "Starting smoltest service.") == ["rc"]
    assert det.feed_line(0.6, "Starting more.") == []
    assert det.times["first_byte"] == 0.1
    rep = report(0.0, det)
    assert rep.total is None and rep.stages["ready"] is None
    assert "not ready" in rep.human() and "first rc line" in rep.human()
