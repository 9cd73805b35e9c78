#!/usr/bin/env python3
"""Chart a bench/pressure.py report: one PNG beside the JSON (same name, .png).

    bench/.venvs/plot/bin/python bench/pressure_chart.py bench/results/pressure-<time>.json

Runs in the bench-only plot venv that bench/run.py creates (matplotlib is not a pgjobs dependency).
Three panels over time, the hold phase shaded: offered vs completed jobs/s; pickup wait p50/p99 (ms, log
scale, the 100 ms goal dashed); dead tuples and total size of the system's tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW = 10.0


def chart(path: Path) -> Path:
    report = json.loads(path.read_text())
    w = report["windows"]
    t = [r["t"] for r in w]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    hold = [r["t"] for r in w if r["phase"] == "hold"]
    for ax in axes:
        if hold:
            ax.axvspan(hold[0] - WINDOW, hold[-1], color="orange", alpha=0.15, label="horizon held")
    axes[0].plot(t, [r["offered"] / WINDOW for r in w], label="offered jobs/s")
    axes[0].plot(t, [r["completed"] / WINDOW for r in w], label="completed jobs/s")
    axes[0].set_ylabel("jobs/s")
    axes[0].legend(loc="lower left")
    axes[1].plot(t, [r["wait_p50_ms"] for r in w], label="pickup p50")
    axes[1].plot(t, [r["wait_p99_ms"] for r in w], label="pickup p99")
    axes[1].axhline(100, ls="--", color="grey", label="100 ms goal")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms")
    axes[1].legend(loc="upper left")
    axes[2].plot(t, [r["dead_tuples"] for r in w], label="dead tuples")
    axes[2].set_ylabel("dead tuples")
    ax2 = axes[2].twinx()
    ax2.plot(t, [r["jobs_bytes"] / 2**20 for r in w], color="green", label="size MB")
    ax2.set_ylabel("MB (tables + indexes)")
    axes[2].set_xlabel("s since start")
    axes[2].legend(loc="upper left")
    ax2.legend(loc="upper right")
    s = report["settings"]
    fig.suptitle(f"pgjobs, {s.get('rate')} jobs/s offered, holder {s.get('holder')}, "
                 f"{s.get('before')}/{s.get('hold')}/{s.get('after')} s before/hold/after")
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=90)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(chart(Path(arg)))
