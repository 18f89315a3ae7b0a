"""Sign-in tokens, sessions and CSRF tokens of the admin console.

A token reads ``hfa.<id>.<secret>``: the id finds its row, the secret is checked against a
salted scrypt hash (never stored in clear). A session is a random cookie value whose
SHA-256 is what the database keeps, so a copy of the database signs nobody in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from engine import ChannelKey
from engine.store import Store, StoredAdminToken

__all__ = ["Manager", "new_token", "check_token", "start_session", "session_manager", "end_session",
           "session_digest", "SESSION_SECONDS", "parse_scope"]

SESSION_SECONDS = 12 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True, slots=True)
class Manager:
    """Who is signed in: a token's name and the space it may see (``scope`` "": every space)."""

    token_id: int
    name: str
    scope: str
    csrf: str

    @property
    def spaces(self) -> list[tuple[str, str]] | None:
        """The (platform, space) pairs this manager sees; None: every space (a single operator)."""
        if not self.scope:
            return None
        platform, _, space = self.scope.partition(":")
        return [(platform, space)]

    @property
    def author_id(self) -> str:
        """Who the audit log names for this manager's changes."""
        return f"admin:{self.name}"

    def sees(self, key: ChannelKey) -> bool:
        return self.spaces is None or (key.platform, key.space) in self.spaces


def parse_scope(text: str) -> str:
    """``platform:space`` (one space) or ``""`` (every space); raises ``ValueError`` otherwise."""
    if not text:
        return ""
    platform, sep, space = text.partition(":")
    if not sep or not platform or ":" in space:
        raise ValueError(f"not a space: {text!r} (want platform:space, e.g. discord:123456 or console:local)")
    return text


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


async def new_token(store: Store, name: str, scope: str) -> str:
    """Create a token; the returned text is its only clear copy."""
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    token_id = await store.add_admin_token(name, scope, salt, _hash(secret, salt))
    return f"hfa.{token_id}.{secret}"


async def check_token(store: Store, token: str) -> StoredAdminToken | None:
    """The live token ``token`` names, when its secret matches; None otherwise."""
    prefix, _, rest = token.strip().partition(".")
    token_id, _, secret = rest.partition(".")
    if prefix != "hfa" or not token_id.isdigit() or not secret or len(token_id) > 12:
        return None
    stored = await store.admin_token(int(token_id))
    # Hash even for an unknown id, so the answer's timing does not tell which ids exist.
    digest = _hash(secret, stored.salt if stored else b"\0" * 16)
    if stored is None or not hmac.compare_digest(digest, stored.digest):
        return None
    return stored


def session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


async def start_session(store: Store, token: StoredAdminToken) -> str:
    """A new session for ``token``; returns the cookie value."""
    session_id = secrets.token_urlsafe(32)
    await store.add_admin_session(session_digest(session_id), token.id, secrets.token_urlsafe(32),
                                  time.time() + SESSION_SECONDS)
    return session_id


async def session_manager(store: Store, session_id: str | None) -> Manager | None:
    """The manager a session cookie signs in, or None (no, expired or revoked session)."""
    if not session_id or len(session_id) > 128:
        return None
    found = await store.admin_session(session_digest(session_id))
    if found is None:
        return None
    return Manager(found.token.id, found.token.name, found.token.scope, found.csrf)


async def end_session(store: Store, session_id: str | None) -> None:
    if session_id:
        await store.end_admin_session(session_digest(session_id))
