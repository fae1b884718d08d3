"""Who may do what: API keys for L2 technicians and admins, and each conversation's customer token.

Only SHA-256 hashes of keys and tokens are stored. Both are 32 random bytes, so a fast hash is
enough: there is nothing to guess by brute force, unlike a password.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, cast

from core.db import DatabaseTarget, Migration, Migrations, PersonalTables, open_database
from core.errors import TieroneError

# lead: a support lead, who reads insights and audits and never acts on tickets.
Role = Literal["l2", "admin", "lead"]
ROLES: tuple[Role, ...] = ("l2", "admin", "lead")
_NAME = re.compile(r"^[\w .@'-]{1,80}$")


class ApiKeyRejected(TieroneError):
    """An API key cannot be created or revoked as asked; the text says why."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """A technician or admin, as their API key names them."""

    name: str
    role: Role


@dataclass(frozen=True)
class KeyInfo:
    """An API key's record, without the key."""

    name: str
    role: Role
    prefix: str
    created_at: str
    revoked_at: str | None


class ApiKeys:
    """API keys of technicians and admins, stored hashed; a key is shown once, when it is created."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "api_keys",
        Migration(
            1,
            "CREATE TABLE IF NOT EXISTS api_keys (key_hash TEXT PRIMARY KEY, name TEXT NOT NULL,"
            " role TEXT NOT NULL, prefix TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)",
        ),
    )
    # Technicians' and admins' keys: nothing of a customer's conversation.
    PERSONAL_TABLES: ClassVar[PersonalTables] = {}

    def __init__(self, path: DatabaseTarget, clock: Callable[[], datetime] | None = None) -> None:
        from core.clock import utc_now

        self._db = open_database(path)
        self._clock = clock or utc_now
        self._db.migrate(self.MIGRATIONS)

    def create(self, name: str, role: str) -> str:
        """Make a key for ``name`` with ``role`` (l2, admin or lead) and return it; only its hash is kept."""
        if role not in ROLES:
            raise ApiKeyRejected(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        name = name.strip()
        if not _NAME.match(name):
            raise ApiKeyRejected(
                f"the name {name!r} is not usable; use 1 to 80 letters, digits, spaces or . @ ' - _ (it is shown"
                " to customers with the technician's replies)"
            )
        key = "t1_" + secrets.token_urlsafe(32)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                (_hash(key), name, role, key[:9], self._clock().isoformat()),
            )
        return key

    def verify(self, key: str) -> Principal | None:
        """The key's holder, or None for an unknown or revoked key."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT name, role FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (_hash(key),)
            ).fetchone()
        return Principal(name=row["name"], role=cast(Role, row["role"])) if row else None

    def revoke(self, name: str) -> int:
        """Revoke every live key of ``name``; return how many were revoked."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (self._clock().isoformat(), name),
            )
        if cur.rowcount == 0:
            raise ApiKeyRejected(f"{name!r} has no live API key; `tierone keys list` shows them")
        return cur.rowcount

    def list(self) -> list[KeyInfo]:
        """Every key's record, oldest first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, role, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at"
            ).fetchall()
        return [KeyInfo(**dict(r)) for r in rows]


class CustomerTokens:
    """Each conversation's bearer token, stored hashed: whoever holds it is that conversation's customer."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "customer_tokens",
        Migration(
            1,
            "CREATE TABLE IF NOT EXISTS conversation_tokens (conversation_id TEXT PRIMARY KEY,"
            " token_hash TEXT NOT NULL UNIQUE)",
        ),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"conversation_tokens": {"conversation_id": "conversation"}}

    def __init__(self, path: DatabaseTarget) -> None:
        self._db = open_database(path)
        self._db.migrate(self.MIGRATIONS)

    def issue(self, conversation_id: str) -> str:
        """Make the conversation's token and return it; it is not stored anywhere readable."""
        token = secrets.token_urlsafe(32)
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO conversation_tokens VALUES (?, ?)", (conversation_id, _hash(token)))
        return token

    def verify(self, conversation_id: str, token: str) -> bool:
        """True when the token is this conversation's."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT token_hash FROM conversation_tokens WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
        return row is not None and secrets.compare_digest(row[0], _hash(token))

    def known(self, token: str) -> bool:
        """True when the token belongs to some conversation (to tell a customer from a stranger)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT 1 FROM conversation_tokens WHERE token_hash = ?", (_hash(token),)).fetchone()
        return row is not None


class RateLimiter:
    """Token buckets by key (a conversation, a client address): ``rate_per_minute`` sustained, ``burst`` at once.

    Buckets that have refilled completely are forgotten, so memory stays bounded by the keys active
    within the last refill time.
    """

    def __init__(self, rate_per_minute: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        import time

        self.rate = rate_per_minute / 60.0
        self.burst = max(1, burst)
        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (the limit is off)."""
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket; return 0.0, or the seconds to wait when it is empty."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._guard:
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:
                self._forget(now)
            return 0.0

    def _forget(self, now: float) -> None:
        full = [k for k, (t, then) in self._buckets.items() if t + (now - then) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
