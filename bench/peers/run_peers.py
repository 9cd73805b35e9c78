#!/usr/bin/env python3.11
"""Run every installed adapter through every workload and write bench/results/peers-<timestamp>.json.

Standard library only; run it with the system python3.11 after `bash bench/peers/setup.sh`:

    python3.11 bench/peers/run_peers.py                      # everything, 3 repeats
    python3.11 bench/peers/run_peers.py --repeat 1 --peers pgqueuer --workloads drain-p2,latency

For each (adapter, workload, repeat) it creates a fresh database with psql, runs the adapter once with
a timeout, drops the database (WITH (FORCE)), and keeps the adapter's last stdout line (one JSON object).
Per metric it reports min / median / max over the runs that succeeded.

Adapters are found as bench/peers/<name>_adapter.py with a venv at bench/.venvs/<name> (setup.sh writes
a `.bench-installed` marker there once the install worked). Another adapter, such as pgjobs' own, is
plugged in with `--adapter NAME=PYTHON:SCRIPT[:ARGS]` (repeatable). VARIANTS below re-run an installed
peer with other adapter options (PgQueuer with psycopg instead of asyncpg).

Nothing outlives a run: every process an adapter starts inherits BENCH_RUN_TOKEN, and after each run
any process still carrying that token in its environment is killed by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"

# name -> (adapter workload, extra adapter args, timeout in seconds for one run)
WORKLOADS: dict[str, tuple[str, list[str], int]] = {
    "drain-p1": ("drain", ["--processes", "1"], 300),
    "drain-p2": ("drain", ["--processes", "2"], 300),
    "drain-async": ("drain", ["--processes", "1", "--async-tasks"], 300),
    "enqueue": ("enqueue", [], 180),
    "latency": ("latency", [], 180),
    "cron": ("cron", [], 120),
    "idle": ("idle", [], 90),
}
# Extra runs of an installed peer with other adapter options: name -> (peer, adapter args, workloads).
VARIANTS: dict[str, tuple[str, list[str], set[str]]] = {
    "pgqueuer-psycopg": ("pgqueuer", ["--driver", "psycopg"], {"drain-p1", "drain-p2", "drain-async", "enqueue"}),
}
# Long workloads whose repeats default to --repeat-long (they vary little between runs).
LONG = {"cron", "idle"}
SETTINGS = ["server_version", "shared_buffers", "synchronous_commit", "fsync", "max_connections", "autovacuum"]


@dataclass
class AdapterSpec:
    name: str
    python: str
    script: str
    args: list[str] = field(default_factory=list)
    workloads: set[str] | None = None  # None: every workload

    @property
    def cwd(self) -> str:
        """The adapter runs in the checkout its script belongs to (the parent of its bench/ folder), so a
        `python -m ...` worker it starts imports that checkout's code: a `git worktree` plugged in with
        --adapter runs its own version, not the one of the directory the suite was started from."""
        script = Path(self.script).resolve()
        bench = next((p for p in script.parents if p.name == "bench"), None)
        return str(bench.parent if bench else script.parent)


def discover(names: list[str] | None) -> list[AdapterSpec]:
    """Installed peers, in a fixed order. A peer that setup.sh could not install is skipped, with a note."""
    specs = []
    for script in sorted(HERE.glob("*_adapter.py")):
        name = script.name.removesuffix("_adapter.py")
        if names and name not in names:
            continue
        venv = VENVS / name
        if not (venv / ".bench-installed").exists():
            print(f"skip {name}: not installed (run bench/peers/setup.sh)", file=sys.stderr)
            continue
        specs.append(AdapterSpec(name, str(venv / "bin" / "python"), str(script)))
    for variant, (peer, args, workloads) in VARIANTS.items():
        base = next((s for s in specs if s.name == peer), None)
        if base and (not names or variant in names or peer in names):
            specs.append(AdapterSpec(variant, base.python, base.script, args, workloads))
    return specs


def parse_adapter(text: str) -> AdapterSpec:
    """NAME=PYTHON:SCRIPT[:ARGS], ARGS being adapter options split like a shell would."""
    name, _, rest = text.partition("=")
    python, _, rest = rest.partition(":")
    script, _, args = rest.partition(":")
    if not (name and python and script):
        raise argparse.ArgumentTypeError(f"--adapter {text!r}: expected NAME=PYTHON:SCRIPT[:ARGS]")
    return AdapterSpec(name, python, script, shlex.split(args))


# --------------------------------------------------------------------------------------------------
# Postgres through psql (no driver in the system python)


class Server:
    def __init__(self, host: str, port: int, user: str) -> None:
        self.host, self.port, self.user = host, port, user

    def dsn(self, db: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres", timeout: float = 60) -> str:
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                db,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {out.stderr.strip()}")
        return out.stdout.strip()

    def create_db(self, db: str) -> None:
        self.drop_db(db)
        self.psql_retry(f'CREATE DATABASE "{db}"')

    def drop_db(self, db: str) -> None:
        self.psql_retry(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def psql_retry(self, sql: str, attempts: int = 6) -> str:
        """psql, retried for ~20 s: the server may be restarting (other work shares it)."""
        for attempt in range(attempts):
            try:
                return self.psql(sql)
            except RuntimeError as exc:
                print(f"attempt {attempt + 1}: {exc}", file=sys.stderr)
                time.sleep(1 + attempt)
        raise RuntimeError(f"gave up: {sql}")

    def started_at(self) -> str:
        return self.psql_retry("SELECT pg_postmaster_start_time()")

    def settings(self) -> dict[str, str]:
        return {name: self.psql(f"SHOW {name}") for name in SETTINGS}


# --------------------------------------------------------------------------------------------------
# Processes


def kill_token(token: str) -> list[int]:
    """SIGKILL every process whose environment carries BENCH_RUN_TOKEN=<token>. Returns their pids."""
    needle = f"BENCH_RUN_TOKEN={token}".encode()
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return killed


def cpu_busy(sample_s: float = 1.0) -> float:
    """Machine-wide CPU busy percentage over `sample_s`, from /proc/stat."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = read()
    time.sleep(sample_s)
    total1, idle1 = read()
    return round(100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


def wait_quiet(below: float, max_wait: float) -> float:
    """Wait (up to max_wait s) until the machine is less busy than `below` %; return the last reading.

    Other work on the machine (a test suite, another benchmark) moves results a lot on 2 cores; the
    reading is stored with each run so that a noisy run can be recognised afterwards.
    """
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy >= below and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def stop_adapter(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the adapter's process group (the adapter then stops its workers), SIGKILL after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        stdout, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
    return stdout or ""


def run_once(
    spec: AdapterSpec, workload: str, extra: list[str], dsn: str, timeout: int, log_path: Path
) -> dict:
    token = uuid.uuid4().hex
    env = dict(os.environ, BENCH_RUN_TOKEN=token, PYTHONWARNINGS="ignore")
    python = str(Path(spec.python).absolute()) if os.sep in spec.python else spec.python  # it runs in spec.cwd
    cmd = [python, str(Path(spec.script).resolve()), workload, "--dsn", dsn, *extra, *spec.args]
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True, cwd=spec.cwd
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            stdout = stop_adapter(proc)
            timed_out = True
        except BaseException:  # the runner itself is being stopped: leave nothing behind
            stop_adapter(proc)
            kill_token(token)
            raise
    strays = kill_token(token)
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"ok": False, "metrics": {}, "notes": ["no JSON result line"]}
    if timed_out:
        result["ok"] = False
        result.setdefault("notes", []).append(f"timed out after {timeout}s")
    if strays:
        result.setdefault("notes", []).append(f"killed {len(strays)} stray processes after the run")
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["exit_code"] = proc.returncode
    result["log"] = (
        str(log_path.relative_to(BENCH.parent)) if log_path.is_relative_to(BENCH.parent) else str(log_path)
    )
    return result


def summarize(runs: list[dict]) -> dict:
    good = [r for r in runs if r.get("ok")]
    metrics: dict[str, dict[str, float]] = {}
    names = sorted({k for r in good for k, v in r.get("metrics", {}).items() if isinstance(v, int | float)})
    for name in names:
        values = [r["metrics"][name] for r in good if isinstance(r["metrics"].get(name), int | float)]
        if values:
            metrics[name] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    return {"runs_ok": len(good), "runs": len(runs), "metrics": metrics}


# The columns of the summary printed at the end (the JSON file has every metric).
HEADLINE = {
    "drain-p1": ["jobs_per_s", "seconds"],
    "drain-p2": ["jobs_per_s", "seconds"],
    "drain-async": ["jobs_per_s", "seconds"],
    "enqueue": ["single_jobs_per_s", "bulk_jobs_per_s"],
    "latency": ["p50_ms", "p95_ms", "p99_ms"],
    "cron": ["late_p50_ms", "late_p99_ms", "missed", "doubled", "unsupported"],
    "idle": ["queries_per_s", "statements_per_s", "xacts_per_s", "connections"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per (adapter, workload)")
    ap.add_argument("--repeat-long", type=int, default=1, help=f"runs of the long workloads {sorted(LONG)}")
    ap.add_argument("--peers", help="comma-separated adapter names (default: all installed)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {list(WORKLOADS)}")
    ap.add_argument(
        "--adapter",
        type=parse_adapter,
        action="append",
        default=[],
        help="extra adapter NAME=PYTHON:SCRIPT[:ARGS] (e.g. pgjobs)",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5432)
    ap.add_argument("--user", default="postgres")
    ap.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/peers-<ts>.json)"
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="runs again (at most this often) when postgres restarted during a run",
    )
    ap.add_argument(
        "--quiet-below",
        type=float,
        default=50.0,
        help="before each run, wait until machine CPU busy%% (1 s sample) is below this",
    )
    ap.add_argument("--quiet-wait", type=float, default=5.0, help="... but at most this many seconds")
    ap.add_argument("adapter_args", nargs="*", help="after --: passed to every adapter (e.g. -- --jobs 5000)")
    ap.add_argument("--table", type=Path, help="print a Markdown table of an existing report and exit")
    a = ap.parse_args()
    if a.table:
        print(markdown_table(json.loads(a.table.read_text())))
        return 0

    wanted = [w.strip() for w in a.workloads.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; known: {list(WORKLOADS)}")
    peers = discover(a.peers.split(",") if a.peers else None) + a.adapter
    if not peers:
        print("no adapter installed: run bash bench/peers/setup.sh", file=sys.stderr)
        return 2

    server = Server(a.host, a.port, a.user)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = a.out or RESULTS / f"peers-{stamp}.json"
    logs = RESULTS / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
        },
        "postgres": server.settings(),
        "repeat": a.repeat,
        "repeat_long": a.repeat_long,
        "results": {},
    }
    print(f"postgres: {report['postgres']}", file=sys.stderr)
    db_prefix = f"bench_{os.getpid()}"

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    t_suite = time.monotonic()
    all_runs: dict[tuple[str, str], list[dict]] = {}
    try:
        # Repeats are the outer loop and peers the inner one, so that a burst of load from elsewhere on
        # the machine lands on every peer alike instead of on all repeats of one peer.
        for wname in wanted:
            workload, extra, timeout = WORKLOADS[wname]
            for i in range(a.repeat_long if wname in LONG else a.repeat):
                for spec in peers:
                    if spec.workloads is not None and wname not in spec.workloads:
                        continue
                    for attempt in range(1 + a.retries):
                        busy = wait_quiet(a.quiet_below, a.quiet_wait)
                        db = re.sub(r"[^a-z0-9_]", "_", f"{db_prefix}_{spec.name}_{wname}_{i}".lower())
                        server.create_db(db)
                        boot = server.started_at()
                        try:
                            r = run_once(
                                spec,
                                workload,
                                [*extra, *a.adapter_args],
                                server.dsn(db),
                                timeout,
                                logs / f"{spec.name}-{wname}-{i}-{attempt}.log",
                            )
                        finally:
                            server.drop_db(db)
                        r["cpu_busy_before_pct"] = busy
                        if server.started_at() == boot:
                            break
                        # Someone restarted the server during the run: the result says nothing about the
                        # peer. Keep it (marked) and run again.
                        r["ok"] = False
                        r.setdefault("notes", []).append("postgres restarted during the run")
                        print(
                            f"{spec.name} {wname} #{i + 1}: postgres restarted during the run, again",
                            file=sys.stderr,
                        )
                    all_runs.setdefault((spec.name, wname), []).append(r)
                    shown = {
                        k: r.get("metrics", {}).get(k) for k in HEADLINE[wname] if k in r.get("metrics", {})
                    }
                    print(
                        f"{spec.name:16} {wname:9} #{i + 1} ok={r.get('ok')} {shown} "
                        f"(wall {r['wall_s']}s, cpu busy before {busy}%)"
                        f"{' ' + '; '.join(r.get('notes', [])) if not r.get('ok') else ''}",
                        file=sys.stderr,
                        flush=True,
                    )
    except KeyboardInterrupt:
        report["interrupted"] = True
        print("interrupted: writing what was measured", file=sys.stderr)
    for spec in peers:
        for wname in wanted:
            runs = all_runs.get((spec.name, wname))
            if runs:
                report["results"].setdefault(spec.name, {})[wname] = {
                    "version": next((r.get("version") for r in runs if r.get("version")), None),
                    "settings": next((r.get("settings") for r in runs if r.get("settings")), {}),
                    **summarize(runs),
                    "raw": runs,
                }
    report["suite_s"] = round(time.monotonic() - t_suite, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    print_summary(report)
    print(f"\nwrote {out} (logs in {logs}) in {report['suite_s']}s", file=sys.stderr)
    return 0


def print_summary(report: dict) -> None:
    print("\nmedian [min..max] per metric")
    for peer, workloads in report["results"].items():
        for wname, res in workloads.items():
            cells = []
            for k in HEADLINE[wname]:
                m = res["metrics"].get(k)
                if m:
                    cells.append(f"{k}={_fmt(m['median'])} [{_fmt(m['min'])}..{_fmt(m['max'])}]")
            print(f"{peer:14} {wname:9} {res['runs_ok']}/{res['runs']} ok  " + "  ".join(cells))


# Columns of the Markdown table: header -> [(workload, metric), ...] shown as "a / b / c".
TABLE = {
    "drain P=1 jobs/s": [("drain-p1", "jobs_per_s")],
    "drain P=2 jobs/s": [("drain-p2", "jobs_per_s")],
    "drain async P=1 jobs/s": [("drain-async", "jobs_per_s")],
    "enqueue single / bulk jobs/s": [("enqueue", "single_jobs_per_s"), ("enqueue", "bulk_jobs_per_s")],
    "pickup p50 / p95 / p99 ms": [("latency", "p50_ms"), ("latency", "p95_ms"), ("latency", "p99_ms")],
    "cron late p50 / p99 ms": [("cron", "late_p50_ms"), ("cron", "late_p99_ms")],
    "cron missed / doubled (of slots)": [("cron", "missed"), ("cron", "doubled")],
    "idle queries/s (statements/s), conns": [("idle", "queries_per_s")],
}


def markdown_table(report: dict) -> str:
    """Headline metrics of a report as a Markdown table: medians, with [min-max] when runs differ."""

    def cell(res: dict, wname: str, metric: str) -> str:
        m = res.get(wname, {}).get("metrics", {}).get(metric)
        if m is None:
            return "-"
        spread = "" if m["min"] == m["max"] else f" [{_fmt(m['min'])}-{_fmt(m['max'])}]"
        return f"{_fmt(m['median'])}{spread}"

    out = ["| system | " + " | ".join(TABLE) + " |", "|" + " --- |" * (len(TABLE) + 1)]
    for peer, res in report["results"].items():
        cells = []
        for header, parts in TABLE.items():
            if parts[0][0] == "cron" and res.get("cron", {}).get("metrics", {}).get("unsupported"):
                cells.append("unsupported")
            elif header.startswith("cron missed"):
                slots = res.get("cron", {}).get("metrics", {}).get("slots", {}).get("median")
                text = " / ".join(cell(res, w, k) for w, k in parts)
                cells.append(f"{text} ({_fmt(slots)})" if slots else text)
            elif header.startswith("idle"):
                stm, conns = cell(res, "idle", "statements_per_s"), cell(res, "idle", "connections")
                cells.append(f"{cell(res, 'idle', 'queries_per_s')} ({stm}), {conns}")
            else:
                cells.append(" / ".join(cell(res, w, k) for w, k in parts))
        out.append(f"| {peer} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


if __name__ == "__main__":
    sys.exit(main())
