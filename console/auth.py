"""Console users and password hashes (stdlib only).

Hash format (one string, safe in an environment variable):
    scrypt$<log2 n>$<r>$<p>$<salt, base64url>$<key, base64url>      (written by `hash_password`)
    pbkdf2_sha256$<iterations>$<salt, base64url>$<key, base64url>    (accepted too)

Users come from the environment:
- PGJOBS_CONSOLE_USERS: comma-separated `name:role:hash` entries, role `admin` or `viewer`;
- PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH: a user named `admin` with the admin role;
- PGJOBS_CONSOLE_VIEWER_PASSWORD_HASH: a user named `viewer` with the viewer role.
No users configured means no sign-in, which the launcher allows on a loopback address only.

A signed-in browser keeps a session cookie (`make_session` / `read_session`): `name:role:expires:signature`,
HMAC-SHA256 with PGJOBS_CONSOLE_SESSION_SECRET (or a key derived from the users' hashes), valid 12 hours, so
a reload does not sign out. Signing out clears it in that browser.

Make a hash with `python -m console.auth hash` (prompts, or reads one line from stdin when piped).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass

ROLES = ("admin", "viewer")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 14, 8, 1


class AuthConfigError(ValueError):
    """The users configuration is unusable; the message names the variable and the entry."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """An scrypt hash of `password` in the format above."""
    if not password:
        raise ValueError("password is empty")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=2**SCRYPT_LOG2_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_hash_format(encoded: str) -> None:
    """Raise ValueError unless `encoded` is a hash this module can verify."""
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if not (1 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
                raise ValueError("scrypt parameters out of range")
            _unb64(parts[4]), _unb64(parts[5])
            return
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if int(parts[1]) < 100_000:
                raise ValueError("pbkdf2 needs at least 100000 iterations")
            _unb64(parts[2]), _unb64(parts[3])
            return
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed password hash ({exc})") from None
    raise ValueError("unknown password hash format: expected scrypt$... or pbkdf2_sha256$... "
                     "(make one with `python -m console.auth hash`)")


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches `encoded`; constant-time comparison, False for malformed hashes."""
    try:
        check_hash_format(encoded)
    except ValueError:
        return False
    parts = encoded.split("$")
    if parts[0] == "scrypt":
        n, r, p = 2 ** int(parts[1]), int(parts[2]), int(parts[3])
        expected = _unb64(parts[5])
        key = hashlib.scrypt(password.encode(), salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(expected),
                             maxmem=256 * n * r + 1024 * 1024)
    else:
        expected = _unb64(parts[3])
        key = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(parts[2]), int(parts[1]), len(expected))
    return hmac.compare_digest(key, expected)


def load_users(env: Mapping[str, str] | None = None) -> dict[str, User]:
    """The configured users by name; raises AuthConfigError naming the bad entry."""
    env = os.environ if env is None else env
    users: dict[str, User] = {}

    def add(name: str, role: str, encoded: str, where: str) -> None:
        if not _NAME_RE.match(name):
            raise AuthConfigError(f"{where}: user name '{name}': use 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise AuthConfigError(f"{where}: role '{role}' for user '{name}': use admin or viewer")
        try:
            check_hash_format(encoded)
        except ValueError as exc:
            raise AuthConfigError(f"{where}: user '{name}': {exc}") from None
        if name in users:
            raise AuthConfigError(f"{where}: user '{name}' is defined twice")
        users[name] = User(name, role, encoded)

    for entry in (e.strip() for e in env.get("PGJOBS_CONSOLE_USERS", "").split(",")):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3:
            raise AuthConfigError("PGJOBS_CONSOLE_USERS: expected comma-separated name:role:hash entries")
        add(parts[0].strip(), parts[1].strip(), parts[2].strip(), "PGJOBS_CONSOLE_USERS")
    for role in ROLES:
        var = f"PGJOBS_CONSOLE_{role.upper()}_PASSWORD_HASH"
        if env.get(var, "").strip():
            add(role, role, env[var].strip(), var)
    return users


def authenticate(users: Mapping[str, User], name: str, password: str) -> User | None:
    """The user if the name and password match, else None (a hash is computed either way)."""
    user = users.get(name)
    if user is None:
        verify_password(password, _DUMMY_HASH)  # same work for unknown names: no user enumeration by timing
        return None
    return user if verify_password(password, user.password_hash) else None


# ---------------------------------------------------------------------- single sign-on (OIDC, st.login)
OIDC_ROLES_ENV = "PGJOBS_CONSOLE_OIDC_ROLES"
_EMAIL_RE = re.compile(r"^[^\s@:,]{1,64}@[^\s@:,]{1,190}$")
_DOMAIN_RE = re.compile(r"^\*@[^\s@:,*]{1,190}$")


def load_oidc_roles(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """PGJOBS_CONSOLE_OIDC_ROLES: comma-separated `email:role` or `*@domain:role` rules, first match wins. Set,
    the console offers single sign-on through Streamlit's `st.login` (the provider is configured in the
    `[auth]` section of Streamlit's secrets). Raises AuthConfigError naming the bad rule."""
    env = os.environ if env is None else env
    rules: list[tuple[str, str]] = []
    for entry in (e.strip() for e in env.get(OIDC_ROLES_ENV, "").split(",")):
        if not entry:
            continue
        pattern, _, role = entry.rpartition(":")
        pattern, role = pattern.strip().lower(), role.strip()
        if not pattern:
            raise AuthConfigError(f"{OIDC_ROLES_ENV}: expected comma-separated email:role or *@domain:role rules")
        if role not in ROLES:
            raise AuthConfigError(f"{OIDC_ROLES_ENV}: role '{role[:40]}' for '{pattern[:80]}': use admin or viewer")
        if not (_EMAIL_RE.match(pattern) or _DOMAIN_RE.match(pattern)):
            raise AuthConfigError(f"{OIDC_ROLES_ENV}: '{pattern[:80]}': use an email address or *@domain")
        rules.append((pattern, role))
    return rules


def oidc_role(rules: list[tuple[str, str]], email: str | None, verified: bool | None = True) -> str | None:
    """The role of a signed-in provider account by its email (first matching rule), or None. An email the
    provider says is not verified never matches."""
    if not email or verified is False:
        return None
    email = email.strip().lower()
    for pattern, role in rules:
        if pattern == email or (pattern.startswith("*@") and email.endswith(pattern[1:])):
            return role
    return None


# ---------------------------------------------------------------------- the session cookie
SESSION_COOKIE = "pgjobs_console_session"
SESSION_SECRET_ENV = "PGJOBS_CONSOLE_SESSION_SECRET"
SESSION_TTL_SECONDS = 12 * 3600


def session_key(users: Mapping[str, User], env: Mapping[str, str] | None = None) -> bytes:
    """The key that signs session cookies: PGJOBS_CONSOLE_SESSION_SECRET, else derived from the users'
    password hashes (secret like the passwords; changing a password or a role ends that user's sessions)."""
    env = os.environ if env is None else env
    secret = env.get(SESSION_SECRET_ENV, "").strip()
    material = secret or "\0".join(f"{u.name}:{u.role}:{u.password_hash}" for u in sorted(users.values(),
                                                                                         key=lambda u: u.name))
    return hashlib.sha256(b"pgjobs-console-session\0" + material.encode()).digest()


def _session_sig(key: bytes, name: str, role: str, expires: int, password_hash: str) -> str:
    message = f"{name}:{role}:{expires}:{hashlib.sha256(password_hash.encode()).hexdigest()}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def make_session(user: User, key: bytes, now: float, ttl: int = SESSION_TTL_SECONDS) -> str:
    """A signed, expiring cookie value naming `user`: `name:role:expires:signature`."""
    expires = int(now) + ttl
    return f"{user.name}:{user.role}:{expires}:{_session_sig(key, user.name, user.role, expires, user.password_hash)}"


def read_session(value: str | None, users: Mapping[str, User], key: bytes, now: float) -> User | None:
    """The user a cookie value names, if its signature holds, it has not expired, and the user still exists
    with that role and password; else None."""
    parts = (value or "").split(":")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    name, role, expires, sig = parts[0], parts[1], int(parts[2]), parts[3]
    user = users.get(name)
    if user is None or user.role != role or expires <= now:
        return None
    if not hmac.compare_digest(sig.encode(), _session_sig(key, name, role, expires, user.password_hash).encode()):
        return None
    return user


_DUMMY_HASH = "scrypt$14$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def main(argv: list[str] | None = None) -> int:
    import getpass

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["hash"] and any(a in ("-h", "--help") for a in args[1:]):
        print("usage: python -m console hash-password   (or python -m console.auth hash)\n\n"
              "Prints an scrypt hash of a password for PGJOBS_CONSOLE_USERS or\n"
              "PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH. Prompts twice on a terminal; reads one line from stdin\n"
              "when piped: echo -n 'secret' | python -m console hash-password")
        return 0
    if args[:1] != ["hash"] or len(args) > 1:
        print("usage: python -m console.auth hash   (prompts for a password; or pipe it on stdin)",
              file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("error: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
