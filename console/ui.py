"""What every console page shares: the signed-in Admin, the sidebar choices, and safe display helpers.

- Pages get their data only through `admin()`, an `Admin` acting as the signed-in user with that user's
  role, so a viewer is refused by the admin API itself, not only by hidden buttons.
- The connection pool is a `st.cache_resource` per database URL, closed when the cache is cleared.
- Text from the database (names, errors, args) is shown with st.dataframe / st.code / st.json / st.text, or
  through `md()` which escapes Markdown; nothing is rendered as HTML.
"""

from __future__ import annotations

import json
import os
import re
import time
import zoneinfo
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pandas as pd
import streamlit as st
from psycopg_pool import ConnectionPool

from console import auth, guard
from console.run import INSECURE_ENV, READ_URL_ENV, is_loopback
from pgjobs.admin import Admin, AdminError, describe_cron
from pgjobs.config import ConfigError, Settings, normalize_database_url
from pgjobs.tasks import ensure_builtins, import_modules, registered

REFRESH_CHOICES = {"Off": None, "5 s": 5, "10 s": 10, "30 s": 30, "1 min": 60}
JOB_STATE_ORDER = ("available", "running", "completed", "failed", "cancelled", "skipped")


# ---------------------------------------------------------------------- text
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<&$:])")


def md(text: Any) -> str:
    """`text` with every Markdown/HTML-significant character escaped, for st.markdown-like calls."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", "  \n")


def show_error(exc: BaseException | str) -> None:
    st.error(md(exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)), icon="⚠️")


def flash(message: str, kind: str = "success") -> None:
    """A message shown once, at the top of the next run (survives st.rerun)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        (st.success if kind == "success" else st.warning if kind == "warning" else st.error)(md(message))


# ---------------------------------------------------------------------- settings, pool, admin
def settings() -> Settings:
    return Settings.load()


def _close_pool(pool: ConnectionPool) -> None:
    pool.close(timeout=2)


@st.cache_resource(show_spinner=False, on_release=_close_pool)
def _pool(conninfo: str) -> ConnectionPool:
    return ConnectionPool(conninfo, min_size=1, max_size=4, timeout=10, name="pgjobs-console", open=True,
                          kwargs={"application_name": "pgjobs console", "connect_timeout": 10})


@st.cache_resource(show_spinner=False)
def _load_tasks(imports: tuple[str, ...]) -> list[str]:
    """Import the task modules once, so 'the task must be registered' is checked here like in workers."""
    import_modules(imports)
    ensure_builtins()
    return [t.name for t in registered()]


def task_names() -> list[str]:
    return sorted(_load_tasks(settings().imports))


def read_url() -> str | None:
    """PGJOBS_CONSOLE_READ_URL: a replica (streaming standby) for the console's reads, or None."""
    raw = os.environ.get(READ_URL_ENV, "").strip()
    if not raw:
        return None
    try:
        return normalize_database_url(raw)
    except ConfigError as exc:
        raise ConfigError(f"{READ_URL_ENV}: {exc}") from None


def admin() -> Admin:
    """The admin API as the signed-in user (actor `console:<name>`, with that user's role). With
    PGJOBS_CONSOLE_READ_URL set, its lists, history, stats, ledger and audit come from that replica; writes,
    sign-in limits, a schedule read for an edit and leadership stay on the primary."""
    user = st.session_state["user"]
    s = settings()
    _load_tasks(s.imports)
    replica = read_url()
    return Admin(s, actor=f"console:{user['name']}", role=user["role"], pool=_pool(s.require_database()),
                 read_pool=_pool(replica) if replica else None)


def is_admin() -> bool:
    return st.session_state.get("user", {}).get("role") == "admin"


def attempt(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """Call the admin API: (True, result), or (False, None) after showing the error as text."""
    try:
        return True, fn(*args, **kwargs)
    except (AdminError, ConfigError) as exc:
        show_error(exc)
    except Exception as exc:  # noqa: BLE001 - a page must not die on a database hiccup
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        show_error(f"{label} failed: {type(exc).__name__}: {first}")
    return False, None


def run(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the admin API; an error is shown (as text) and None returned."""
    return attempt(label, fn, *args, **kwargs)[1]


# ---------------------------------------------------------------------- sign-in
def refuse_foreign_page() -> None:
    """Stop unless this session's Host and Origin are allowed names (the second line behind HostGuard, for
    a console started with a plain `streamlit run`). No headers at all means no browser: AppTest."""
    headers = {k.lower(): v for k, v in (getattr(st.context, "headers", None) or {}).items()}
    if not headers:
        return
    try:
        reason = guard.refusal(headers, guard.allowed_hosts(bound_address=st.get_option("server.address")))
    except guard.GuardConfigError as exc:
        reason = str(exc)
    if reason is not None:
        show_error(f"This console refuses this page: {reason}.")
        st.stop()


def require_user() -> dict[str, str]:
    """The signed-in user; renders the sign-in form and stops the script until there is one."""
    refuse_foreign_page()
    if "user" in st.session_state:
        _write_session_cookie()
        return st.session_state["user"]
    try:
        users = auth.load_users()
        sso = auth.load_oidc_roles()
    except auth.AuthConfigError as exc:
        show_error(exc)
        st.stop()
    if sso and _sso_account() is not None and not st.session_state.get("_signed_out"):
        return _sso_user(sso)  # (after Sign out, until the browser's logout round trip drops the identity)
    if users and not st.session_state.get("_signed_out"):
        cookies = getattr(st.context, "cookies", None) or {}
        user = auth.read_session(cookies.get(auth.SESSION_COOKIE), users, auth.session_key(users), time.time())
        if user is not None:
            st.session_state["user"] = {"name": user.name, "role": user.role}
            return st.session_state["user"]
    if not users and not sso:
        if os.environ.get(INSECURE_ENV) == "1" or is_loopback(st.get_option("server.address")):
            st.session_state["user"] = {"name": "local", "role": "admin"}
            return st.session_state["user"]
        show_error("No console users are configured and the console is not bound to a loopback address; "
                   "configure PGJOBS_CONSOLE_USERS (or PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH) or start it with "
                   "`python -m console --insecure`.")
        st.stop()
    _write_session_cookie()
    st.title("pgjobs console")
    if sso and st.button("Sign in with single sign-on", key="sso_sign_in", type="primary"):
        st.session_state.pop("_signed_out", None)
        st.login()  # to the provider of Streamlit's [auth] secrets, and back through /oauth2callback
    if not users:
        st.stop()
    with st.form("sign_in"):
        name = st.text_input("User", key="sign_in_user")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        name = name.strip()
        client = client_address()
        gate = _signin_admin()
        ok, started = attempt("sign-in", gate.begin_signin, name, client)
        if not ok:
            st.stop()
        attempt_id, retry_at = started
        if retry_at is not None:
            show_error(f"Too many failed sign-ins for this user or address; try again after {when(retry_at)} "
                       f"({st.session_state.get('tz', 'UTC')}).")
            st.stop()
        user = auth.authenticate(users, name, password)
        run("sign-in", gate.finish_signin, attempt_id, name, client, user is not None)
        if user is None:
            show_error("Wrong user or password.")
        else:
            st.session_state["user"] = {"name": user.name, "role": user.role}
            st.session_state["_session_cookie"] = "set"
            st.rerun()
    st.stop()


def _sso_account() -> dict[str, Any] | None:
    """The provider account signed in through `st.login` (Streamlit keeps it in its own signed, HttpOnly
    cookie), or None."""
    account = getattr(st, "user", None)
    if account is None or not account.get("is_logged_in"):
        return None
    return {"email": account.get("email"), "verified": account.get("email_verified")}


def _sso_user(rules: list[tuple[str, str]]) -> dict[str, str]:
    """Sign in the provider's account with the role its email maps to (PGJOBS_CONSOLE_OIDC_ROLES), recorded
    and audited like a password sign-in; an account with no role is refused and offered a sign-out."""
    account = _sso_account() or {}
    email = str(account.get("email") or "")
    role = auth.oidc_role(rules, email, account.get("verified"))
    gate, client = _signin_admin(), client_address()
    ok, started = attempt("sign-in", gate.begin_signin, email or "(no email)", client)
    if ok:
        run("sign-in", gate.finish_signin, started[0], email or "(no email)", client, role is not None)
    if role is None:
        why = "its email is not verified" if account.get("verified") is False else "PGJOBS_CONSOLE_OIDC_ROLES gives it none"
        show_error(f"The account '{email or 'without an email'}' has no role in this console ({why}).")
        if st.button("Sign out", key="sso_sign_out"):
            st.logout()
        st.stop()  # (after st.logout too: the browser leaves for /auth/logout)
    st.session_state["user"] = {"name": email, "role": role, "sso": "1"}
    return st.session_state["user"]


def _write_session_cookie() -> None:
    """Set (after a sign-in) or clear (after a sign-out) the session cookie in this browser. Streamlit has no
    server-side cookie API, so a zero-height component sets it on the page's own origin."""
    action = st.session_state.pop("_session_cookie", None)
    if action is None:
        return
    if action == "clear":
        value, max_age = "", 0
    else:
        users = auth.load_users()
        user = users.get(st.session_state["user"]["name"])
        if user is None:
            return
        value, max_age = auth.make_session(user, auth.session_key(users), time.time()), auth.SESSION_TTL_SECONDS
    secure = "; secure" if st.get_option("server.sslCertFile") else ""
    cookie = f"{auth.SESSION_COOKIE}={value}; path=/; max-age={max_age}; samesite=strict{secure}"
    st.iframe(f"<script>window.parent.document.cookie = {json.dumps(cookie)};</script>", height=1)


def client_address() -> str:
    """The browser's address as the server saw it (a reverse proxy's, behind one)."""
    return str(getattr(st.context, "ip_address", None) or "unknown")


def _signin_admin() -> Admin:
    """The admin API for recording sign-in attempts, before anyone is signed in (a viewer: it reads and
    records attempts only)."""
    s = settings()
    return Admin(s, actor="console", role="viewer", pool=_pool(s.require_database()))


def sign_out() -> None:
    sso = st.session_state.get("user", {}).get("sso")
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["_signed_out"] = True  # this session's handshake still carries the old cookie
    st.session_state["_session_cookie"] = "clear"
    if sso:
        st.logout()  # ends Streamlit's identity cookie too: the browser goes to /auth/logout, then back
        st.stop()  # not st.rerun(): a rerun could drop the redirect st.logout queued


# ---------------------------------------------------------------------- sidebar: timezone, refresh
@st.cache_resource(show_spinner=False, ttl=3600)
def _server_timezones(conninfo: str) -> tuple[str, ...]:
    s = settings()
    return tuple(Admin(s, actor="console", role="viewer", pool=_pool(conninfo)).timezones())


def timezones() -> list[str]:
    """UTC first, then every timezone the database server knows (CET, GMT, EST5EDT and Japan included, so an
    edit never silently turns such a schedule into UTC); Python's own list if the server cannot be asked."""
    try:
        names: Iterable[str] = _server_timezones(settings().require_database())
    except Exception:  # noqa: BLE001 - the sidebar must draw even when the database is down
        names = zoneinfo.available_timezones()
    return ["UTC", *sorted(z for z in set(names) if z != "UTC")]


def sidebar(user: dict[str, str]) -> None:
    with st.sidebar:
        st.text(f"Signed in as {user['name']} ({user['role']})")
        if user["name"] != "local" and st.button("Sign out", key="sign_out"):
            sign_out()
            st.rerun()
        zones = timezones()
        if "tz" not in st.session_state:  # the URL's ?tz= (kept across reloads), else the browser's zone
            chosen = st.query_params.get("tz") or getattr(st.context, "timezone", None)
            st.session_state["tz"] = chosen if chosen in zones else "UTC"
        st.selectbox("Times shown in", zones, key="tz")
        if st.query_params.get("tz") != st.session_state["tz"]:
            st.query_params["tz"] = st.session_state["tz"]
        st.selectbox("Auto-refresh", list(REFRESH_CHOICES), key="refresh")


def tz() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(st.session_state.get("tz") or "UTC")


def refresh_seconds() -> int | None:
    return REFRESH_CHOICES.get(st.session_state.get("refresh", "Off"))


def live(render: Callable[[], None]) -> None:
    """Run `render` as a fragment that reruns at the chosen auto-refresh interval (or not at all)."""
    st.fragment(render, run_every=refresh_seconds())()


# ---------------------------------------------------------------------- formatting
def when(value: datetime | None) -> str:
    """A timestamp in the chosen timezone, '' for none."""
    if value is None:
        return ""
    return value.astimezone(tz()).strftime("%Y-%m-%d %H:%M:%S")


def when_short(value: datetime | None) -> str:
    """A timestamp in the chosen timezone to the minute ('2026-12-02 13:31'), for narrow table columns."""
    return when(value)[:16]


def when_text(value: str | None) -> str:
    """An ISO timestamp stored as JSON text (job errors) in the chosen timezone."""
    if not value:
        return "?"
    try:
        return when(datetime.fromisoformat(value))
    except ValueError:
        return value


def naive_local(value: datetime) -> datetime:
    """Wall-clock time in the chosen timezone, without tzinfo (for chart axes)."""
    return value.astimezone(tz()).replace(tzinfo=None)


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    return f"{seconds_text(abs(seconds))} {'ago' if seconds >= 0 else 'from now'}"


def seconds_text(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return ""
    s = float(seconds)
    if abs(s) < 1:
        return f"{s * 1000:.0f} ms"
    if abs(s) < 120:
        return f"{s:.1f} s"
    if abs(s) < 7200:
        return f"{s / 60:.1f} min"
    if abs(s) < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def job_state_text(job: dict[str, Any], now: datetime | None = None) -> str:
    """A job's state as an operator reads it: a job waiting for its retry is not just 'available'."""
    state = job.get("state")
    if state == "available" and (job.get("attempt") or 0) >= 1:
        nxt, total = job["attempt"] + 1, job.get("max_attempts")
        at = job.get("scheduled_at")
        if at is not None and at > (now or datetime.now(UTC)):
            return f"retry at {when(at)} (attempt {nxt} of {total})"
        return f"waiting to retry (attempt {nxt} of {total})"
    return str(state or "")


def job_duration_text(job: dict[str, Any], now: datetime | None = None) -> str:
    """How long the job ran ('12 ms', '3.4 s'), '' before it started; a running one counts up."""
    started, finished = job.get("started_at"), job.get("finished_at")
    if started is None or (finished is None and job.get("state") != "running"):
        return ""
    seconds = ((finished or now or datetime.now(UTC)) - started).total_seconds()
    return seconds_text(seconds) + ("" if finished else " so far")


@lru_cache(maxsize=4096)
def cron_text(expr: str, timezone: str = "UTC") -> str:
    """The human description of a cron ('every 2 minutes'), or the error text."""
    try:
        return describe_cron(expr, timezone, count=0)["description"]
    except AdminError as exc:
        return f"invalid: {exc}"


def table(rows: Iterable[dict[str, Any]], columns: dict[str, str], *, times: Iterable[str] = (),
          key: str | None = None, height: int | str | None = None) -> pd.DataFrame:
    """Show rows as a dataframe with `columns` {field: header}; `times` are formatted in the chosen zone."""
    times = set(times)
    data = [{header: (when(r.get(field)) if field in times else r.get(field)) for field, header in columns.items()}
            for r in rows]
    frame = pd.DataFrame(data, columns=list(columns.values()))
    kwargs: dict[str, Any] = {"hide_index": True, "key": key}
    if height == "fit":  # every row visible, no inner scrollbar
        kwargs["height"] = 38 + 35 * max(len(frame), 1)
    elif height:
        kwargs["height"] = height
    st.dataframe(frame, **kwargs)
    return frame


def confirm(key: str, prompt: str, action: str) -> bool:
    """A two-step confirmation: after `ask(key)`, show `prompt` and return True once confirmed."""
    if not st.session_state.get(f"_confirm_{key}"):
        return False
    st.warning(md(prompt))
    yes, no = st.columns([1, 6])
    if yes.button(action, key=f"_confirm_yes_{key}", type="primary"):
        st.session_state.pop(f"_confirm_{key}", None)
        return True
    if no.button("Cancel", key=f"_confirm_no_{key}"):
        st.session_state.pop(f"_confirm_{key}", None)
        st.rerun()
    return False


def ask(key: str) -> None:
    st.session_state[f"_confirm_{key}"] = True
