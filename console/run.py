"""Launch the console: `python -m console [--insecure] [--token] [streamlit options...]`.

It refuses to serve a console without sign-in on anything but a loopback address: with no users configured
(see `console/auth.py`), `--server.address` must be 127.0.0.1 / ::1 / localhost unless `--insecure` is
given. The address defaults to 127.0.0.1 (plain `streamlit run` would listen on every interface). Streamlit
runs through `console.serve`, which refuses requests whose Host or Origin is not an allowed name (DNS
rebinding, cross-site websockets; see `console/guard.py` and PGJOBS_CONSOLE_ALLOWED_HOSTS). `--token` (or
PGJOBS_CONSOLE_TOKEN) also requires a secret token, given once in the printed URL, as Jupyter does. The
database comes from PGJOBS_DATABASE_URL like the rest of pgjobs. `python -m console hash-password` prints a
password hash for the users configuration.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import sys
from pathlib import Path

from console import auth, guard
from pgjobs.config import ConfigError, normalize_database_url

APP = Path(__file__).resolve().parent / "app.py"
ROOT = APP.parent.parent
INSECURE_ENV = "PGJOBS_CONSOLE_INSECURE"
READ_URL_ENV = "PGJOBS_CONSOLE_READ_URL"  # a replica for the console's reads (console/ui.py admin())


def is_loopback(address: str | None) -> bool:
    if not address:
        return False  # Streamlit's default: every interface
    if address.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _option(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in streamlit-style arguments, last one wins."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def plan(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The streamlit command line and environment for `argv`, or SystemExit with a one-line reason."""
    args = list(argv)
    insecure = "--insecure" in args
    make_token = "--token" in args
    args = [a for a in args if a not in ("--insecure", "--token")]
    try:
        users = auth.load_users(env)
        sso = auth.load_oidc_roles(env)
    except auth.AuthConfigError as exc:
        raise SystemExit(f"pgjobs console: error: {exc}") from None
    try:
        guard.allowed_hosts(env)
        if env.get(guard.TOKEN_ENV):
            guard.check_token(env[guard.TOKEN_ENV])
    except guard.GuardConfigError as exc:
        raise SystemExit(f"pgjobs console: error: {exc}") from None
    address = _option(args, "--server.address") or env.get("STREAMLIT_SERVER_ADDRESS")
    if address is None:
        address = "127.0.0.1"
        args += ["--server.address", address]
    if not users and not sso and not is_loopback(address) and not insecure:
        raise SystemExit(
            f"pgjobs console: error: refusing to listen on '{address}' without sign-in; configure users "
            "(PGJOBS_CONSOLE_USERS or PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH, see `python -m console "
            "hash-password`), bind to 127.0.0.1, or pass --insecure")
    if not (env.get("PGJOBS_DATABASE_URL") or env.get("DATABASE_URL")):
        raise SystemExit("pgjobs console: error: set PGJOBS_DATABASE_URL (or DATABASE_URL)")
    if env.get(READ_URL_ENV, "").strip():
        try:
            normalize_database_url(env[READ_URL_ENV])
        except ConfigError as exc:
            raise SystemExit(f"pgjobs console: error: {READ_URL_ENV}: {exc}") from None
    if _option(args, "--server.headless") is None:
        args += ["--server.headless", "true"]
    if _option(args, "--client.toolbarMode") is None:  # no "Deploy" button or developer menu
        args += ["--client.toolbarMode", "minimal"]
    if _option(args, "--browser.gatherUsageStats") is None:
        args += ["--browser.gatherUsageStats", "false"]
    child_env = dict(env)
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if make_token and not child_env.get(guard.TOKEN_ENV):
        child_env[guard.TOKEN_ENV] = secrets.token_urlsafe(24)
    if insecure:
        child_env[INSECURE_ENV] = "1"
    else:
        child_env.pop(INSECURE_ENV, None)
    return [sys.executable, "-m", "console.serve", "run", str(APP), *args], child_env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hash-password"]:
        return auth.main(["hash", *argv[1:]])
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    command, env = plan(argv, dict(os.environ))
    if env.get(guard.TOKEN_ENV):
        host = _option(command, "--server.address") or "127.0.0.1"
        host = "127.0.0.1" if host in guard.WILDCARD_ADDRESSES else host
        host = f"[{host}]" if ":" in host else host
        print(f"pgjobs console: open http://{host}:{_option(command, '--server.port') or 8501}/"
              f"?token={env[guard.TOKEN_ENV]}", flush=True)
    if os.name == "posix":  # become streamlit: signals and the process id go straight to it
        os.execve(command[0], command, env)
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
