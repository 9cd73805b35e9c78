"""The console in a real browser: `python -m console` (the launcher, then `streamlit run`) on a free port,
headless Chromium driven by Playwright, a real worker completing the run the operator triggers.

Needs Chromium at /usr/bin/chromium (`apt-get install -y chromium`; `playwright install` is not used) and
the `playwright` Python package. Without them the test fails and says so: it never skips silently.
Screenshots of every page go to test-artifacts/console/.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from console import auth
from pgjobs.admin import Admin

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = os.environ.get("PGJOBS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # a foreign name that resolves to this machine, like a DNS-rebinding attacker's
                 "--host-resolver-rules=MAP evil.test 127.0.0.1"]
PASSWORD = "browser-test-password"
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Consoles:
    """`python -m console` processes on free ports, stopped at teardown."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url, self.tmp_path, self.procs = db_url, tmp_path, []

    def start(self, users: str | None = None, *, args: tuple[str, ...] = (), port: int | None = None,
              **extra_env: str) -> str:
        from conftest import wait_for

        port = port or free_port()
        env = {**os.environ, "PGJOBS_DATABASE_URL": self.db_url, **extra_env}
        for var in ("PGJOBS_CONSOLE_INSECURE", "PGJOBS_CONSOLE_USERS", "PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH",
                    "PGJOBS_CONSOLE_VIEWER_PASSWORD_HASH"):
            env.pop(var, None)
        if users:
            env["PGJOBS_CONSOLE_USERS"] = users
        log_path = self.tmp_path / f"console-{port}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "console", "--server.port", str(port),
                                 "--server.fileWatcherType", "none", *args], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: healthy(url) or proc.poll() is not None, timeout=60, what="the console to start")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{log_path.read_text()}") from None
        assert proc.poll() is None, log_path.read_text()
        return url

    def stop_all(self) -> None:
        for proc, log in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture
def consoles(db_url: str, tmp_path: Path) -> Iterator[Consoles]:
    started = Consoles(db_url, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def console_url(consoles: Consoles) -> str:
    return consoles.start(users=f"ops:admin:{auth.hash_password(PASSWORD)}")


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}. The browser test needs it: refresh the apt index and "
                    "`apt-get install -y chromium`, or point PGJOBS_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 2000})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "last-state.png"), full_page=True)  # for a failed run
            browser.close()


def settled(page) -> None:
    """Wait until the script run is over: no 'Running' status and no stale (faded) element left."""
    page.wait_for_function(
        "() => document.querySelector('[data-test-script-state]')?.getAttribute('data-test-script-state')"
        "      !== 'running'"
        " && !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && document.querySelectorAll('[data-stale=\"true\"]').length === 0"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && [...document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]')]"
        "      .every(chart => chart.querySelector('canvas, svg'))", timeout=TIMEOUT_MS)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settled(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def go(page, title: str) -> None:
    """Open a page from the sidebar navigation and wait for its title."""
    settled(page)
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()


def choose(page, scope, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label` inside `scope`."""
    settled(page)
    scope.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def set_text(page, label: str, value: str) -> None:
    settled(page)
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")


def test_an_operator_signs_in_browses_every_page_creates_edits_and_runs_a_schedule(
        console_url: str, browser_page, workers, admin: Admin) -> None:
    from playwright.sync_api import expect

    from conftest import wait_for

    page = browser_page
    workers.start()
    admin.add_schedule("refresh otel_trace_summaries", cron="*/2 * * * *", task="pgjobs.noop")
    failed = admin.enqueue("pgjobs.sleep", {"seconds": 0, "fail": True}, max_attempts=1)

    page.goto(console_url)
    set_text(page, "User", "ops")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    expect(page.get_by_text("Signed in as ops (admin)")).to_be_visible()
    expect(page.get_by_text("Failures in the last 24 h")).to_be_visible()
    shot(page, "01-overview")

    # Schedules: create one with the live preview, then edit it
    go(page, "Schedules")
    page.get_by_role("button", name="New schedule").click()
    set_text(page, "Name", "made in the browser")
    set_text(page, "Cron", "*/5 * * * *")
    expect(page.get_by_text("Runs every 5 minutes (UTC). Next 5 fire times:")).to_be_visible()
    shot(page, "02-schedule-create")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_text("Created 'made in the browser'")).to_be_visible()
    assert admin.get_schedule("made in the browser")["cron"] == "*/5 * * * *"
    shot(page, "03-schedules")

    settled(page)
    page.get_by_role("button", name="Edit").click()
    set_text(page, "Cron", "*/61 * * * *")
    expect(page.get_by_text("step '61' must be 1-59")).to_be_visible()
    set_text(page, "Cron", "0 6 * * 1-5")
    expect(page.get_by_text("Runs at 06:00 on Monday through Friday (UTC)")).to_be_visible()
    shot(page, "04-schedule-edit")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Saved 'made in the browser'")).to_be_visible()
    assert admin.get_schedule("made in the browser")["cron"] == "0 6 * * 1-5"

    # Run now, and see the run completed by the worker on the detail page
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("Enqueued job")).to_be_visible()
    job_id = max(j["id"] for j in admin.list_jobs(schedule="made in the browser"))
    try:
        wait_for(lambda: admin.get_job(job_id)["state"] == "completed", timeout=60, what="the worker to run it")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: job {admin.get_job(job_id)}; worker log:\n{workers.logs()}") from None
    done = len(admin.list_jobs(schedule="made in the browser", state="completed"))  # run now + any cron slot
    go(page, "Schedule detail")
    choose(page, page.get_by_test_id("stMain"), "Schedule", "made in the browser")
    choose(page, page.get_by_test_id("stSidebar"), "Auto-refresh", "5 s")
    completed = page.get_by_test_id("stMetric").filter(has_text="Completed")
    expect(completed).to_have_text(re.compile(rf"Completed\s*{done}$"), timeout=30_000)
    shot(page, "05-schedule-detail")
    choose(page, page.get_by_test_id("stSidebar"), "Auto-refresh", "Off")

    go(page, "Jobs")
    page.get_by_label("Job id", exact=True).fill(str(failed))
    page.get_by_label("Job id", exact=True).press("Enter")
    expect(page.get_by_test_id("stText").filter(has_text="pgjobs.sleep failed on purpose")).to_be_visible()
    shot(page, "06-jobs")

    go(page, "Workers")
    expect(page.get_by_text("Leader:")).to_be_visible(timeout=30_000)
    shot(page, "07-workers")

    go(page, "Audit log")
    expect(page.get_by_text("Before", exact=True)).to_be_visible()
    expect(page.get_by_text("After", exact=True)).to_be_visible()
    shot(page, "08-audit")
    actions = [(a["action"], a["actor"]) for a in admin.audit(limit=3)]
    assert actions == [("run-now", "console:ops"), ("edit", "console:ops"), ("create", "console:ops")]


# ---------------------------------------------------------------------- DNS rebinding and foreign origins
FOREIGN_PAGE = "http://evil.test:9/attack.html"  # answered by page.route below, never by a server
ATTACK_SCRIPT = """async ([target]) => {
    const opened = (url) => new Promise((resolve) => {
        const ws = new WebSocket(url, ["streamlit"]);
        ws.onopen = () => { ws.close(); resolve("open"); };
        ws.onerror = () => resolve("refused");
        setTimeout(() => resolve("timeout"), 10000);
    });
    let post;
    try {
        const r = await fetch(target + "/_stcore/upload_file/x/y", {method: "PUT", body: "x", mode: "no-cors"});
        post = "sent";
    } catch (e) { post = "refused"; }
    return {
        stream: await opened(target.replace("http", "ws") + "/_stcore/stream"),
        post: post,
    };
}"""


def test_a_page_on_a_rebound_foreign_name_cannot_drive_the_console_without_users(
        consoles: Consoles, browser_page, admin: Admin) -> None:
    """No users (loopback): Chromium resolves evil.test to 127.0.0.1, as after a DNS rebinding. Every route
    under that name answers 403, the app never loads, no job is created; 127.0.0.1 still works."""
    from playwright.sync_api import expect

    page = browser_page
    admin.add_schedule("target", cron="0 0 1 1 *", task="pgjobs.noop")
    url = consoles.start()
    port = url.rsplit(":", 1)[1]
    rebound = f"http://evil.test:{port}"

    for path in ("/", "/_stcore/health", "/static/favicon.png", "/_stcore/host-config", "/Schedules"):
        response = page.goto(rebound + path)
        assert response is not None and response.status == 403, (path, response and response.status)
        assert "is not allowed" in page.content()
    assert page.get_by_test_id("stApp").count() == 0

    # the rebound page's own script: its websocket to the console (same name) is refused too
    result = page.evaluate(ATTACK_SCRIPT, [rebound])
    assert result["stream"] == "refused", result
    assert admin.list_jobs(schedule="target") == []

    # a page on a foreign origin talking to 127.0.0.1 directly: its Origin is refused
    page.route(FOREIGN_PAGE, lambda route: route.fulfill(status=200, content_type="text/html",
                                                         body="<html><body>attacker</body></html>"))
    page.goto(FOREIGN_PAGE)
    result = page.evaluate(ATTACK_SCRIPT, [url])
    assert result["stream"] == "refused", result
    assert admin.list_jobs(schedule="target") == []

    # the legitimate origin: the console works, and Run now creates the job
    page.goto(url)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    go(page, "Schedules")
    settled(page)
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("Enqueued job")).to_be_visible()
    assert len(admin.list_jobs(schedule="target")) == 1
    assert admin.audit(limit=1)[0]["actor"] == "console:local"


def test_a_name_in_allowed_hosts_is_served(consoles: Consoles, browser_page) -> None:
    page = browser_page
    url = consoles.start(PGJOBS_CONSOLE_ALLOWED_HOSTS="evil.test")
    port = url.rsplit(":", 1)[1]
    response = page.goto(f"http://evil.test:{port}/")
    assert response is not None and response.status == 200
    page.get_by_role("heading", name="Overview", exact=True).wait_for()


def raw_upgrade(port: int, host: str, origin: str | None) -> str:
    """The status line the console answers to a hand-written websocket upgrade of its app stream."""
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: streamlit"]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return conn.recv(4096).split(b"\r\n", 1)[0].decode()


def test_a_raw_websocket_upgrade_with_a_foreign_host_or_origin_is_refused(consoles: Consoles) -> None:
    port = int(consoles.start().rsplit(":", 1)[1])
    assert raw_upgrade(port, f"evil.test:{port}", f"http://evil.test:{port}") == "HTTP/1.1 403 Forbidden"
    assert raw_upgrade(port, f"evil.test:{port}", None) == "HTTP/1.1 403 Forbidden"
    assert raw_upgrade(port, f"127.0.0.1:{port}", f"http://evil.test:{port}") == "HTTP/1.1 403 Forbidden"
    assert raw_upgrade(port, f"127.0.0.1:{port}", "null") == "HTTP/1.1 403 Forbidden"
    assert raw_upgrade(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == "HTTP/1.1 101 Switching Protocols"
    assert raw_upgrade(port, f"localhost:{port}", None) == "HTTP/1.1 101 Switching Protocols"


def test_with_a_token_the_console_needs_it_once_in_the_url_then_a_cookie(consoles: Consoles, browser_page) -> None:
    page = browser_page
    token = "t0ken-for-the-browser-test"
    url = consoles.start(PGJOBS_CONSOLE_TOKEN=token)  # its health check answers without the token
    response = page.goto(url + "/")
    assert response is not None and response.status == 403 and "needs the token" in page.content()
    response = page.goto(f"{url}/?token=wrong-token-0000000")
    assert response is not None and response.status == 403
    page.goto(f"{url}/?token={token}")
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    assert "token=" not in page.url  # the redirect dropped it from the address bar
    go(page, "Workers")  # the websocket and static files go on with the cookie
    page.reload()
    page.get_by_role("heading", name="Workers", exact=True).wait_for()
    port = int(url.rsplit(":", 1)[1])
    assert raw_upgrade(port, f"127.0.0.1:{port}", None) == "HTTP/1.1 403 Forbidden"  # no cookie, no stream


def test_a_signed_in_session_survives_a_reload_until_signing_out(console_url: str, browser_page) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(console_url)
    set_text(page, "User", "ops")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    settled(page)
    page.get_by_test_id("stSidebar").get_by_label("Times shown in", exact=True).click()
    page.keyboard.type("Asia/Tokyo")  # a long, virtualized list: filter it
    page.get_by_role("option", name="Asia/Tokyo", exact=True).click()
    settled(page)
    page.wait_for_function("() => document.cookie.includes('pgjobs_console_session=')")
    # The zone travels in the URL (?tz=), which the app's rerun updates after the choice: reload only then.
    page.wait_for_function("() => new URLSearchParams(location.search).get('tz') === 'Asia/Tokyo'")
    page.reload()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    settled(page)
    expect(page.get_by_text("Signed in as ops (admin)")).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_label("Times shown in", exact=True)).to_have_value(
        "Asia/Tokyo")  # the zone too
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    page.wait_for_function("() => !document.cookie.includes('pgjobs_console_session=')")
    page.reload()
    page.get_by_role("button", name="Sign in").wait_for()


@pytest.mark.parametrize("width", [1280, 1440])
def test_every_page_at_laptop_widths_with_no_request_leaving_the_machine(
        console_url: str, browser_page, admin: Admin, width: int) -> None:
    """Screenshots of every page at 1280 and 1440 px (test-artifacts/console/width-*), and every request
    the browser makes goes to the console itself: favicon, fonts and icons are served locally."""
    from urllib.parse import urlsplit

    page = browser_page
    page.set_viewport_size({"width": width, "height": 1100})
    admin.add_schedule("refresh otel_trace_summaries", cron="*/2 * * * *", task="pgjobs.noop",
                       timezone="Europe/Berlin", description="refresh the traces view")
    admin.add_schedule("nightly report", cron="0 3 * * 1-5", task="pgjobs.noop", timezone="CET")
    admin.run_now("nightly report")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(console_url)
    set_text(page, "User", "ops")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    shot(page, f"width-{width}-1-overview")
    for n, title in enumerate(["Schedules", "Schedule detail", "Jobs", "Workers", "Audit log"], start=2):
        go(page, title)
        shot(page, f"width-{width}-{n}-{title.lower().replace(' ', '-')}")
    go(page, "Schedules")
    page.get_by_role("button", name="New schedule").click()
    settled(page)
    page.get_by_role("button", name="Create schedule").wait_for()
    shot(page, f"width-{width}-7-schedule-form")
    foreign = {urlsplit(u).hostname for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert foreign <= {"127.0.0.1"}, sorted(u for u in requests if urlsplit(u).hostname != "127.0.0.1")
    assert any(u.endswith(".png") or "media" in u for u in requests)  # the favicon, from the console
