"""The deployment files say what they should, checked without a Docker engine: compose.yml (parsed with
PyYAML), the Dockerfile, .dockerignore, and that every setting they pass exists in the code that reads it."""

from __future__ import annotations

import fnmatch
import re
import shlex

import pytest
import yaml

from conftest import ROOT
from pgjobs.config import Settings, settings_reference

APP_SERVICES = ("migrate", "worker", "console")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_compose_has_postgres_migrate_workers_and_console(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "worker", "console"}
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["restart"] == "unless-stopped"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])


def test_migrate_is_a_one_shot_alembic_upgrade_after_postgres_is_healthy(compose: dict) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_two_workers_start_only_after_the_migration_succeeded(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["restart"] in ("unless-stopped", "always")
    assert worker["command"][:2] == ["pgjobs", "worker"]
    port = worker["command"][worker["command"].index("--metrics-port") + 1]
    assert "/readyz" in " ".join(worker["healthcheck"]["test"]) and f":{port}/" in " ".join(worker["healthcheck"]["test"])
    assert "ports" not in worker, "replicas cannot share one published host port"
    # Docker's stop timeout must outlast the worker's own grace period, or running jobs are killed mid-run.
    grace = float(worker["environment"].get("PGJOBS_SHUTDOWN_GRACE", Settings().shutdown_grace))
    assert _seconds(worker["stop_grace_period"]) > grace


def test_console_runs_python_m_console_with_sign_in_from_the_environment(compose: dict) -> None:
    console = compose["services"]["console"]
    assert console["command"][:3] == ["python", "-m", "console"]
    assert console["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert console["restart"] == "unless-stopped"
    env = console["environment"]
    auth_source = (ROOT / "console" / "auth.py").read_text()
    for name in ("PGJOBS_CONSOLE_USERS", "PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH"):
        assert name in env and name in auth_source
    # Listening on every interface inside the container is only allowed with sign-in: never --insecure here.
    assert "--insecure" not in console["command"]


def test_app_services_share_one_image_built_here_with_one_database(compose: dict) -> None:
    services = compose["services"]
    assert {services[s]["image"] for s in APP_SERVICES} == {"pgjobs:local"}
    assert all(services[s]["build"] == "." for s in APP_SERVICES)
    pg_env = services["postgres"]["environment"]
    for name in APP_SERVICES:
        url = services[name]["environment"]["PGJOBS_DATABASE_URL"]
        assert url.startswith(f"postgresql://{pg_env['POSTGRES_USER']}:") and url.endswith(
            f"@postgres:5432/{pg_env['POSTGRES_DB']}")


def test_compose_runs_as_written_every_variable_has_a_default_and_every_setting_exists(compose: dict) -> None:
    text = (ROOT / "compose.yml").read_text()
    for ref in re.findall(r"\$\{([^}]*)\}", text):
        assert ":-" in ref, f"${{{ref}}} has no default: `docker compose up` would need it set"
    known = {row["env"] for row in settings_reference()} | set(
        re.findall(r"PGJOBS_CONSOLE_[A-Z_]+", " ".join(p.read_text() for p in (ROOT / "console").glob("*.py"))))
    for name in APP_SERVICES:
        for var in compose["services"][name]["environment"]:
            if var.startswith("PGJOBS_"):
                assert var in known, f"{name}: {var} is not read by pgjobs or the console"


def test_dockerfile_builds_a_non_root_python_311_slim_image_with_migrations(dockerfile) -> None:
    instructions = [i for i, _ in dockerfile]
    args = dict(dockerfile)  # last of each
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    assert ("RUN", 'pip install ".[console]"') in dockerfile, "the image runs the console too: its extra"
    run_at = instructions.index("RUN")
    copied_before = {src for i, a in dockerfile[:run_at] if i == "COPY" for src in shlex.split(a)[:-1]}
    assert {"pgjobs", "console"} <= copied_before, "both packages are in the wheel pip builds"
    copies = [shlex.split(a) for i, a in dockerfile if i == "COPY"]
    sources = {src for c in copies for src in c[:-1]}
    assert {"pyproject.toml", "README.md", "pgjobs", "alembic.ini", "alembic", "console"} <= sources
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0") and instructions.index("USER") > instructions.index("RUN")
    workdir = args["WORKDIR"]
    assert f"PGJOBS_ALEMBIC_INI={workdir}/alembic.ini" in " ".join(a for i, a in dockerfile if i == "ENV")
    assert "9477" in args["EXPOSE"].split()


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_secrets(dockerfile) -> None:
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for instruction, arguments in dockerfile:
        if instruction != "COPY":
            continue
        for src in shlex.split(arguments)[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), f"COPY {src}: excluded by .dockerignore"
    for secret in (".env", ".git", ".venv"):
        assert secret in ignored


def test_alembic_ini_migrates_from_the_image_working_directory() -> None:
    ini = (ROOT / "alembic.ini").read_text()
    assert re.search(r"^script_location\s*=\s*%\(here\)s/alembic$", ini, re.M)
    assert "sqlalchemy.url" not in ini.split("[alembic]", 1)[1].split("[", 1)[0], "the URL comes from the env"


def _seconds(value: str | int) -> float:
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert m and value, f"duration {value!r}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)



def test_configuration_reference_is_generated_from_the_code() -> None:
    from pgjobs import docgen

    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == docgen.render(), "docs/configuration.md is stale: run `python -m pgjobs.docgen`"
    for row in settings_reference():
        assert f"`{row['env']}`" in committed
