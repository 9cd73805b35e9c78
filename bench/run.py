#!/usr/bin/env python3
"""The benchmark suite in one command: pgjobs and every peer, same Postgres, same run.

    python3 bench/run.py                 # setup peers, 3 runs of everything, JSON + PNG in bench/results/
    python3 bench/run.py --repeat 1 --workloads drain-p2,latency --no-extra     # a quick look

Steps (standard library only; matplotlib lives in a bench-only venv, bench/.venvs/plot):
1. `bash bench/peers/setup.sh` (peers in their own venvs; idempotent) and the plot venv;
2. `bench/peers/run_peers.py` with pgjobs plugged in (`--adapter pgjobs=.venv/bin/python:bench/pgjobs_adapter.py`):
   drain (1 and 2 processes), enqueue, latency, cron and idle, for every system, fresh database per run,
   `--repeat` runs each (also for cron and idle);
3. the leader and runtime-schedule workloads, `--repeat` runs each: `bench/takeover.py` (leader takeover after
   kill -9, 20 kills, 3 workers) and `bench/schedules_due.py` (10,000 schedules due at one instant); chancy,
   the one peer with a leader and schedules in a table, through `bench/peers/chancy_takeover.py` (one run of
   `--chancy-kills` kills: minutes each) and `bench/peers/chancy_schedules_due.py`; the other peers' entries
   say why they are not measured (no leader / schedules defined in code);
4. `bench/results/<timestamp>.json`: Postgres settings, machine, per system and workload min/median/max of
   each metric, and the table (pgjobs, each peer, pgjobs/peer); `bench/results/<timestamp>.png`: the table
   and one bar chart per headline metric.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PLOT_VENV = BENCH / ".venvs" / "plot"
PROJECT_PY = ROOT / ".venv" / "bin" / "python"
CHANCY_PY = BENCH / ".venvs" / "chancy" / "bin" / "python"

# workload -> [(metric, higher_is_better)]: the table's rows.
HEADLINE: dict[str, list[tuple[str, bool]]] = {
    "drain-p1": [("jobs_per_s", True)],
    "drain-p2": [("jobs_per_s", True)],
    "drain-async": [("jobs_per_s", True)],
    "enqueue": [("bulk_jobs_per_s", True), ("single_jobs_per_s", True)],
    "latency": [("p50_ms", False), ("p99_ms", False)],
    "cron": [("late_p50_ms", False), ("late_p99_ms", False), ("missed", False)],
    "idle": [("queries_per_s", False)],
    "takeover": [("p50_ms", False), ("p99_ms", False)],
    "schedules_due": [("all_jobs_s", False), ("start_p99_s", False)],
}
TARGETS = {  # issue 6, for the table's last column
    ("drain-p2", "jobs_per_s"): ">= 2x fastest peer",
    ("drain-p1", "jobs_per_s"): ">= 2x fastest peer",
    ("enqueue", "bulk_jobs_per_s"): ">= 1.5x fastest peer",
    ("latency", "p50_ms"): "< 2 ms",
    ("latency", "p99_ms"): "< 4 ms",
    ("cron", "late_p99_ms"): "< 20 ms",
    ("takeover", "p99_ms"): "< 1000 ms",
    ("schedules_due", "all_jobs_s"): "< 1 s",
    ("idle", "queries_per_s"): "<= 1",
}
# Why a peer has no number for a pgjobs-only workload (read in their source and docs; see bench/README.md).
NOT_MEASURED = {
    "takeover": {
        "procrastinate": "no leader: every worker defers periodic tasks, a unique constraint drops duplicates",
        "pgqueuer": "no leader: workers claim schedule rows with SKIP LOCKED and a heartbeat",
        "pgqueuer-psycopg": "no leader (as pgqueuer)",
        "chancy": "not run (--no-chancy-extra or chancy not installed): bench/peers/chancy_takeover.py",
        "awa": "not measured: awa has a maintenance leader, but no takeover adapter was written for it",
    },
    "schedules_due": {
        "procrastinate": "unsupported: periodic tasks are defined in code (@app.periodic), not at runtime",
        "pgqueuer": "unsupported: schedules are registered in code (@pgq.schedule), not at runtime",
        "pgqueuer-psycopg": "unsupported (as pgqueuer)",
        "chancy": "not run (--no-chancy-extra or chancy not installed): bench/peers/chancy_schedules_due.py",
        "awa": "not measured: schedules are registered in code (client.periodic) and synced by the leader",
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarize(runs: list[dict]) -> dict:
    good = [r for r in runs if r.get("ok")]
    metrics = {}
    for name in sorted({k for r in good for k, v in r["metrics"].items() if isinstance(v, int | float)}):
        values = [r["metrics"][name] for r in good if isinstance(r["metrics"].get(name), int | float)]
        metrics[name] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    return {"runs_ok": len(good), "runs": len(runs), "metrics": metrics, "raw": runs}


def run_json(cmd: list[str], timeout: float) -> dict:
    log("$ " + " ".join(cmd))
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "metrics": {}, "notes": [f"timed out after {timeout}s"]}
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "metrics": {}, "notes": ["no JSON result", out.stderr[-2000:]]}


def build_table(results: dict) -> list[dict]:
    peers = [p for p in results if p != "pgjobs"]
    rows = []
    for workload, metrics in HEADLINE.items():
        for metric, higher in metrics:
            def median(system: str, m: str = metric, w: str = workload) -> float | None:
                res = results.get(system, {}).get(w)
                cell = res and res["metrics"].get(m)
                return cell["median"] if cell else None

            def note(system: str, w: str = workload) -> str | None:
                res = results.get(system, {}).get(w)
                if res is None:
                    return NOT_MEASURED.get(w, {}).get(system)
                if "unsupported" in res["metrics"]:
                    return "unsupported"
                return None

            mine = median("pgjobs")
            row = {"workload": workload, "metric": metric, "higher_is_better": higher, "pgjobs": mine,
                   "pgjobs_range": _range(results, "pgjobs", workload, metric), "peers": {},
                   "target": TARGETS.get((workload, metric))}
            for p in peers:
                theirs = median(p)
                ratio = float(f"{mine / theirs:.3g}") if mine is not None and theirs not in (None, 0) else None
                row["peers"][p] = {"median": theirs, "range": _range(results, p, workload, metric),
                                   "ratio": ratio, "note": note(p) if theirs is None else None}
            rows.append(row)
    return rows


def _range(results: dict, system: str, workload: str, metric: str) -> list[float] | None:
    res = results.get(system, {}).get(workload)
    cell = res and res["metrics"].get(metric)
    return [cell["min"], cell["max"]] if cell else None


def print_table(rows: list[dict]) -> None:
    peers = list(rows[0]["peers"]) if rows else []
    head = f"{'workload':14} {'metric':18} {'pgjobs':>10} " + " ".join(f"{p[:16]:>24}" for p in peers)
    print(head)
    for r in rows:
        cells = []
        for p in peers:
            c = r["peers"][p]
            cells.append(f"{_fmt(c['median'])} (x{_fmt(c['ratio'])})" if c["median"] is not None
                         else (c["note"] or "-")[:24])
        print(f"{r['workload']:14} {r['metric']:18} {_fmt(r['pgjobs']):>10} " + " ".join(f"{c:>24}" for c in cells))


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def plot(path: Path) -> None:
    """Runs in the plot venv: the table and one bar chart per headline metric (log scale, median + range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(path.read_text())
    rows = report["table"]
    peers = list(rows[0]["peers"]) if rows else []
    systems = ["pgjobs", *peers]
    n = len(rows)
    cols = 4
    chart_rows = (n + cols - 1) // cols
    fig = plt.figure(figsize=(5 * cols, 3.2 * chart_rows + 0.42 * n + 2.5))
    gs = fig.add_gridspec(chart_rows + 1, cols, height_ratios=[0.42 * n / 3.2 + 0.6] + [1] * chart_rows)
    ax = fig.add_subplot(gs[0, :])
    ax.axis("off")
    cell_text = []
    for r in rows:
        line = [r["workload"], r["metric"] + (" ↑" if r["higher_is_better"] else " ↓"), _fmt(r["pgjobs"])]
        for p in peers:
            c = r["peers"][p]
            line.append(f"{_fmt(c['median'])}  (x{_fmt(c['ratio'])})" if c["median"] is not None else
                        ("n/a" if not c["note"] else c["note"].split(":")[0][:22]))
        line.append(r["target"] or "")
        cell_text.append(line)
    table = ax.table(cellText=cell_text, colLabels=["workload", "metric", "pgjobs", *[f"{p} (pgjobs/peer)" for p in peers],
                                                    "target"], loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.3)
    pg = report.get("postgres", {})
    ax.set_title(f"pgjobs vs peers, median of {report.get('repeat')} runs ({report['started']}); PostgreSQL "
                 f"{pg.get('server_version', '?').split()[0]}, shared_buffers {pg.get('shared_buffers')}, fsync "
                 f"{pg.get('fsync')}, synchronous_commit {pg.get('synchronous_commit')}, autovacuum "
                 f"{pg.get('autovacuum', '?')}; "
                 f"{report['machine']['cpus']} CPUs", fontsize=10)
    colors = {"pgjobs": "#2a7ab9"}
    for i, r in enumerate(rows):
        a = fig.add_subplot(gs[1 + i // cols, i % cols])
        names, meds, lo, hi = [], [], [], []
        for s in systems:
            med = r["pgjobs"] if s == "pgjobs" else r["peers"][s]["median"]
            rng = r["pgjobs_range"] if s == "pgjobs" else r["peers"][s]["range"]
            if med is None:
                continue
            names.append(s)
            meds.append(max(med, 1e-3))
            lo.append(max(med - rng[0], 0) if rng else 0)
            hi.append(max(rng[1] - med, 0) if rng else 0)
        a.bar(names, meds, yerr=[lo, hi], color=[colors.get(s, "#aaaaaa") for s in names], capsize=3)
        if meds and max(meds) / max(min(meds), 1e-3) > 20:
            a.set_yscale("log")
        a.set_title(f"{r['workload']}: {r['metric']} ({'higher' if r['higher_is_better'] else 'lower'} is better)",
                    fontsize=9)
        a.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(out)


def ensure_plot_venv() -> Path | None:
    py = PLOT_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PLOT_VENV)], check=False)
    if subprocess.run([str(py), "-c", "import matplotlib"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"],
                       check=False)
    ok = subprocess.run([str(py), "-c", "import matplotlib"], capture_output=True).returncode == 0
    return py if ok else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs of every (system, workload), cron and idle too")
    ap.add_argument("--workloads", default="drain-p1,drain-p2,drain-async,enqueue,latency,cron,idle",
                    help="harness workloads (bench/peers/run_peers.py names)")
    ap.add_argument("--peers", help="comma-separated peers (default: all installed)")
    ap.add_argument("--no-setup", action="store_true", help="skip bench/peers/setup.sh")
    ap.add_argument("--no-extra", action="store_true", help="skip takeover and schedules_due")
    ap.add_argument("--kills", type=int, default=20, help="takeover: kills per run")
    ap.add_argument("--chancy-kills", type=int, default=5,
                    help="chancy's takeover: kills, in one run (each takes 1-2.5 minutes: its lease is 120 s)")
    ap.add_argument("--no-chancy-extra", action="store_true",
                    help="skip chancy's takeover (~15 min) and 10,000-schedule runs")
    ap.add_argument("--plot", type=Path, help=argparse.SUPPRESS)  # internal: run in the plot venv
    a = ap.parse_args()
    if a.plot:
        plot(a.plot)
        return 0

    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    if not a.no_setup:
        subprocess.run(["bash", str(BENCH / "peers" / "setup.sh")], cwd=ROOT, check=False)
    plot_py = ensure_plot_venv()

    harness_out = RESULTS / f"{stamp}-harness.json"
    cmd = [sys.executable, str(BENCH / "peers" / "run_peers.py"), "--repeat", str(a.repeat),
           "--repeat-long", str(a.repeat), "--workloads", a.workloads, "--out", str(harness_out),
           "--adapter", f"pgjobs={PROJECT_PY}:{BENCH / 'pgjobs_adapter.py'}"]
    if a.peers:
        cmd += ["--peers", a.peers]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=False)
    report = json.loads(harness_out.read_text())
    results = {system: {w: {k: v for k, v in res.items()} for w, res in ws.items()}
               for system, ws in report["results"].items()}

    if not a.no_extra:
        extra: dict[str, list[dict]] = {"takeover": [], "schedules_due": []}
        for i in range(a.repeat):
            extra["takeover"].append(run_json([str(PROJECT_PY), "bench/takeover.py", "--kills", str(a.kills)], 600))
            extra["schedules_due"].append(run_json([str(PROJECT_PY), "bench/schedules_due.py"], 300))
            log(f"extra run {i + 1}: takeover {extra['takeover'][-1].get('metrics')}, "
                f"schedules_due {extra['schedules_due'][-1].get('metrics')}")
        for w, runs in extra.items():
            results.setdefault("pgjobs", {})[w] = summarize(runs)
        # chancy is the one peer with a leader and runtime cron rows. Its schedules run --repeat times; its
        # takeover once, with --chancy-kills kills (minutes each), and p50/p99 over those kills.
        wanted = not a.peers or "chancy" in a.peers.split(",")
        if wanted and not a.no_chancy_extra and (BENCH / ".venvs" / "chancy" / ".bench-installed").exists():
            due = [run_json([str(CHANCY_PY), "bench/peers/chancy_schedules_due.py"], 300) for _ in range(a.repeat)]
            log(f"chancy schedules_due: {[r.get('metrics', {}).get('all_jobs_s') for r in due]}")
            takeover = run_json([str(CHANCY_PY), "bench/peers/chancy_takeover.py", "--kills", str(a.chancy_kills)],
                                a.chancy_kills * 420 + 300)
            log(f"chancy takeover: {takeover.get('metrics')}")
            results.setdefault("chancy", {}).update(schedules_due=summarize(due), takeover=summarize([takeover]))

    final = {
        "started": report["started"],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**report["machine"], "loadavg_at_end": os.getloadavg()},
        "postgres": report["postgres"],
        "repeat": a.repeat,
        "harness_report": str(harness_out.relative_to(ROOT)),
        "not_measured": NOT_MEASURED,
        "table": build_table(results),
        "results": results,
    }
    out.write_text(json.dumps(final, indent=2) + "\n")
    print_table(final["table"])
    if plot_py:
        subprocess.run([str(plot_py), __file__, "--plot", str(out)], cwd=ROOT, check=False)
    else:
        log("matplotlib unavailable (bench/.venvs/plot): no PNG")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
