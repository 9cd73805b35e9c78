"""Settings are defined once (config.Settings, one `Setting` per field): loading from the environment, the CLI
flags and their help, and the configuration reference all derive from that table. No database."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import fields
from pathlib import Path

import pytest

from pgjobs import cli, docgen
from pgjobs.config import SETTINGS, ConfigError, Settings, default_text, flag_help

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for spec in SETTINGS.values():
        monkeypatch.delenv(spec.env, raising=False)
        if spec.fallback_env:
            monkeypatch.delenv(spec.fallback_env, raising=False)
    return monkeypatch


def _good_text(name: str) -> tuple[str, object]:
    """A valid variable value other than the default, and the value it loads as."""
    spec = SETTINGS[name]
    default = Settings.__dataclass_fields__[name].default
    if spec.kind == "float":
        value = spec.hi if spec.hi is not None and default != spec.hi else (spec.lo or 0) + 1
        return repr(float(value)), float(value)
    if spec.kind == "int":
        value = int(spec.hi if spec.hi is not None and default != spec.hi else (spec.lo or 0) + 1)
        return str(value), value
    if spec.kind == "bool":
        return ("off", False) if default else ("on", True)
    if spec.kind == "list":
        return "alpha, beta.x", ("alpha", "beta.x")
    if spec.choices:
        other = next(c for c in spec.choices if c != default)
        return other.lower(), other
    if name.endswith("database_url"):
        return "postgresql://u@h:5433/d", "postgresql://u@h:5433/d"
    if name == "schema":
        return "jobs_2", "jobs_2"
    raise AssertionError(f"no sample value for setting {name}: add one")


def test_every_field_is_a_setting_and_loads_its_default_from_an_empty_environment(clean_env) -> None:
    assert list(SETTINGS) == [f.name for f in fields(Settings)]
    loaded = Settings.load()
    for name in SETTINGS:
        assert getattr(loaded, name) == Settings.__dataclass_fields__[name].default, name


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_is_read_from_its_variable(clean_env, name: str) -> None:
    text, value = _good_text(name)
    clean_env.setenv(SETTINGS[name].env, text)
    assert getattr(Settings.load(), name) == value


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.kind in ("int", "float")])
def test_every_number_setting_refuses_values_beyond_its_bounds_naming_its_variable(clean_env, name: str) -> None:
    spec = SETTINGS[name]
    for bad in (spec.hi * 2 + 1, -1.0 if (spec.lo or 0) >= 0 else spec.lo - 1, math.nan):
        if spec.kind == "int" and math.isnan(bad):
            continue
        clean_env.setenv(spec.env, str(int(bad)) if spec.kind == "int" else repr(bad))
        with pytest.raises(ConfigError, match=re.escape(spec.env)) as err:
            Settings.load()
        assert "\n" not in str(err.value)


def test_the_fallback_variable_is_read_when_the_setting_is_unset(clean_env) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://fallback@h/d")
    assert Settings.load().database_url == "postgresql://fallback@h/d"
    clean_env.setenv("PGJOBS_DATABASE_URL", "postgresql://own@h/d")
    assert Settings.load().database_url == "postgresql://own@h/d"


def test_an_unknown_keyword_is_a_config_error_not_a_type_error(clean_env) -> None:
    with pytest.raises(ConfigError, match="unknown setting.*pol_interval"):
        Settings.load(pol_interval=1)


def test_an_empty_queue_list_is_refused(clean_env) -> None:
    clean_env.setenv("PGJOBS_QUEUES", " , ")
    with pytest.raises(ConfigError, match="PGJOBS_QUEUES.*at least one queue"):
        Settings.load()


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found = {}
    for action in parser._actions:
        for opt in action.option_strings:
            found[opt] = action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update({f"{name} {k}": v for k, v in _options(sub).items()})
    return found


def test_the_cli_flags_of_settings_take_their_help_type_and_choices_from_the_table() -> None:
    options = _options(cli.build_parser())
    flagged = {**{n: n for n in cli.GLOBAL_SETTING_FLAGS}, **{n: n for n in cli.WORKER_SETTING_FLAGS}}
    assert flagged, "no setting has a flag"
    for name in flagged:
        spec = SETTINGS[name]
        key = spec.flag if name in cli.GLOBAL_SETTING_FLAGS else f"worker {spec.flag}"
        action = options[key]
        assert action.dest == name
        assert action.help == flag_help(name)
        assert spec.env in action.help and (default_text(name) or "none") in action.help
        if spec.choices:
            assert list(action.choices or []) == list(spec.choices)
    assert all(SETTINGS[n].flag for n in flagged)
    declared = {n for n, s in SETTINGS.items() if s.flag and n != "imports"}
    assert declared == set(flagged), "a setting declares a flag the CLI does not have (or the reverse)"


def test_worker_flags_override_the_environment(clean_env) -> None:
    clean_env.setenv("PGJOBS_CONCURRENCY", "3")
    args = cli.build_parser().parse_args(["--database-url", "postgresql://u@h/d", "worker", "--concurrency", "9",
                                          "--queues", "a,b"])
    settings = cli._settings(args, **{n: getattr(args, n) for n in cli.WORKER_SETTING_FLAGS})
    assert (settings.concurrency, settings.queues, settings.database_url) == (9, ("a", "b"), "postgresql://u@h/d")


def test_the_configuration_reference_is_rendered_from_the_table() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == docgen.render(), "docs/configuration.md is stale: run python -m pgjobs.docgen"
    for name, spec in SETTINGS.items():
        row = next(line for line in committed.splitlines() if line.startswith(f"| `{spec.env}` |"))
        assert spec.doc.replace("|", "\\|") in row, name
