"""The console's Host/Origin guard as pure functions (the browser tests prove it in front of every route)."""

from __future__ import annotations

import pytest

from console import guard, run

DEFAULT = guard.allowed_hosts({})


@pytest.mark.parametrize("host", ["127.0.0.1:8501", "localhost:8501", "LOCALHOST", "[::1]:8501", "[::1]",
                                  "localhost.", "127.0.0.1"])
def test_loopback_names_are_allowed_by_default(host: str) -> None:
    assert guard.refusal({"host": host}, DEFAULT) is None


@pytest.mark.parametrize("host", ["evil.test:8501", "evil.test", "127.0.0.1.evil.test:8501", "localhost:x",
                                  "user@127.0.0.1", "[::1", "127.0.0.2:8501", "", "0.0.0.0:8501"])
def test_foreign_or_malformed_hosts_are_refused(host: str) -> None:
    assert "is not allowed" in guard.refusal({"host": host}, DEFAULT)


def test_no_host_header_is_refused() -> None:
    assert guard.refusal({}, DEFAULT) == "the request has no Host header"


@pytest.mark.parametrize("origin,allowed", [
    ("http://127.0.0.1:8501", True), ("https://localhost", True), ("http://[::1]:8501", True),
    ("http://evil.test:8501", False), ("null", False), ("file://", False), ("http://127.0.0.1:x", False),
    ("http://localhost.evil.test", False)])
def test_the_origin_when_present_must_name_an_allowed_host(origin: str, allowed: bool) -> None:
    reason = guard.refusal({"host": "127.0.0.1:8501", "origin": origin}, DEFAULT)
    assert (reason is None) is allowed, reason


def test_allowed_hosts_adds_the_configured_names_and_a_specific_bound_address() -> None:
    names = guard.allowed_hosts({"PGJOBS_CONSOLE_ALLOWED_HOSTS": "Console.Example.com, 10.0.0.5:8501 [fd00::1]"},
                                bound_address="192.168.1.7")
    assert {"console.example.com", "10.0.0.5", "fd00::1", "192.168.1.7", "localhost"} <= names
    assert guard.refusal({"host": "console.example.com", "origin": "https://console.example.com"}, names) is None
    assert "0.0.0.0" not in guard.allowed_hosts({}, bound_address="0.0.0.0")
    assert guard.refusal({"host": "anything:1"}, guard.allowed_hosts({"PGJOBS_CONSOLE_ALLOWED_HOSTS": "*"})) is None


def test_a_malformed_allowed_host_stops_the_launcher_with_one_line() -> None:
    env = {"PGJOBS_DATABASE_URL": "postgresql://x@localhost/db", "PGJOBS_CONSOLE_ALLOWED_HOSTS": "http://x/y"}
    with pytest.raises(SystemExit, match=r"^pgjobs console: error: PGJOBS_CONSOLE_ALLOWED_HOSTS: 'http://x/y' "
                                         "is not a host name"):
        run.plan([], env)


def test_the_launcher_runs_streamlit_through_the_guarded_entry_point() -> None:
    cmd, _ = run.plan([], {"PGJOBS_DATABASE_URL": "postgresql://x@localhost/db"})
    assert cmd[1:4] == ["-m", "console.serve", "run"]


def test_token_option_makes_a_token_and_a_bad_one_stops_the_launcher() -> None:
    env = {"PGJOBS_DATABASE_URL": "postgresql://x@localhost/db"}
    cmd, child = run.plan(["--token"], env)
    assert "--token" not in cmd and len(child[guard.TOKEN_ENV]) >= 16
    with pytest.raises(SystemExit, match="PGJOBS_CONSOLE_TOKEN: use 16-128 letters"):
        run.plan([], {**env, guard.TOKEN_ENV: "short"})
