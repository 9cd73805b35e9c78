"""Single sign-on: the console offers Streamlit's `st.login` when PGJOBS_CONSOLE_OIDC_ROLES maps provider
accounts to roles. Proven end to end in Chromium against a real OIDC provider on loopback
(oidc-provider-mock: discovery, authorization code flow, ID token), and the role rules as functions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_console_browser import browser_page, consoles, free_port, settled  # noqa: F401 - fixtures

from console import auth, run
from pgjobs.admin import Admin


# ---------------------------------------------------------------------- the rules
def test_oidc_role_rules_match_an_email_or_a_domain_first_match_wins() -> None:
    rules = auth.load_oidc_roles({"PGJOBS_CONSOLE_OIDC_ROLES": "Boss@Example.com:admin, *@example.com:viewer"})
    assert rules == [("boss@example.com", "admin"), ("*@example.com", "viewer")]
    assert auth.oidc_role(rules, "boss@EXAMPLE.com") == "admin"
    assert auth.oidc_role(rules, "someone@example.com") == "viewer"
    assert auth.oidc_role(rules, "someone@example.com.evil.test") is None
    assert auth.oidc_role(rules, "someone@notexample.com") is None
    assert auth.oidc_role(rules, "boss@example.com", verified=False) is None, "an unverified email never matches"
    assert auth.oidc_role(rules, None) is None


@pytest.mark.parametrize("raw", ["alice@example.com:root", "alice:admin", "*:viewer", "admin", "a@b:c:admin",
                                 "x" * 300 + "@example.com:admin"])
def test_a_bad_rule_stops_the_launcher_with_one_line(raw: str) -> None:
    with pytest.raises(SystemExit) as err:
        run.plan([], {"PGJOBS_DATABASE_URL": "postgresql://u@h/d", "PGJOBS_CONSOLE_OIDC_ROLES": raw})
    text = str(err.value)
    assert text.startswith("pgjobs console: error: PGJOBS_CONSOLE_OIDC_ROLES") and "\n" not in text and len(text) < 300


def test_single_sign_on_counts_as_sign_in_for_a_public_address() -> None:
    argv, _ = run.plan(["--server.address", "0.0.0.0"], {  # noqa: S104 - the address under test
        "PGJOBS_DATABASE_URL": "postgresql://u@h/d", "PGJOBS_CONSOLE_OIDC_ROLES": "*@example.com:viewer"})
    assert "0.0.0.0" in argv


# ---------------------------------------------------------------------- end to end
@pytest.fixture
def provider() -> Iterator[str]:
    """A real OIDC provider on a free loopback port: any client id, any subject typed in its form."""
    import oidc_provider_mock
    import werkzeug.serving

    server = werkzeug.serving.make_server("127.0.0.1", free_port(), oidc_provider_mock.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def _sign_in_at_the_provider(page, console: str, email: str) -> None:
    page.goto(console)
    page.get_by_role("button", name="Sign in with single sign-on").click()
    page.locator("input[name=sub]").fill(email)  # the provider's own page
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{console}/**")


def test_an_operator_signs_in_through_the_provider_and_gets_the_role_of_her_email(
        consoles, browser_page, provider: str, admin: Admin, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    port = free_port()
    console = f"http://127.0.0.1:{port}"
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "{console}/oauth2callback"
cookie_secret = "a-test-cookie-secret-of-some-length"
client_id = "pgjobs-console"
client_secret = "pgjobs-console-secret"
server_metadata_url = "{provider}/.well-known/openid-configuration"
""")
    consoles.start(args=("--secrets.files", str(secrets)), port=port,
                   PGJOBS_CONSOLE_OIDC_ROLES="ops@example.com:admin,*@example.com:viewer")
    page = browser_page
    _sign_in_at_the_provider(page, console, "ops@example.com")
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    settled(page)
    expect(page.get_by_text("Signed in as ops@example.com (admin)")).to_be_visible()
    page.reload()  # Streamlit's identity cookie keeps the session
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    expect(page.get_by_text("Signed in as ops@example.com (admin)")).to_be_visible()
    audit = [a for a in admin.audit(limit=20) if a["action"] == "sign-in"]
    assert audit and audit[0]["entity_name"] == "ops@example.com"
    page.get_by_role("button", name="Sign out").click()
    # st.logout ends the session at the provider too (RP-initiated logout); this provider may ask first.
    end, again = (page.get_by_role("button", name="End session"),
                  page.get_by_role("button", name="Sign in with single sign-on"))
    end.or_(again).first.wait_for()
    if end.is_visible():
        end.click()
        page.goto(console)
    again.wait_for()

    _sign_in_at_the_provider(page, console, "stranger@elsewhere.test")
    expect(page.get_by_text("has no role in this console")).to_be_visible()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_have_count(0)
    assert [a["action"] for a in admin.audit(limit=20) if a["entity_name"] == "stranger@elsewhere.test"] == [
        "sign-in-failed"]

