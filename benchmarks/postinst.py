#!/usr/bin/env python3
"""What running a postinst script costs: the guard, and bubblewrap, each against its peer.

One trivial script (``true``) is run N times (default 20) each way, interleaved so that
all ways see the same machine load:

- **plain**: ``sh -c 'umask 022; exec sh -e SCRIPT'`` run directly (no guard), as the
  build ran scripts before the guard existed;
- **guarded**: the same command under :mod:`smolfs.guard` (own process group, subreaper,
  everything killed at the end), as the build runs scripts without bubblewrap;
- **guarded+bwrap**: the confined command under the guard, as the build runs scripts
  where bubblewrap works (skipped when it does not).

Prints min and median milliseconds per way, and the ratios of the medians
(guarded / plain, guarded+bwrap / guarded): the fixed cost each script pays, once per
script per build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smolfs.image.postinst import bwrap_problem, host_view, script_argv
from smolfs.run import run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=20, help="runs per way (default 20)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-postinst-") as d:
        script = Path(d) / "svc/postinst/10-true.sh"
        script.parent.mkdir(parents=True)
        script.write_text("true\n")
        staging = Path(d) / "root"
        staging.mkdir()
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": d}
        plain = script_argv(script, staging, confined=False)
        ways: dict[str, tuple[list[str], bool]] = {"plain": (plain, False),
                                                   "guarded": (plain, True)}
        problem = bwrap_problem()
        if problem is None:
            ways["guarded+bwrap"] = (script_argv(script, staging, True, host_view()), True)
        else:
            print(f"guarded+bwrap skipped: {problem}")
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.runs):
            for way, (argv, contain) in ways.items():
                start = time.perf_counter()
                run(argv, cwd=str(staging), env=env, contain=contain)
                times[way].append(time.perf_counter() - start)
    med = {w: statistics.median(t) for w, t in times.items()}
    for way, t in times.items():
        print(f"{way:14} min {min(t) * 1000:7.1f} ms   median {med[way] * 1000:7.1f} ms")
    print(f"guarded / plain (medians): {med['guarded'] / med['plain']:.1f}")
    if "guarded+bwrap" in med:
        print(f"guarded+bwrap / guarded (medians): {med['guarded+bwrap'] / med['guarded']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
