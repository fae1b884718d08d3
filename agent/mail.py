"""The email channel: mail posted by an inbound-parse service in, replies out by mail, one thread.

A mail opens a conversation on channel "email" or continues one, found in this order:

1. its In-Reply-To / References name a mail of the conversation (one we sent, or the customer's own);
2. its sender is the address of a conversation still open (not resolved) and active within the
   last week: a conversation opened by mail from that address, or a chat whose customer proved
   the address with a one-time code (an address merely typed in a chat never links: anyone can
   type one);
3. otherwise it opens a new conversation.

Each Message-ID is played once: a retried webhook finds its first record and plays nothing again,
but still retries any reply that could not be sent. The bot's replies, and L2's replies while the
customer's latest message came by mail, go out through the Mailer (tools/mail.py) with the
threading headers. A reply is recorded before it is sent, so a failed send is retried, not lost.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.policy
import hashlib
import hmac
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.parser import HeaderParser
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from agent.errors import ConversationNotFound, MessageRejected, ToolError
from agent.redact import mask_email
from agent.settings import Settings
from agent.sqlite import Database
from agent.vault import SEALED_PREFIX, Sealer
from tools.mail import Mailer, SmtpMailer, new_message_id, one_line
from tools.outbox import FileOutbox

if TYPE_CHECKING:
    from agent.desk import ReplySent
    from agent.service import Resolver

log = logging.getLogger(__name__)

# A sender's later mail continues their open conversation only if it was active this recently.
CONTINUE_WITHIN = timedelta(days=7)
# How many of a thread's Message-IDs a reply's References header carries (the oldest and newest).
MAX_REFERENCES = 20
# A reply the relay refused this many times is given up (status "failed", with its last error).
MAX_SEND_ATTEMPTS = 10


def open_mailer(settings: Settings, outbox: FileOutbox, clock: Callable[[], datetime]) -> Mailer:
    """The SMTP relay when TIERONE_SMTP_HOST is set, else the file outbox."""
    if not settings.smtp_host:
        return outbox
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        sender=settings.mail_from,
        clock=clock,
        security=settings.smtp_security,
        user=settings.smtp_user,
        password=settings.smtp_password,
        timeout_s=settings.smtp_timeout_s,
    )


# -- authentication ------------------------------------------------------------------------------

Auth = Literal["ok", "missing", "wrong"]


def sign(secret: str, body: bytes) -> str:
    """The X-Tierone-Signature of a body: hex HMAC-SHA256 with the shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def authenticate(secret: str, body: bytes, signature: str | None, authorization: str | None) -> Auth:
    """Check a webhook call: the body's HMAC signature, or the secret as the basic-auth password.

    "missing" when the call carries neither (answer 401), "wrong" when what it carries does not match
    (answer 403).
    """
    basic = _basic_password(authorization)
    if signature is None and basic is None:
        return "missing"
    if signature is not None:
        given = signature.strip().removeprefix("sha256=").lower()
        if hmac.compare_digest(given.encode(), sign(secret, body).encode()):
            return "ok"
    if basic is not None and hmac.compare_digest(basic.encode(), secret.encode()):
        return "ok"
    return "wrong"


def _basic_password(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""  # present but unreadable: a wrong credential, not a missing one
    return decoded.partition(":")[2]


# -- reading a posted mail -----------------------------------------------------------------------

_ID = re.compile(r"<[^<>\s]+>")
# "On Mon, 23 Nov 2026 at 09:00, Support <help@acme.example> wrote:", in a few languages; German puts
# the name after the verb ("Am 23.11.2026 schrieb Support <help@acme.example>:").
_ATTRIBUTION = re.compile(
    r"^\s*(on|am|le|el|il|op|em)\b.*\b(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu)"
    r"(\s+[^:]*[@>][^:]*)?\s*:\s*$",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}\s*$", re.I)
_HEADER_FROM = re.compile(r"^\s*(from|von|de)\s*:", re.IGNORECASE)
_HEADER_NEXT = re.compile(r"^\s*(sent|date|gesendet|envoyé|to|an|à|subject)\s*:", re.IGNORECASE)
_MOBILE = re.compile(r"^\s*(sent from my |get outlook for |sent from (yahoo )?mail for )", re.IGNORECASE)
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def strip_reply(text: str) -> str:
    """The new text of a mail: quoted lines, the quoted mail under its attribution, and the signature removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if line.rstrip() == "--":  # "-- " (RFC 3676) and clients that trim its space: a signature follows
            break
        if _ATTRIBUTION.match(line) or (line.strip() and _ATTRIBUTION.match(f"{line} {following}")):
            break
        if _ORIGINAL.match(line) or re.fullmatch(r"\s*_{10,}\s*", line):
            break
        if _HEADER_FROM.match(line) and any(_HEADER_NEXT.match(n) for n in lines[i + 1 : i + 4]):
            break  # an Outlook-style quoted header block
        if line.lstrip().startswith(">"):
            continue  # quoted inline: the customer's own lines between quotes are kept
        kept.append(line.rstrip())
    while kept and (not kept[-1].strip() or _MOBILE.match(kept[-1])):
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept))


def message_ids(value: str) -> list[str]:
    """The Message-IDs in a header value, angle brackets included (a bare id gets them)."""
    found = _ID.findall(value)
    if found:
        return found
    bare = value.strip()
    return [f"<{bare}>"] if bare and " " not in bare else []


def thread_subject(subject: str) -> str:
    """A subject without its "Re:"/"Fwd:" prefixes."""
    return _REPLY_PREFIX.sub("", one_line(subject)).strip()


@dataclass(frozen=True)
class InboundEmail:
    """A customer's mail as the webhook received it, its text reduced to what is new."""

    sender: str  # the address alone
    sender_name: str
    subject: str
    text: str
    message_id: str
    parents: tuple[str, ...] = ()  # In-Reply-To first, then References newest first
    references: tuple[str, ...] = ()  # as the mail carried them, oldest first

    @property
    def reply_to(self) -> str:
        """Where replies go: the sender, with their name."""
        return formataddr((self.sender_name, self.sender)) if self.sender_name else self.sender


# Mailgun posts "sender" and "body-plain" beside "from" and "text".
_ALIASES = {"sender": "from", "body_plain": "text"}
_THREAD_HEADERS = ("message_id", "in_reply_to", "references")


def _normalised(fields: Mapping[str, Any]) -> dict[str, Any]:
    # Parse services spell fields "Message-Id", "message_id", "body-plain": read them alike.
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = str(key).strip().lower().replace("-", "_")
        out.setdefault(name, value)
    for alias, name in _ALIASES.items():
        if alias in out and name not in out:
            out[name] = out[alias]
    headers = out.get("headers")
    if isinstance(headers, str) and any(name not in out for name in _THREAD_HEADERS):
        # SendGrid's Inbound Parse posts the thread headers only inside the raw header block.
        parsed = HeaderParser(policy=email.policy.compat32).parsestr(headers)
        for name in _THREAD_HEADERS:
            value = parsed.get(name.replace("_", "-"))
            if name not in out and value:
                out[name] = str(value)
    return out


def _text_field(fields: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise MessageRejected(f"the field {name!r} is missing or empty")
        return ""
    if not isinstance(value, str):
        raise MessageRejected(f"the field {name!r} must be text, not {type(value).__name__}")
    return value


def parse_inbound(fields: Mapping[str, Any], *, own_address: str, validate: Callable[[str], str]) -> InboundEmail:
    """Read a posted mail (fields from, subject, text, message_id, in_reply_to, references).

    ``validate`` checks the text the way every customer message is checked (agent/service.py).

    Raises:
        MessageRejected: A field is missing, empty or malformed, the mail holds no new text, or it
            comes from Tierone's own address (a mail loop); the message names the field.
    """
    fields = _normalised(fields)
    raw_from = _text_field(fields, "from", required=True)
    name, address = parseaddr(one_line(raw_from))
    local, at, domain = address.rpartition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in address):
        raise MessageRejected("the field 'from' holds no email address; post the sender as 'Name <address>'")
    if address.casefold() == parseaddr(own_address)[1].casefold():
        raise MessageRejected("the field 'from' is Tierone's own address; a mail loop is refused")
    raw_id = _text_field(fields, "message_id", required=True)
    ids = message_ids(raw_id)
    if len(ids) != 1:
        raise MessageRejected("the field 'message_id' must hold one Message-ID, such as <abc@mail.example.com>")
    if len(ids[0]) > 998:
        raise MessageRejected("the field 'message_id' is longer than a mail header line may be")
    body = _text_field(fields, "text", required=True)
    new_text = strip_reply(body)
    if not new_text.strip():
        raise MessageRejected("the field 'text' holds no new text above the quoted reply and signature")
    subject = one_line(_text_field(fields, "subject", required=False))
    in_reply_to = message_ids(_text_field(fields, "in_reply_to", required=False))
    references = message_ids(_text_field(fields, "references", required=False))
    parents = tuple(dict.fromkeys([*in_reply_to, *reversed(references)]))
    return InboundEmail(
        sender=address,
        sender_name=one_line(name),
        subject=subject,
        text=validate(new_text),
        message_id=ids[0],
        parents=parents[:MAX_REFERENCES],
        references=tuple(references[-MAX_REFERENCES:]),
    )


# -- the store -----------------------------------------------------------------------------------

_SCHEMA = (
    # Every mail taken in, by Message-ID: the de-duplication record and a thread anchor.
    """CREATE TABLE IF NOT EXISTS mail_in (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT,
    matched TEXT,
    played INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL
)""",
    # Every mail sent or to send; the body and the address are kept, sealed, only until it has gone out
    # (or been given up): then the body is dropped and the address masked (j***@example.com).
    """CREATE TABLE IF NOT EXISTS mail_out (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    inbound_id TEXT,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT,
    in_reply_to TEXT,
    refs TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
)""",
    "CREATE INDEX IF NOT EXISTS mail_out_pending ON mail_out (status, created_at)",
    # Where a conversation's mail goes: the latest sender (sealed), subject and thread.
    """CREATE TABLE IF NOT EXISTS mail_threads (
    conversation_id TEXT PRIMARY KEY,
    reply_to TEXT NOT NULL,
    subject TEXT NOT NULL,
    last_in TEXT NOT NULL,
    refs TEXT NOT NULL,
    updated_at TEXT NOT NULL
)""",
    # Which conversations an address may continue; the address is kept as a hash only.
    """CREATE TABLE IF NOT EXISTS mail_contacts (
    address_hash TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (address_hash, conversation_id)
)""",
    "CREATE INDEX IF NOT EXISTS mail_contacts_conversation ON mail_contacts (conversation_id)",
)


def address_hash(address: str) -> str:
    """An unkeyed stand-in for ``MailStore``'s address key (tests, one-off tools); a dictionary reverses it."""
    return hashlib.sha256(f"tierone-mail-contact:{address.strip().casefold()}".encode()).hexdigest()


def masked_address(to: str) -> str:
    """An outgoing mail's address as kept once it is sent: ``j***@example.com``, without the display name."""
    return mask_email(parseaddr(to)[1] or to)


# How an inbound mail found its conversation: a new one, by the thread's Message-IDs, or by the sender.
Matched = Literal["new", "thread", "sender"]


@dataclass(frozen=True)
class Taken:
    """Where the deliveries of one Message-ID got to."""

    conversation_id: str | None  # tied to a conversation (before it was played)
    matched: Matched | None
    played: bool  # played, and its replies recorded


@dataclass(frozen=True)
class Pending:
    """A reply recorded and not yet sent."""

    message_id: str
    conversation_id: str
    to: str
    subject: str
    body: str
    in_reply_to: str | None
    references: tuple[str, ...]


@dataclass(frozen=True)
class Thread:
    """Where a conversation's next mail goes."""

    reply_to: str
    subject: str
    last_in: str
    references: tuple[str, ...]


class MailStore:
    """The email channel's records in SQLite: mail taken in, mail sent, threads, address links."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime],
        *,
        hash_address: Callable[[str], str] = address_hash,
        sealer: Sealer | None = None,
    ) -> None:
        self._db = Database(path)
        self._clock = clock
        # The service passes the vault's keyed hash (Vault.subject): without the key, no dictionary reverses it.
        self._hash = hash_address
        # And the vault's sealer: the addresses and bodies kept for later are encrypted under its keys.
        self._sealer = sealer or Sealer.ephemeral()
        with self._db.transaction() as conn:
            # A dropped body or address is overwritten on disk, not left behind in a free page.
            conn.execute("PRAGMA secure_delete=ON")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._seal_clear_rows(conn)

    def _seal_clear_rows(self, conn: sqlite3.Connection) -> None:
        """Seal what a version that kept it in clear left behind."""
        clear = f"{SEALED_PREFIX}%"
        seal = self._sealer.seal
        for row in conn.execute(
            "SELECT conversation_id, reply_to FROM mail_threads WHERE reply_to NOT LIKE ?", (clear,)
        ).fetchall():
            conn.execute(
                "UPDATE mail_threads SET reply_to = ? WHERE conversation_id = ?",
                (seal(row["reply_to"]), row["conversation_id"]),
            )
        for row in conn.execute(
            "SELECT message_id, to_addr, body FROM mail_out WHERE status = 'pending' AND to_addr NOT LIKE ?", (clear,)
        ).fetchall():
            conn.execute(
                "UPDATE mail_out SET to_addr = ?, body = ? WHERE message_id = ?",
                (seal(row["to_addr"]), seal(row["body"] or ""), row["message_id"]),
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db.transaction() as conn:
            yield conn

    def take(self, message_id: str) -> Taken:
        """Record a Message-ID as taken in (once), and say where an earlier delivery of it got to."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO mail_in (message_id, received_at) VALUES (?, ?)",
                (message_id, self._clock().isoformat()),
            )
            row = conn.execute(
                "SELECT conversation_id, matched, played FROM mail_in WHERE message_id = ?", (message_id,)
            ).fetchone()
        return Taken(row["conversation_id"], cast("Matched | None", row["matched"]), bool(row["played"]))

    def assign(self, message_id: str, conversation_id: str, matched: Matched) -> None:
        """Tie a mail to its conversation before it is played."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE mail_in SET conversation_id = ?, matched = ? WHERE message_id = ?",
                (conversation_id, matched, message_id),
            )

    def conversation_of_mail(self, message_ids: Sequence[str]) -> str | None:
        """The conversation of the first of these Message-IDs that we sent or took in."""
        with self._tx() as conn:
            for mid in message_ids:
                row = conn.execute(
                    "SELECT conversation_id FROM mail_out WHERE message_id = ? UNION ALL"
                    " SELECT conversation_id FROM mail_in WHERE message_id = ? AND conversation_id IS NOT NULL",
                    (mid, mid),
                ).fetchone()
                if row is not None:
                    return str(row[0])
        return None

    def link(self, address: str, conversation_id: str) -> None:
        """Let mail from this address continue this conversation (refreshes the link's time)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO mail_contacts VALUES (?, ?, ?) ON CONFLICT (address_hash, conversation_id)"
                " DO UPDATE SET linked_at = excluded.linked_at",
                (self._hash(address.strip().casefold()), conversation_id, self._clock().isoformat()),
            )

    def touch(self, conversation_id: str) -> bool:
        """Refresh the time of a conversation's links; False when it has none."""
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE mail_contacts SET linked_at = ? WHERE conversation_id = ?",
                (self._clock().isoformat(), conversation_id),
            ).rowcount
        return bool(changed)

    def linked(self, address: str, since: datetime) -> list[str]:
        """Conversations this address may continue, linked since then, the latest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT conversation_id FROM mail_contacts WHERE address_hash = ? AND linked_at >= ?"
                " ORDER BY linked_at DESC",
                (self._hash(address.strip().casefold()), since.isoformat()),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def thread(self, conversation_id: str) -> Thread | None:
        """Where the conversation's mail goes, if the customer ever wrote by mail."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM mail_threads WHERE conversation_id = ?", (conversation_id,)).fetchone()
        if row is None:
            return None
        reply_to = self._sealer.unseal(row["reply_to"])
        if reply_to is None:
            log.warning("the reply address of a mail conversation was sealed under a key no longer configured")
            return None
        return Thread(reply_to, row["subject"], row["last_in"], tuple(row["refs"].split()))

    def played(self, mail: InboundEmail, conversation_id: str, replies: Sequence[Pending]) -> bool:
        """Record, in one transaction, that a mail was played and what to send back.

        False (and nothing recorded) when another delivery of the same mail recorded it first.
        """
        now = self._clock().isoformat()
        with self._tx() as conn:
            first = conn.execute(
                "UPDATE mail_in SET played = 1 WHERE message_id = ? AND played = 0", (mail.message_id,)
            ).rowcount
            if not first:
                return False
            old = conn.execute(
                "SELECT subject, refs FROM mail_threads WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            # The customer's latest subject names the thread; a mail without one keeps the old.
            subject = thread_subject(mail.subject) or (old["subject"] if old else "")
            # Every Message-ID of the thread so far (ours included), for the next reply's References.
            references = _trim(
                dict.fromkeys(
                    [
                        *(old["refs"].split() if old else []),
                        *mail.references,
                        mail.message_id,
                        *(r.message_id for r in replies),
                    ]
                )
            )
            conn.execute(
                "INSERT INTO mail_threads VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET"
                " reply_to = excluded.reply_to, subject = excluded.subject, last_in = excluded.last_in,"
                " refs = excluded.refs, updated_at = excluded.updated_at",
                (
                    conversation_id,
                    self._sealer.seal(mail.reply_to),
                    subject,
                    mail.message_id,
                    " ".join(references),
                    now,
                ),
            )
            for reply in replies:
                self._record(conn, reply, mail.message_id, now)
        return True

    def record(self, reply: Pending) -> None:
        """Record a reply to send (not in answer to a particular mail: an L2 reply) and add it to the thread."""
        with self._tx() as conn:
            self._record(conn, reply, None, self._clock().isoformat())
            old = conn.execute(
                "SELECT refs FROM mail_threads WHERE conversation_id = ?", (reply.conversation_id,)
            ).fetchone()
            if old is not None:
                refs = _trim(dict.fromkeys([*old["refs"].split(), reply.message_id]))
                conn.execute(
                    "UPDATE mail_threads SET refs = ? WHERE conversation_id = ?",
                    (" ".join(refs), reply.conversation_id),
                )

    def _record(self, conn: sqlite3.Connection, reply: Pending, inbound_id: str | None, now: str) -> None:
        conn.execute(
            "INSERT INTO mail_out (message_id, conversation_id, inbound_id, to_addr, subject, body, in_reply_to,"
            " refs, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (
                reply.message_id,
                reply.conversation_id,
                inbound_id,
                self._sealer.seal(reply.to),
                reply.subject,
                self._sealer.seal(reply.body),
                reply.in_reply_to,
                " ".join(reply.references),
                now,
            ),
        )

    def pending(self, inbound_id: str | None = None) -> list[Pending]:
        """Replies not yet sent (those answering one mail, or all), oldest first."""
        query = "SELECT * FROM mail_out WHERE status = 'pending'"
        args: tuple[Any, ...] = ()
        if inbound_id is not None:
            query += " AND inbound_id = ?"
            args = (inbound_id,)
        out = []
        with self._tx() as conn:
            for r in conn.execute(query + " ORDER BY created_at, rowid", args).fetchall():
                to, body = self._sealer.unseal(r["to_addr"]), self._sealer.unseal(r["body"] or "")
                if to is None or body is None:
                    conn.execute(
                        "UPDATE mail_out SET status = 'failed', error = ? WHERE message_id = ?",
                        ("sealed under a key no longer configured", r["message_id"]),
                    )
                    self._settle(conn, r["message_id"])
                    continue
                out.append(
                    Pending(
                        r["message_id"],
                        r["conversation_id"],
                        to,
                        r["subject"],
                        body,
                        r["in_reply_to"],
                        tuple(r["refs"].split()),
                    )
                )
        return out

    def _settle(self, conn: sqlite3.Connection, message_id: str) -> None:
        # A mail that will not be sent again keeps neither its body (the message log has the redacted
        # text) nor its address, but masked.
        row = conn.execute("SELECT to_addr FROM mail_out WHERE message_id = ?", (message_id,)).fetchone()
        if row is not None:
            to = self._sealer.unseal(row["to_addr"])
            conn.execute(
                "UPDATE mail_out SET body = NULL, to_addr = ? WHERE message_id = ?",
                (masked_address(to) if to is not None else "[email]", message_id),
            )

    def sent(self, message_id: str) -> None:
        """Mark a reply sent, drop its body and mask its address."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE mail_out SET status = 'sent', error = NULL, attempts = attempts + 1,"
                " sent_at = ? WHERE message_id = ?",
                (self._clock().isoformat(), message_id),
            )
            self._settle(conn, message_id)

    def failed(self, message_id: str, error: str) -> None:
        """Count a failed attempt; the reply stays pending until MAX_SEND_ATTEMPTS, then it is given up."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE mail_out SET attempts = attempts + 1, error = ?,"
                " status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE status END WHERE message_id = ?",
                (error, MAX_SEND_ATTEMPTS, message_id),
            )
            row = conn.execute("SELECT status FROM mail_out WHERE message_id = ?", (message_id,)).fetchone()
            if row is not None and row["status"] == "failed":
                self._settle(conn, message_id)

    def compact(self) -> bool:
        """Copy the write-ahead log into the file and empty it, so dropped bodies leave no old copy there.

        Waits at most a moment for other readers; False when one held on (the old frames are then
        overwritten as the log is reused, not at once).
        """
        conn = sqlite3.connect(self._db.path, timeout=0.2)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
        return not busy

    def outgoing(self, conversation_id: str) -> list[dict[str, Any]]:
        """A conversation's replies by mail, oldest first (status, attempts, error; no bodies)."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT message_id, inbound_id, subject, in_reply_to, status, attempts, error, created_at, sent_at"
                " FROM mail_out WHERE conversation_id = ? ORDER BY created_at, rowid",
                (conversation_id,),
            ).fetchall()
        return [dict(r) for r in rows]


# -- the channel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What the webhook did with one mail."""

    status: Literal["accepted", "duplicate"]
    conversation_id: str | None  # None for a duplicate whose first delivery is still being played
    matched: Matched | None
    replies_sent: int
    replies_pending: int
    error: str | None = None


class EmailChannel:
    """Plays inbound mail into conversations and sends the replies by mail."""

    def __init__(
        self,
        store: MailStore,
        mailer: Mailer,
        resolver: Resolver,
        *,
        sender: str,
        status: Callable[[str], str],
        validate: Callable[[str], str],
        clock: Callable[[], datetime],
        email_of_account: Callable[[str], str | None] | None = None,
        remember_address: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.mailer = mailer
        self.resolver = resolver
        self.sender = sender
        # Checks a customer message the way every channel does (agent/service.py validate_message).
        self.validate = validate
        self._status = status
        self._clock = clock
        self._email_of_account = email_of_account
        # Lets erasure by address (agent/erasure.py) find the conversations that mail from it opened.
        self._remember_address = remember_address
        self._send_lock = threading.Lock()
        self._find_lock = threading.Lock()

    @property
    def signature(self) -> str:
        """The name replies are signed with."""
        return parseaddr(self.sender)[0] or "Support"

    # -- inbound ---------------------------------------------------------------------------------

    def receive(self, mail: InboundEmail) -> Received:
        """Play one mail into its conversation (once per Message-ID) and send the bot's replies.

        A delivery cut short (a crash, an error) is finished by the next delivery of the same mail:
        the mail stays tied to its conversation, and the resolver answers a message it already
        played (named by the Message-ID) from its record instead of playing it again.
        """
        taken = self.store.take(mail.message_id)
        if taken.played:
            sent, pending, error = self.flush(mail.message_id)
            return Received("duplicate", taken.conversation_id, None, sent, pending, error)
        with self._find_lock:  # two deliveries at once must not open two conversations
            taken = self.store.take(mail.message_id)
            if taken.conversation_id is None:
                cid, matched = self._find(mail)
                self.store.assign(mail.message_id, cid, matched)
            else:
                cid, matched = taken.conversation_id, taken.matched or "thread"
        text = mail.text
        subject = thread_subject(mail.subject)
        if matched == "new" and subject and subject.casefold() not in text.casefold():
            # A first mail's subject often names the problem ("VPN drops every hour").
            with contextlib.suppress(MessageRejected):  # too long with it: the body alone
                text = self.validate(f"{subject}\n\n{text}")
        key = "mail:" + hashlib.sha256(mail.message_id.encode()).hexdigest()
        result = self.resolver.send(cid, text, channel="email", client_message_id=key)
        self.store.link(mail.sender, cid)
        if self._remember_address is not None:
            self._remember_address(cid, mail.sender)
        replies = [self._reply(mail, cid, result.replies)] if result.replies else []
        first = self.store.played(mail, cid, replies)
        sent, pending, error = self.flush(mail.message_id)
        if not pending:
            self.flush()  # and any other reply still waiting (an L2 reply the relay refused before)
        return Received("accepted" if first else "duplicate", cid, matched, sent, pending, error)

    def _find(self, mail: InboundEmail) -> tuple[str, Matched]:
        cid = self.store.conversation_of_mail(mail.parents)
        if cid is not None and self._exists(cid):
            return cid, "thread"
        for candidate in self.store.linked(mail.sender, self._clock() - CONTINUE_WITHIN):
            if self._exists(candidate) and self._open(candidate):
                return candidate, "sender"
        return self.resolver.start("email"), "new"

    def _exists(self, conversation_id: str) -> bool:
        try:
            self.resolver.conversations.get(conversation_id)
        except ConversationNotFound:
            return False
        return True

    def _open(self, conversation_id: str) -> bool:
        if self._status(conversation_id) == "resolved":
            return False
        return bool(self.resolver.view(conversation_id).get("stage") != "resolved")

    def _reply(self, mail: InboundEmail, conversation_id: str, replies: Sequence[str]) -> Pending:
        subject = thread_subject(mail.subject)
        thread = self.store.thread(conversation_id)
        earlier = thread.references if thread else ()
        references = _trim(dict.fromkeys([*earlier, *mail.references, mail.message_id]))
        return Pending(
            message_id=new_message_id(self.sender),
            conversation_id=conversation_id,
            to=mail.reply_to,
            subject=f"Re: {subject}" if subject else "Re: your support request",
            body="\n\n".join(replies) + self._footer(),
            in_reply_to=mail.message_id,
            references=references,
        )

    def _footer(self, name: str | None = None) -> str:
        who = f"{name}, {self.signature}" if name else self.signature
        # "-- " marks a signature (RFC 3676): when the customer replies, strip_reply drops it again.
        return f"\n\n-- \n{who}\nReply to this email to continue the conversation."

    # -- outbound --------------------------------------------------------------------------------

    def flush(self, inbound_id: str | None = None) -> tuple[int, int, str | None]:
        """Send pending replies (those answering one mail, or all): (sent, still pending, last error)."""
        sent = 0
        error = None
        # One sender at a time, so that two retries never send the same reply twice.
        with self._send_lock:
            pending = self.store.pending(inbound_id)
            for reply in pending:
                try:
                    self.mailer.deliver(
                        reply.to,
                        reply.subject,
                        reply.body,
                        conversation_id=reply.conversation_id,
                        message_id=reply.message_id,
                        in_reply_to=reply.in_reply_to,
                        references=reply.references,
                    )
                except ToolError as exc:
                    error = str(exc)
                    self.store.failed(reply.message_id, error)
                    log.warning("mail reply %s to %s not sent: %s", reply.message_id, reply.conversation_id, exc)
                    continue
                self.store.sent(reply.message_id)
                sent += 1
            if pending:
                self.store.compact()  # no copy of a sent or given-up body stays in the write-ahead log
        return sent, len(pending) - sent, error

    def on_desk_reply(self, reply: ReplySent) -> None:
        """Send an L2 reply by mail when the customer's latest message came by mail (a Desk hook).

        It never raises: the reply is in the transcript already; a send that fails stays pending
        and is retried with the next mail of any conversation.
        """
        if reply.line.channel != "email":
            return
        cid = reply.packet.conversation_id
        thread = self.store.thread(cid)
        if thread is None:
            log.warning("conversation %s is on email but has no mail thread; the L2 reply went to chat only", cid)
            return
        self.store.record(
            Pending(
                message_id=new_message_id(self.sender),
                conversation_id=cid,
                to=thread.reply_to,
                subject=f"Re: {thread.subject}" if thread.subject else "Re: your support request",
                body=reply.text.strip() + self._footer(reply.technician),
                in_reply_to=thread.last_in,
                references=_trim(thread.references),
            )
        )
        self.flush()

    # -- linking chats to addresses --------------------------------------------------------------

    def after_turn(self, conversation_id: str, values: dict[str, Any]) -> None:
        """Link a conversation to its customer's address once they proved it with a code (a Resolver hook)."""
        customer = values.get("customer") or {}
        account_id = customer.get("account_id")
        if not (customer.get("verified_at") and account_id):
            return
        # Every verified turn refreshes the link: "active within the last week" counts from here.
        if self.store.touch(conversation_id) or self._email_of_account is None:
            return
        # The address on file is the one the code went to: the one the customer proved.
        address = self._email_of_account(str(account_id))
        if address and "@" in address:
            self.store.link(address, conversation_id)


def _trim(references: Iterable[str]) -> tuple[str, ...]:
    refs = tuple(references)
    if len(refs) <= MAX_REFERENCES:
        return refs
    # RFC 5322 readers need the first (the thread's root) and the latest ids most.
    return (refs[0], *refs[-(MAX_REFERENCES - 1) :])
