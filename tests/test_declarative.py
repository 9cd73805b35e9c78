"""`pgjobs schedule apply FILE`: idempotent upsert from TOML/YAML, --prune, --dry-run, all-or-nothing validation."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from pgjobs import declarative
from pgjobs.declarative import ScheduleFileError

EXAMPLE = ROOT / "examples" / "schedules.toml"

TOML = """
[schedules.refresh]
cron = "*/2 * * * *"
task = "pgjobs.refresh_materialized_view"
args = { view = "otel_trace_summaries" }

[schedules."nightly report"]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
task = "pgjobs.noop"
catchup = "none"
"""

YAML = """
schedules:
  - name: refresh
    cron: "*/2 * * * *"
    task: pgjobs.refresh_materialized_view
    args: {view: otel_trace_summaries}
  - name: nightly report
    cron: "0 3 * * *"
    timezone: Europe/Berlin
    task: pgjobs.noop
    catchup: none
"""


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, "schedule", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def names(admin) -> list[str]:
    return sorted(s["name"] for s in admin.list_schedules())


def test_apply_creates_then_a_second_apply_changes_nothing(admin, db_url, tmp_path):
    path = write(tmp_path, "schedules.toml", TOML)
    out = cli(db_url, "apply", str(path))
    assert out.returncode == 0, out.stderr
    assert "create     refresh:" in out.stdout and "applied: 2 created, 0 updated, 0 removed" in out.stdout
    assert names(admin) == ["nightly report", "refresh"]
    nightly = admin.get_schedule("nightly report")
    assert (nightly["timezone"], nightly["catchup"], nightly["cron"]) == ("Europe/Berlin", "none", "0 3 * * *")
    audit = admin.audit(entity_name="refresh")
    assert [a["action"] for a in audit] == ["create"] and audit[0]["actor"] == f"os:{getpass.getuser()}"

    again = cli(db_url, "apply", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "applied: 0 created, 0 updated, 0 removed, 2 unchanged"
    assert len(admin.audit(entity_name="refresh")) == 1  # nothing written the second time


def test_yaml_and_toml_files_mean_the_same(admin, tmp_path):
    declarative.apply_file(admin, write(tmp_path, "s.toml", TOML))
    changes = declarative.apply_file(admin, write(tmp_path, "s.yaml", YAML))
    assert [c.action for c in changes] == ["unchanged", "unchanged"]


def test_dry_run_prints_the_diff_and_writes_nothing(admin, db_url, tmp_path):
    declarative.apply_file(admin, write(tmp_path, "s.toml", TOML))
    admin.add_schedule("legacy", cron="@hourly", task="pgjobs.noop")
    edited = TOML.replace('"0 3 * * *"', '"30 2 * * *"').replace('catchup = "none"', 'catchup = "all"') + """
[schedules.new-one]
cron = "1 second"
task = "pgjobs.noop"
"""
    path = write(tmp_path, "edited.toml", edited)
    audit_before = admin.audit(limit=1000)
    out = cli(db_url, "apply", str(path), "--prune", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "update     nightly report: cron: '0 3 * * *' -> '30 2 * * *'; catchup: 'none' -> 'all'" in lines
    assert any(line.startswith("create     new-one: cron='1 second', task='pgjobs.noop'") for line in lines)
    assert "remove     legacy" in lines
    assert lines[-1] == "dry run, nothing written: 1 to create, 1 to update, 1 to remove, 1 unchanged"
    assert admin.audit(limit=1000) == audit_before
    assert names(admin) == ["legacy", "nightly report", "refresh"]

    as_json = json.loads(cli(db_url, "apply", str(path), "--prune", "--dry-run", "--json").stdout)
    update = next(c for c in as_json["changes"] if c["action"] == "update")
    assert update["changes"]["cron"] == {"before": "0 3 * * *", "after": "30 2 * * *"}

    # Without --dry-run the same diff is applied; --prune removes what the file does not list.
    out = cli(db_url, "apply", str(path), "--prune")
    assert out.returncode == 0, out.stderr
    assert names(admin) == ["new-one", "nightly report", "refresh"]
    nightly = admin.get_schedule("nightly report")
    assert (nightly["cron"], nightly["catchup"]) == ("30 2 * * *", "all")
    edit = admin.audit(entity_name="nightly report")[0]
    assert edit["action"] == "edit" and edit["before"]["cron"] == "0 3 * * *" and edit["after"]["cron"] == "30 2 * * *"


def test_without_prune_unlisted_schedules_stay(admin, tmp_path):
    admin.add_schedule("legacy", cron="@hourly", task="pgjobs.noop")
    declarative.apply_file(admin, write(tmp_path, "s.toml", TOML))
    assert names(admin) == ["legacy", "nightly report", "refresh"]


def test_a_paused_schedule_stays_paused_unless_the_file_says_enabled(admin, tmp_path):
    path = write(tmp_path, "s.toml", TOML)
    declarative.apply_file(admin, path)
    admin.pause_schedule("refresh")
    assert [c.action for c in declarative.apply_file(admin, path)] == ["unchanged", "unchanged"]
    assert admin.get_schedule("refresh")["enabled"] is False
    explicit = write(tmp_path, "e.toml", TOML.replace('args = { view = "otel_trace_summaries" }',
                                                       'args = { view = "otel_trace_summaries" }\nenabled = true'))
    changes = declarative.apply_file(admin, explicit)
    assert changes[0].action == "update" and changes[0].changes == {"enabled": (False, True)}
    assert admin.get_schedule("refresh")["enabled"] is True


@pytest.mark.parametrize(("entry", "message"), [
    ('cron = "*/61 * * * *"\ntask = "pgjobs.noop"', "schedule 'bad': cron '*/61 * * * *': minute"),
    ('cron = "@daily"\ntask = "pgjobs.noop"\ntimezone = "Mars/Olympus"', "schedule 'bad': timezone: unknown timezone"),
    ('cron = "@daily"\ntask = "app.missing"', "schedule 'bad': task 'app.missing' is not registered"),
    ('cron = "@daily"\ntask = "pgjobs.refresh_materialized_view"', "schedule 'bad': args: task "),
    ('cron = "@daily"\ntask = "pgjobs.noop"\noverlap = "sometimes"', "schedule 'bad': overlap 'sometimes'"),
    ('cron = "@daily"\ntask = "pgjobs.noop"\npriority = "high"', "schedule 'bad': priority: expected a whole"),
    ('cron = "@daily"\ntask = "pgjobs.noop"\ncronn = "x"', "schedule 'bad': cronn: unknown field"),
    ('task = "pgjobs.noop"', "schedule 'bad': cron: required"),
])
def test_an_invalid_entry_names_schedule_and_field(tmp_path, entry, message):
    # Validation needs no database: every entry is checked before anything is read or written.
    path = write(tmp_path, "s.toml", TOML + f"\n[schedules.bad]\n{entry}\n")
    with pytest.raises(ScheduleFileError) as err:
        declarative.apply_file(None, path)  # type: ignore[arg-type]
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and text.endswith("nothing was written")
    assert message in text, text


def test_invalid_entries_write_nothing_and_exit_2(admin, db_url, tmp_path):
    # The valid entries come first in the file: still nothing of it is written. Every bad entry is named.
    bad = '\n[schedules.bad1]\ncron = "* * *"\ntask = "pgjobs.noop"\n[schedules.bad2]\ncron = "@daily"\ntask = "x.y"\n'
    out = cli(db_url, "apply", str(write(tmp_path, "s.toml", TOML + bad)))
    assert out.returncode == 2
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pgjobs: error: ") and "schedule 'bad1': cron" in err
    assert "schedule 'bad2': task 'x.y' is not registered" in err
    assert names(admin) == [] and admin.audit() == []


def test_file_level_errors_are_one_line(tmp_path):
    cases = {
        "a.toml": ("[schedules.x\ncron = 1", "invalid TOML"),
        "b.yaml": ("schedules:\n  x:\n    cron: */5 * * * *\n", "quote cron expressions"),
        "c.json": ("{}", "unknown file type '.json'"),
        "d.toml": ("[schedule.x]\ncron = '@daily'", "unknown top-level key(s) schedule"),
    }
    for name, (text, message) in cases.items():
        with pytest.raises(ScheduleFileError, match=None) as err:
            declarative.load_file(write(tmp_path, name, text))
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ScheduleFileError, match="cannot read"):
        declarative.load_file(tmp_path / "missing.toml")


def test_a_failure_while_applying_rolls_back_everything(admin, tmp_path, monkeypatch):
    path = write(tmp_path, "s.toml", TOML)
    real_add = type(admin).add_schedule

    def add_then_fail(self, name, **kw):
        if name == "refresh":
            raise declarative.AdminError("simulated failure on the second schedule")
        return real_add(self, name, **kw)

    monkeypatch.setattr(type(admin), "add_schedule", add_then_fail)
    with pytest.raises(declarative.AdminError, match="simulated"):
        declarative.apply_file(admin, path)
    monkeypatch.undo()
    assert names(admin) == [] and admin.audit() == []


def test_the_example_file_applies(admin, db_url):
    out = cli(db_url, "apply", str(EXAMPLE), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("dry run, nothing written: 3 to create")
    assert cli(db_url, "apply", str(EXAMPLE)).returncode == 0
    assert names(admin) == ["heartbeat", "morning-report", "refresh-trace-summaries"]
    assert cli(db_url, "apply", str(EXAMPLE)).stdout.strip().endswith("3 unchanged")


def test_the_schedule_policies_are_fields_of_the_file(admin, tmp_path):
    path = write(tmp_path, "s.toml", """
[schedules.spread]
cron = "*/5 * * * *"
task = "pgjobs.noop"
overlap = "queue"
catchup_window_seconds = "1h"
jitter_seconds = "90s"
pause_after_failures = 4
""")
    assert [c.action for c in declarative.apply_file(admin, path)] == ["create"]
    sc = admin.get_schedule("spread")
    assert (sc["overlap"], sc["catchup_window_seconds"], sc["jitter_seconds"], sc["pause_after_failures"]) == (
        "buffer_all", 3600.0, 90.0, 4)
    assert [c.action for c in declarative.apply_file(admin, path)] == ["unchanged"]
    bad = write(tmp_path, "bad.toml", '[schedules.x]\ncron = "@daily"\ntask = "pgjobs.noop"\njitter_seconds = "2 days"\n')
    with pytest.raises(ScheduleFileError, match="jitter"):
        declarative.apply_file(admin, bad)
