"""An installed pgjobs (a wheel, no checkout) carries its migrations and can migrate a database."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import psycopg

from conftest import ROOT


def test_a_wheel_install_migrates_without_the_repository(tmp_path: Path, empty_db_url: str) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(dist), str(ROOT)], check=True, timeout=300, capture_output=True)
    [wheel] = list(dist.glob("pgjobs-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The dependencies come from the test environment (a plain path entry: its .pth files, and with them the
    # editable pgjobs of the checkout, are not loaded); only pgjobs itself is installed from the wheel.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site, "test-deps.pth").write_text(deps + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PGJOBS_ALEMBIC_INI")}
    env["PGJOBS_DATABASE_URL"] = empty_db_url
    where = subprocess.run([str(python), "-c", "import pgjobs; print(pgjobs.__file__)"], cwd=outside, env=env,
                           capture_output=True, text=True, timeout=60)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
    migrate = subprocess.run([str(python), "-m", "pgjobs", "migrate"], cwd=outside, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('pgjobs.jobs')").fetchone()[0] is not None


def test_the_wheel_ships_the_console_behind_its_extra(tmp_path: Path) -> None:
    """The console is in the wheel (its code and static files); streamlit and pandas are the `console` extra,
    not dependencies of every worker; `python -m console` without them says what to install (exit 2)."""
    import email
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    [wheel] = list(dist.glob("pgjobs-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(zf.read(meta))
    assert {"console/__main__.py", "console/app.py", "console/static/favicon.png"} <= names
    assert any(n.startswith("console/views/") for n in names)
    requires = metadata.get_all("Requires-Dist") or []
    for package in ("streamlit", "pandas"):
        entries = [r for r in requires if r.split()[0].lower().startswith(package)]
        assert entries and all('extra == "console"' in r for r in entries), (package, requires)
    assert "console" in (metadata.get_all("Provides-Extra") or [])

    # Without streamlit (a worker-only environment): one line naming the extra.
    env_dir = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    out = subprocess.run([str(python), "-m", "console"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "pgjobs[console]" in out.stderr, out.stderr
