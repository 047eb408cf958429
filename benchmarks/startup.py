#!/usr/bin/env python3
"""Start-up time of the three commands' ``--help``, against a bare Python start.

Usage: python benchmarks/startup.py [--runs N]

Prints min and median wall time over N runs (default 20) of ``smolfs --help``,
``kstrip --help`` and ``startnb --help`` (each as ``python -m``, so the checkout is
measured), of ``python -c pass`` (the peer: the interpreter's own start-up) measured
in the same run, and the ratio of each command to the peer. Target: every command
under 80 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "python -c pass (peer)": [sys.executable, "-c", "pass"],
    "smolfs --help": [sys.executable, "-m", "smolfs", "--help"],
    "smolfs mkfs --help": [sys.executable, "-m", "smolfs", "mkfs", "--help"],
    "kstrip --help": [sys.executable, "-m", "kstrip", "--help"],
    "startnb --help": [sys.executable, "-m", "launcher", "--help"],
}


def timeit(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    results = {name: timeit(argv, args.runs) for name, argv in CASES.items()}
    peer = statistics.median(results["python -c pass (peer)"])
    print(f"{'command':24} {'min ms':>8} {'median ms':>10} {'ratio to peer':>14}")
    worst = 0.0
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:24} {min(times) * 1e3:8.1f} {med * 1e3:10.1f} {med / peer:14.2f}")
        if "peer" not in name:
            worst = max(worst, med)
    print(f"slowest command median: {worst * 1e3:.1f} ms (target < 80 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
