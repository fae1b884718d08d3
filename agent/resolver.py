"""The resolver service: conversations in, replies out, one locked graph run per message."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from agent.brains.streaming import DELTA_SINK, Delta
from agent.deps import Deps
from agent.graph import build_graph
from agent.stages import Event, advance
from agent.state import ConversationState
from core.db import (
    Connection,
    DatabaseTarget,
    Dialect,
    Migration,
    Migrations,
    PersonalTables,
    open_database,
    sqlite_columns,
)
from core.errors import ConversationNotFound, MessageRejected
from core.vault import hold
from vectorstore.embeddings import one_pass

CHANNELS = ("chat", "api", "email")


def validate_message(text: object, max_chars: int) -> str:
    """Return the message if a person could have meant it; raise MessageRejected saying why not."""
    if not isinstance(text, str):
        raise MessageRejected("the message must be text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessageRejected(f"the message is not valid UTF-8 text (bad character at position {exc.start})") from exc
    if not text.strip():
        raise MessageRejected("the message is empty; write what you need help with")
    if len(text) > max_chars:
        raise MessageRejected(f"the message is {len(text):,} characters long; the limit is {max_chars:,}")
    for i, ch in enumerate(text):
        if ch not in "\n\r\t" and unicodedata.category(ch) == "Cc":
            raise MessageRejected(f"the message contains a control character (U+{ord(ch):04X}) at position {i}")
    return text.strip()


@dataclass(frozen=True)
class TurnResult:
    """What one customer message produced."""

    conversation_id: str
    replies: list[str]
    stage: str
    runbook_id: str | None
    confidence: float
    reasons: list[str]
    handoff: dict[str, Any] | None
    latency_ms: float
    resumed: list[str] = field(default_factory=list)
    channel: str = "chat"  # the one the message came by


class Conversations:
    """The register of conversations that exist (ids, channel, customer hint)."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "conversations",
        Migration(
            1,
            "CREATE TABLE IF NOT EXISTS conversations (conversation_id TEXT PRIMARY KEY,"
            " channel TEXT NOT NULL, created_at TEXT NOT NULL)",
        ),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"conversations": {"conversation_id": "conversation"}}

    def __init__(self, path: DatabaseTarget) -> None:
        self.target = path
        self._db = open_database(path)
        self._db.migrate(self.MIGRATIONS)

    def add(self, conversation_id: str, channel: str, at: datetime) -> None:
        """Register a new conversation."""
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO conversations VALUES (?, ?, ?)", (conversation_id, channel, at.isoformat()))

    def get(self, conversation_id: str) -> dict[str, Any]:
        """A conversation's record; ConversationNotFound when there is none."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT * FROM conversations WHERE conversation_id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ConversationNotFound(conversation_id)
        return dict(row)

    def turn(self, conversation_id: str) -> AbstractContextManager[None]:
        """Hold a conversation across processes (replicas on PostgreSQL) while one of its turns runs."""
        return self._db.session_lock(f"turn:{conversation_id}")

    def ids(self) -> list[str]:
        """Every conversation id, oldest first."""
        with self._db.transaction() as conn:
            return [r[0] for r in conn.execute("SELECT conversation_id FROM conversations ORDER BY created_at")]


# What a client may use to name a message it may send again (POST .../messages, client_message_id).
CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def _forget_plain_hashes(conn: Connection, dialect: Dialect) -> None:
    """Overwrite the unkeyed SHA-256 hashes an older table kept, which a dictionary reverses."""
    if "text_sha256" in sqlite_columns(conn, "client_messages"):
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("ALTER TABLE client_messages RENAME COLUMN text_sha256 TO text_hmac")
        conn.execute("UPDATE client_messages SET text_hmac = ''")


class ClientMessages:
    """Messages a client named, with the answer each got: one sent again is answered, not played again.

    A row (with a keyed hash of the text, not the text) is written before the turn runs and gets its
    answer once the turn ends. A crash in between leaves a row without an answer; the graph's
    checkpointed inbox then tells whether the message was taken (its turn is finished and the answer
    stored) or never reached the graph (it is played when the client sends it again).

    The hash is an HMAC under a key the caller derives from the vault's key, so a message that is
    only a six-digit code cannot be found by hashing a million guesses. Each hash starts with its
    key's fingerprint; a row hashed under another key, or by an older version with a plain SHA-256
    (blanked when the table is upgraded), has an unknown text and is taken to be the same message.
    """

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "client_messages",
        Migration(
            1,
            "CREATE TABLE IF NOT EXISTS client_messages (conversation_id TEXT NOT NULL,"
            " client_message_id TEXT NOT NULL, text_hmac TEXT NOT NULL, result TEXT,"
            " PRIMARY KEY (conversation_id, client_message_id))",
        ),
        # No PostgreSQL database predates the keyed hashes.
        Migration(2, {"sqlite": _forget_plain_hashes, "postgresql": None}),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"client_messages": {"conversation_id": "conversation"}}

    def __init__(self, path: DatabaseTarget, key: bytes) -> None:
        self._key = key
        self._key_id = hashlib.sha256(b"tierone-client-message-key:" + key).hexdigest()[:8] + ":"
        self._db = open_database(path)
        self._db.migrate(self.MIGRATIONS)

    def digest(self, text: str) -> str:
        """The keyed hash stored for a message's text, prefixed with the key's fingerprint."""
        return self._key_id + hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def take(self, conversation_id: str, client_message_id: str, text: str) -> TurnResult | None:
        """The stored answer if this message was answered before; otherwise note it and return None."""
        digest = self.digest(text)
        with self._db.transaction() as conn:
            # Two replicas taking the same message at once: one notes it, the other finds it.
            self._db.hold(conn, f"client_message:{conversation_id}:{client_message_id}")
            row = conn.execute(
                "SELECT text_hmac, result FROM client_messages WHERE conversation_id = ? AND client_message_id = ?",
                (conversation_id, client_message_id),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO client_messages VALUES (?, ?, ?, NULL)", (conversation_id, client_message_id, digest)
                )
                return None
        known = row["text_hmac"].startswith(self._key_id)
        if known and row["text_hmac"] != digest:
            raise MessageRejected(
                f"client_message_id {client_message_id!r} was already used for a different message in this"
                " conversation; give each new message a new id"
            )
        return TurnResult(**json.loads(row["result"])) if row["result"] else None

    def unanswered(self, conversation_id: str, client_message_id: str) -> bool:
        """Whether the message was noted but its answer not stored (a crash cut its turn short)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT result FROM client_messages WHERE conversation_id = ? AND client_message_id = ?",
                (conversation_id, client_message_id),
            ).fetchone()
        return row is not None and row["result"] is None

    def answer(self, conversation_id: str, client_message_id: str, result: TurnResult) -> None:
        """Store the answer a named message got."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE client_messages SET result = ? WHERE conversation_id = ? AND client_message_id = ?",
                (json.dumps(asdict(result)), conversation_id, client_message_id),
            )


class Resolver:
    """Runs conversations through the graph; one message at a time per conversation."""

    def __init__(
        self,
        deps: Deps,
        checkpointer: BaseCheckpointSaver[str],
        conversations: Conversations,
        *,
        max_message_chars: int = 8000,
    ) -> None:
        self.deps = deps
        self.graph = build_graph(checkpointer)
        self.conversations = conversations
        # The client-message hashes are keyed from the vault's key (without a vault: a key for this process only).
        vault = deps.toolbox.vault
        key = bytes.fromhex(vault.subject("tierone-client-messages")) if vault else secrets.token_bytes(32)
        self.client_messages = ClientMessages(conversations.target, key)
        self.max_message_chars = max_message_chars
        # Per conversation: its lock and how many callers hold or wait for it (dropped at zero, so
        # the map holds only conversations in use, not every conversation since start-up).
        self._locks: dict[str, tuple[threading.Lock, int]] = {}
        self._locks_guard = threading.Lock()
        # Called inside the conversation's lock after every finished turn (the message log, status).
        self.after_turn: list[Callable[[str, dict[str, Any]], None]] = []

    @contextmanager
    def lock(self, conversation_id: str) -> Iterator[None]:
        """Hold a conversation: none of its turns runs until the block ends."""
        # LangGraph does not serialise two runs of one thread: this does.
        with self._locks_guard:
            lock, users = self._locks.get(conversation_id, (threading.Lock(), 0))
            self._locks[conversation_id] = (lock, users + 1)
        try:
            # Then across processes: another replica's turn of this conversation finishes first.
            with lock, self.conversations.turn(conversation_id):
                yield
        finally:
            with self._locks_guard:
                lock, users = self._locks[conversation_id]
                if users == 1:
                    del self._locks[conversation_id]
                else:
                    self._locks[conversation_id] = (lock, users - 1)

    @staticmethod
    def _config(conversation_id: str) -> RunnableConfig:
        # One worker thread per run: the graph runs one node at a time (in the caller's thread) and
        # its checkpoint writes one after another, so more workers only cost thread starts and
        # joins on every turn (the LLM overhead bench's p50: 32.7 ms against 35.1; README).
        return {"configurable": {"thread_id": conversation_id}, "recursion_limit": 40, "max_concurrency": 1}

    def start(self, channel: str = "chat") -> str:
        """Open a new conversation and return its id."""
        if channel not in CHANNELS:
            raise MessageRejected(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
        conversation_id = "c_" + secrets.token_urlsafe(12)
        self.conversations.add(conversation_id, channel, self.deps.clock())
        return conversation_id

    def _finish_interrupted(self, conversation_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Complete a turn a crash cut short; its tool calls replay from the ledger, not again.

        Return the conversation's state now, and the state the finished turn ended in (None when no
        turn was cut short). The state is read once, and again only after finishing such a turn
        (each read is a checkpoint load).
        """
        config = self._config(conversation_id)
        snapshot = self.graph.get_state(config)
        # A process killed after a step's nodes saved their writes but before the step's checkpoint
        # leaves `next` empty with the step's tasks still listed: that turn is unfinished too.
        if not snapshot.next and not snapshot.tasks:
            return dict(snapshot.values), None
        values = dict(self.graph.invoke(None, config, context=self.deps, durability="sync"))
        self._after_turn(conversation_id, values)
        return dict(self.graph.get_state(config).values), values

    def _after_turn(self, conversation_id: str, values: dict[str, Any]) -> None:
        for hook in self.after_turn:
            hook(conversation_id, values)

    def reopen(self, conversation_id: str, stage: Literal["triage", "resolved"]) -> None:
        """Take a conversation back from L2 so the bot reads the customer's next message afresh.

        ``stage`` is "resolved" when the technician resolved it, "triage" when they gave it back unresolved.
        """
        event: Event = "resolved_by_l2" if stage == "resolved" else "returned_by_l2"
        with self.lock(conversation_id):
            config = self._config(conversation_id)
            values = self.graph.get_state(config).values
            if values.get("stage") != "handed_off":
                return
            update: dict[str, Any] = {
                "stage": advance(values["stage"], event),
                "handoff": None,
                "context_text": "",
                "counters": {},
                "step": 0,
                "step_tool_done": False,
                "last_tool": None,
                # The conversation's time and turn limits count from here, not from its first message.
                "started_at": self.deps.clock().isoformat(),
                "turns_before": values.get("turn", 0),
            }
            # As the handoff node's output: the graph's next step is END, so nothing runs on.
            self.graph.update_state(config, cast(ConversationState, update), as_node="handoff")

    def leave_incident(self, conversation_id: str, event: Literal["incident_resolved", "incident_detached"]) -> bool:
        """Move a conversation out of its incident (resolved: a new message is a new problem; detached: routed anew).

        False when the conversation is no longer in the incident stage (it asked for a person, say).
        """
        with self.lock(conversation_id):
            config = self._config(conversation_id)
            values = self.graph.get_state(config).values
            if values.get("stage") != "incident":
                return False
            update: dict[str, Any] = {
                "stage": advance(values["stage"], event),
                "incident_id": None,
                "context_text": "",
                "counters": {},
                "step": 0,
                "step_tool_done": False,
                "last_tool": None,
            }
            # As the incident node's output: the graph's next step is END, so nothing runs on.
            self.graph.update_state(config, cast(ConversationState, update), as_node="incident")
        return True

    def send(
        self,
        conversation_id: str,
        text: object,
        *,
        on_delta: Callable[[Delta], None] | None = None,
        channel: str | None = None,
        client_message_id: str | None = None,
    ) -> TurnResult:
        """Take one customer message and return the bot's replies.

        ``channel`` is the one this message came by (default: the conversation's own), so a chat
        continued by email shows each line's channel.

        With ``on_delta``, the reply is streamed: each piece is passed to it as soon as it passes
        the grounding check, and a delta with ``replace=True`` replaces what was shown of the reply.

        With ``client_message_id``, a message sent again (by a client that got no answer) gets the
        answer the first one got and is not played again.
        """
        record = self.conversations.get(conversation_id)
        message = validate_message(text, self.max_message_chars)
        if client_message_id is not None and not CLIENT_MESSAGE_ID.fullmatch(client_message_id):
            raise MessageRejected("client_message_id must be 1 to 100 characters of A-Z, a-z, 0-9 and . _ : -")
        if channel is not None and channel not in CHANNELS:
            raise MessageRejected(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
        came_by = channel or record["channel"]
        with self.lock(conversation_id):
            started = time.perf_counter()
            before, finished = self._finish_interrupted(conversation_id)
            resumed = list(finished.get("outgoing", [])) if finished is not None else []
            self._settle(conversation_id, before)
            if client_message_id is not None:
                earlier = self.client_messages.take(conversation_id, client_message_id, message)
                if earlier is not None:
                    latency_ms = (time.perf_counter() - started) * 1000
                    # An answer stored before results named their channel reads as "chat": name it here.
                    return replace(earlier, latency_ms=latency_ms, resumed=resumed, channel=came_by)
            # Only the redacted message reaches the graph (and so its checkpoints); the addresses and
            # codes a tool may need wait in the vault, by reference.
            assert self.deps.toolbox.vault is not None
            redacted, held = hold(
                self.deps.toolbox.vault, conversation_id, message, dates=self._asks_birth_date(before)
            )
            inputs: dict[str, Any] = {
                "inbox": {"text": redacted, "held": held, "at": self.deps.clock().isoformat()},
                "conversation_id": conversation_id,
                "channel": came_by,
            }
            if client_message_id is not None:
                inputs["inbox"]["message_id"] = client_message_id
            if not before:
                inputs["started_at"] = self.deps.clock().isoformat()
            inputs["stream"] = on_delta is not None
            with one_pass():  # a message routed and then matched to a step's outcomes is embedded once
                values = self._run(cast(ConversationState, inputs), self._config(conversation_id), on_delta)
            self._after_turn(conversation_id, values)
            result = self._result(conversation_id, values, (time.perf_counter() - started) * 1000, resumed)
            if client_message_id is not None:
                self.client_messages.answer(conversation_id, client_message_id, replace(result, resumed=[]))
        return result

    def _asks_birth_date(self, values: dict[str, Any]) -> bool:
        """Whether the last question asked for identity facts (``verify: knowledge``), a birth date among them.

        Only then is every whole date in the answer held as a date of birth; elsewhere only a date
        after words such as "born" is one, so "my bill of 3 March 2026" stays as written.
        """
        runbook = self.deps.pack.runbooks.get(values.get("runbook_id") or "")
        return values.get("stage") == "identity" and runbook is not None and runbook.meta.verify == "knowledge"

    @staticmethod
    def _result(conversation_id: str, values: dict[str, Any], elapsed_ms: float, resumed: list[str]) -> TurnResult:
        decision = values.get("decision") or {}
        return TurnResult(
            conversation_id=conversation_id,
            replies=list(values.get("outgoing", [])),
            stage=values.get("stage", "triage"),
            runbook_id=values.get("runbook_id"),
            confidence=float(values.get("confidence", 0.0)),
            reasons=list(decision.get("reasons", [])),
            handoff=values.get("handoff"),
            latency_ms=elapsed_ms,
            resumed=resumed,
            channel=values.get("channel", "chat"),
        )

    def _settle(self, conversation_id: str, values: dict[str, Any]) -> None:
        """Store the answer of a named message whose turn a crash cut short (and that is now finished).

        ``values``: the conversation's state, as ``_finish_interrupted`` left it.
        """
        # Runs before every new turn, so a named message the graph took is settled before the next
        # one replaces the checkpointed inbox.
        message_id = (values.get("inbox") or {}).get("message_id")
        if message_id and self.client_messages.unanswered(conversation_id, message_id):
            # The crash may have come before the turn's hooks ran (the message log); they are safe to run again.
            self._after_turn(conversation_id, values)
            self.client_messages.answer(conversation_id, message_id, self._result(conversation_id, values, 0.0, []))

    def _run(
        self, inputs: ConversationState, config: RunnableConfig, on_delta: Callable[[Delta], None] | None
    ) -> dict[str, Any]:
        if on_delta is None:
            return dict(self.graph.invoke(inputs, config, context=self.deps, durability="sync"))
        # The reply and handoff nodes pass each delta to on_delta as it is released (emit_delta).
        sink = DELTA_SINK.set(on_delta)
        try:
            return dict(self.graph.invoke(inputs, config, context=self.deps, durability="sync"))
        finally:
            DELTA_SINK.reset(sink)

    def recover(self) -> list[str]:
        """Finish every turn that a stopped process left half-done; return their ids."""
        finished = []
        for conversation_id in self.conversations.ids():
            with self.lock(conversation_id):
                values, cut_short = self._finish_interrupted(conversation_id)
                if cut_short is not None and cut_short.get("outgoing"):
                    finished.append(conversation_id)
                self._settle(conversation_id, values)
        return finished

    def view(self, conversation_id: str) -> dict[str, Any]:
        """A conversation's state (transcript, stage, runbook, handoff)."""
        self.conversations.get(conversation_id)
        values = dict(self.graph.get_state(self._config(conversation_id)).values)
        values.pop("inbox", None)
        return values
