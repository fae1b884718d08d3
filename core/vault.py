"""The vault: the few customer values a tool needs, encrypted at rest, kept for a limited time.

Conversation state, packets and logs hold placeholders such as ``[email]``; the value behind one
(the address the customer gave, the one-time code they typed) is stored here under a reference
and read back by the node that needs it. Values are encrypted with Fernet (AES-128-CBC and
HMAC-SHA256) under ``TIERONE_VAULT_KEY``; several comma-separated keys rotate (the first encrypts,
any decrypts). Entries older than the retention limit are purged.

To find a customer's conversations for erasure without keeping their address in clear, the vault
records a keyed hash (HMAC-SHA256) of each address a conversation gave; it never expires.

Other stores that must keep a value they will use again (the email channel: the address the next
reply goes to, a mail still to send) seal it under the same keys with ``Sealer``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.db import DatabaseTarget, Migration, Migrations, Step, open_database
from core.errors import TieroneError
from core.redact import redact_spans

log = logging.getLogger("tierone")

REF_PREFIX = "vault:"

_ENTRIES = """CREATE TABLE IF NOT EXISTS entries (
        ref TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        secret {blob} NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )"""

_SCHEMA: tuple[Step, ...] = (
    {"sqlite": _ENTRIES.format(blob="BLOB"), "postgresql": _ENTRIES.format(blob="BYTEA")},
    "CREATE INDEX IF NOT EXISTS entries_conversation ON entries (conversation_id)",
    "CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at)",
    """CREATE TABLE IF NOT EXISTS subjects (
        subject TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        PRIMARY KEY (subject, conversation_id)
    )""",
)


class VaultKeyError(TieroneError):
    """The vault key is missing or malformed; the text says how to make one."""


def _fernet(keys: str) -> MultiFernet:
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise VaultKeyError("TIERONE_VAULT_KEY is empty; set it to a key from `tierone vault-key`")
    try:
        return MultiFernet([Fernet(k.encode()) for k in parts])
    except ValueError as exc:
        raise VaultKeyError(
            "TIERONE_VAULT_KEY is not a valid key: each comma-separated key must be 32 url-safe "
            "base64-encoded bytes, such as the output of `tierone vault-key`"
        ) from exc


def _derived_key(label: bytes, keys: str) -> bytes:
    """A key for one purpose, from the first (current) vault key."""
    return hashlib.sha256(label + keys.split(",")[0].strip().encode()).digest()


SEALED_PREFIX = "sealed:"


class Sealer:
    """Encrypts single values under the vault keys, for stores outside the vault.

    A sealed value is ``sealed:`` and a Fernet token, so a reader tells it from one written in
    clear by an older version.
    """

    def __init__(self, key: str) -> None:
        self._crypt = _fernet(key)

    @classmethod
    def ephemeral(cls) -> Sealer:
        """A sealer under a random key that lives as long as the process (tests, one-off tools)."""
        return cls(Fernet.generate_key().decode())

    def seal(self, value: str) -> str:
        """The value encrypted, as text."""
        return SEALED_PREFIX + self._crypt.encrypt(value.encode("utf-8")).decode("ascii")

    def unseal(self, stored: str) -> str | None:
        """The value behind ``stored``; None when it was sealed under a key no longer configured."""
        if not stored.startswith(SEALED_PREFIX):
            return stored  # written in clear, before values were sealed
        try:
            return self._crypt.decrypt(stored[len(SEALED_PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            return None


def load_key(configured: str | None, data_dir: Path) -> str:
    """The configured key, or a development key kept in DATA_DIR/vault.key (made on first use)."""
    if configured:
        _fernet(configured)
        return configured
    path = data_dir / "vault.key"
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key().decode()
        # Created readable by the owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
    log.warning(
        "TIERONE_VAULT_KEY IS NOT SET: customer values are encrypted with a development key kept next to "
        "the data, at %s. Anyone who can read the data folder can read them. Set TIERONE_VAULT_KEY "
        "(from `tierone vault-key`) and keep it outside the data folder before serving real customers.",
        path,
    )
    _fernet(key)
    return key


class Vault:
    """Encrypted values by reference, per conversation, with a retention limit."""

    # In a file of its own; erasure asks it to forget a conversation (``forget``).
    MIGRATIONS: ClassVar[Migrations] = Migrations("vault", Migration(1, *_SCHEMA))

    def __init__(
        self,
        path: DatabaseTarget | str,
        key: str,
        clock: Callable[[], datetime],
        *,
        retention: timedelta = timedelta(hours=24),
    ) -> None:
        self._crypt = _fernet(key)
        self.sealer = Sealer(key)
        # The subject hash and the one-time codes have keys of their own, derived from the vault key.
        self._subject_key = _derived_key(b"tierone-vault-subject:", key)
        self._code_key = _derived_key(b"tierone-vault-code:", key)
        self._db = open_database(Path(path) if isinstance(path, str) else path, secure_delete=True)
        self._clock = clock
        self.retention = retention
        self._db.migrate(self.MIGRATIONS)

    @classmethod
    def in_memory(cls, clock: Callable[[], datetime]) -> Vault:
        """A vault that lives as long as the process, under a random key (tests, one-off tools)."""
        return cls(":memory:", Fernet.generate_key().decode(), clock)

    def put(self, conversation_id: str, kind: str, value: str, *, ref: str | None = None) -> str:
        """Store a value; return its reference (``vault:...``). A given ref is overwritten (replays)."""
        now = self._clock()
        ref = ref or f"{conversation_id}:{secrets.token_urlsafe(9)}"
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM entries WHERE expires_at < ?", (now.isoformat(),))
            conn.execute(
                "INSERT INTO entries (ref, conversation_id, kind, secret, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ref) DO UPDATE SET conversation_id = excluded.conversation_id,"
                " kind = excluded.kind, secret = excluded.secret, created_at = excluded.created_at,"
                " expires_at = excluded.expires_at",
                (
                    ref,
                    conversation_id,
                    kind,
                    self._crypt.encrypt(value.encode("utf-8")),
                    now.isoformat(),
                    (now + self.retention).isoformat(),
                ),
            )
        return REF_PREFIX + ref

    def get(self, ref: str | None) -> str | None:
        """The value behind a reference, or None when it is unknown, expired or unreadable."""
        if not ref or not ref.startswith(REF_PREFIX):
            return None
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT secret, expires_at FROM entries WHERE ref = ?", (ref[len(REF_PREFIX) :],)
            ).fetchone()
        if row is None or datetime.fromisoformat(row["expires_at"]) < self._clock():
            return None
        try:
            return self._crypt.decrypt(bytes(row["secret"])).decode("utf-8")
        except InvalidToken:
            # Written under a key that is no longer configured: as good as gone.
            return None

    def purge(self) -> int:
        """Delete every entry past its retention limit; return how many."""
        with self._db.transaction() as conn:
            cur = conn.execute("DELETE FROM entries WHERE expires_at < ?", (self._clock().isoformat(),))
            return cur.rowcount

    def subject(self, email: str) -> str:
        """The keyed hash that stands for an address (case and surrounding space ignored)."""
        return hmac.new(self._subject_key, email.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()

    def code_for(self, idempotency_key: str) -> str:
        """The six-digit one-time code for one send (an HMAC of its idempotency key).

        Unpredictable without the vault key, and the same when that send is replayed after a
        crash, so a mail sent twice carries one code.
        """
        digest = hmac.new(self._code_key, idempotency_key.encode("utf-8"), hashlib.sha256).digest()
        return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"

    def link_subject(self, conversation_id: str, email: str) -> None:
        """Remember that this conversation gave this address, as a keyed hash only."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO subjects (subject, conversation_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (self.subject(email), conversation_id),
            )

    def conversations_of(self, email: str) -> list[str]:
        """Conversations that gave this address."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT conversation_id FROM subjects WHERE subject = ?", (self.subject(email),))
            return sorted(r[0] for r in rows)

    def forget(self, conversation_id: str) -> int:
        """Delete a conversation's entries and subject links; return how many entries went."""
        with self._db.transaction() as conn:
            cur = conn.execute("DELETE FROM entries WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM subjects WHERE conversation_id = ?", (conversation_id,))
            return cur.rowcount

    def compact(self) -> None:
        """Empty the write-ahead log, which still holds the pages as they were before a delete."""
        self._db.checkpoint()

    def close(self) -> None:
        """Close the database."""
        self._db.close()


# The kinds of value a tool may need; every other finding stays a placeholder, even for the brain.
HELD_KINDS = ("email", "code", "phone", "dob")
# The held kinds the brain reads in clear (and routing matches); a held phone number or date of
# birth stays a placeholder for it, and reaches only the tool that checks it (agent/nodes.py).
REVEALED_KINDS = ("email", "code")


def hold(
    vault: Vault, conversation_id: str, text: str, kinds: tuple[str, ...] = HELD_KINDS, *, dates: bool = False
) -> tuple[str, list[dict[str, object]]]:
    """Redact a message; put its addresses and codes in the vault, noting where each placeholder sits.

    ``kinds`` may add a kind the conversation asked for (a phone number, when a runbook's slot wants one).
    ``dates``: the message answers a question for a date of birth, so every whole date in it is one.
    """
    redacted, pairs = redact_spans(text, dates=dates)
    held: list[dict[str, object]] = []
    for original, mark in pairs:
        if original.kind in kinds:
            ref = vault.put(conversation_id, original.kind, text[original.start : original.end])
            held.append({"kind": original.kind, "start": mark.start, "end": mark.end, "ref": ref})
    return redacted, held


def reveal(vault: Vault, text: str, held: list[dict[str, Any]]) -> str:
    """The redacted message with its held values put back (placeholders stay where a value is gone)."""
    out: list[str] = []
    at = 0
    for entry in sorted(held, key=lambda h: int(h["start"])):
        start, end = int(entry["start"]), int(entry["end"])
        if start < at or end > len(text):
            continue
        value = vault.get(str(entry["ref"]))
        out.append(text[at:start])
        out.append(value if value is not None else text[start:end])
        at = end
    out.append(text[at:])
    return "".join(out)
