"""The composition root: everything a process opens once, wired together."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from agent.brains.factory import make_brain
from agent.deps import Deps
from agent.episodes import EpisodeStore
from agent.handoff import HandoffQueue
from agent.incidents import IncidentStore
from agent.outcomes import OutcomeMatcher
from agent.resolver import ClientMessages, Conversations, Resolver, validate_message
from app.auth import ApiKeys, CustomerTokens
from app.desk import Desk, DeskConflict
from app.erasure import Eraser, ErasureScope
from app.gaps import GapVectors, gaps_provider
from app.incidents import IncidentDesk, IncidentStatusPage
from app.insights import Insights, open_insights
from app.mail.channel import EmailChannel, open_mailer
from app.mail.store import MailStore
from app.messages import MessageLog
from app.metrics import Metrics
from app.notify import Notifier
from app.teaching import Suggestions
from core.clock import utc_now
from core.db import (
    SQLITE_BUSY_TIMEOUT_S,
    DatabaseTarget,
    DatabaseUrl,
    Migrations,
    PostgresDatabase,
    Store,
    database_target,
    open_database,
    opened_together,
    schema_versions,
    use_wal,
)
from core.errors import SchemaOutdated
from core.pack import Pack, load_pack
from core.settings import Settings
from core.vault import Vault, load_key
from tools.actions import Limits, Toolbox
from tools.base import Directory, StatusPage
from tools.declared import DeclaredRunner
from tools.http_backend import HttpDirectory, HttpStatusPage
from tools.ledger import Ledger
from tools.mail import Mailer
from tools.outbox import FileOutbox
from tools.sqlite_backend import SqliteDirectory
from vectorstore.embeddings import Embedder, MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client

# Every store of the desk database: erasure asks each which rows of a conversation it holds.
DESK_STORES: tuple[type[Store], ...] = (
    Conversations,
    ClientMessages,
    HandoffQueue,
    EpisodeStore,
    Desk,
    MessageLog,
    Notifier,
    MailStore,
    Ledger,
    SqliteDirectory,
    CustomerTokens,
    ApiKeys,
    Suggestions,
    GapVectors,
    IncidentStore,
)


def open_sqlite_checkpointer(path: Path) -> SqliteSaver:
    """A LangGraph checkpointer on a SQLite file, usable from the server's worker threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=SQLITE_BUSY_TIMEOUT_S)
    use_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    # From the start, not only while erasing: a page split leaves copies of cells (conversation ids,
    # redacted text) in the page's free space, and they outlive the erasure of the rows themselves.
    conn.execute("PRAGMA secure_delete=ON")
    return SqliteSaver(conn)


# -- PostgreSQL (TIERONE_DATABASE_URL): where each store lives, its schema, LangGraph's checkpoints ---


def desk_target(settings: Settings) -> DatabaseTarget:
    """The desk database: its SQLite file, or the PostgreSQL database of ``TIERONE_DATABASE_URL``."""
    return database_target(settings.desk_db, settings.database_url)


def holds_conversations(settings: Settings) -> bool:
    """Whether the desk database already holds a conversation (its schema must be current)."""
    db = open_database(desk_target(settings))
    try:
        with db.transaction() as conn:
            return conn.execute("SELECT 1 FROM conversations LIMIT 1").fetchone() is not None
    finally:
        db.close()


def vault_target(settings: Settings) -> DatabaseTarget:
    """The vault's database (on PostgreSQL the same database as the desk's; its tables differ)."""
    return database_target(settings.vault_db, settings.database_url)


def _schemas(
    settings: Settings, stores: tuple[type[Store], ...] | None = None
) -> list[tuple[DatabaseTarget, tuple[Migrations, ...]]]:
    desk = (*(store.MIGRATIONS for store in (DESK_STORES if stores is None else stores)), Eraser.MIGRATIONS)
    return [(desk_target(settings), desk), (vault_target(settings), (Vault.MIGRATIONS,))]


_CHECKPOINTS_LOCK = "tierone.checkpoints"


def _checkpoints_behind(db: PostgresDatabase) -> tuple[int, int] | None:
    """(found, needed) when LangGraph's checkpoint tables are not at the installed package's version."""
    needed = len(PostgresSaver.MIGRATIONS) - 1
    with db.transaction() as conn:
        exists = conn.execute("SELECT to_regclass('checkpoint_migrations') IS NOT NULL").fetchone()[0]
        found = conn.execute("SELECT MAX(v) FROM checkpoint_migrations").fetchone()[0] if exists else None
    found = -1 if found is None else int(found)
    return None if found >= needed else (found + 1, needed + 1)


def _setup_checkpoints(db: PostgresDatabase) -> bool:
    """Create or upgrade LangGraph's checkpoint tables; True when anything was to do.

    ``PostgresSaver.setup`` builds indexes CONCURRENTLY, which no transaction may hold: it runs on a
    connection of its own while a session advisory lock keeps a second process from running it at once.
    """
    if _checkpoints_behind(db) is None:
        return False
    with db.pool.connection() as lock:
        lock.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (_CHECKPOINTS_LOCK,))
        try:
            PostgresSaver(cast(Any, db.pool)).setup()
        finally:
            lock.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_CHECKPOINTS_LOCK,))
    return True


def migrate_databases(settings: Settings, stores: tuple[type[Store], ...] | None = None) -> dict[str, list[int]]:
    """Apply every store's missing migrations (and, on PostgreSQL, LangGraph's); return what ran, by component.

    ``stores``: the desk stores to migrate (default: every one of ``DESK_STORES``).
    """
    applied: dict[str, list[int]] = {}
    for target, schemas in _schemas(settings, stores):
        db = open_database(target)
        try:
            for schema in schemas:
                applied[schema.component] = applied.get(schema.component, []) + db.migrate(schema)
            if isinstance(db, PostgresDatabase):
                behind = _checkpoints_behind(db)
                if behind is not None and _setup_checkpoints(db):
                    # Numbered 1, 2, 3... like the stores' (LangGraph's own ledger counts from 0).
                    applied["langgraph_checkpoints"] = list(range(behind[0] + 1, behind[1] + 1))
        finally:
            db.close()
    return applied


def schema_behind(settings: Settings, stores: tuple[type[Store], ...] | None = None) -> dict[str, tuple[int, int]]:
    """Components whose recorded version is older than this code's: {component: (found, needed)}."""
    behind: dict[str, tuple[int, int]] = {}
    for target, schemas in _schemas(settings, stores):
        db = open_database(target)
        try:
            found = schema_versions(db)
            for schema in schemas:
                if found.get(schema.component, 0) < schema.latest:
                    behind[schema.component] = (found.get(schema.component, 0), schema.latest)
            if isinstance(db, PostgresDatabase) and (checkpoints := _checkpoints_behind(db)) is not None:
                behind["langgraph_checkpoints"] = checkpoints
        finally:
            db.close()
    return behind


def require_current_schema(settings: Settings) -> None:
    """On PostgreSQL, refuse a database at an older schema (``tierone migrate`` brings it up to date).

    SQLite files keep migrating themselves as their stores open, as they always have.
    """
    if settings.database_url is None:
        return
    behind = schema_behind(settings)
    if behind:
        raise SchemaOutdated(behind)


class PooledPostgresSaver(PostgresSaver):
    """PostgresSaver on a connection pool, without the process-wide lock around every query.

    The library takes one lock for each query, which guards a single shared connection; on a pool
    every query gets a connection of its own, so the lock only queued the process's turns behind
    each other's checkpoint commits (with the 20 conversations of the load benchmark, about 20 turns
    a second at most, each commit waiting for its WAL to reach the disk).
    """

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.lock = cast(Any, contextlib.nullcontext())


def open_checkpointer(settings: Settings) -> BaseCheckpointSaver[str]:
    """LangGraph's checkpointer: PostgresSaver on the shared pool with a URL set, else the SQLite file's."""
    target = database_target(settings.conversations_db, settings.database_url)
    if isinstance(target, DatabaseUrl):
        # Held for the process's life: the pool stays open while the graph runs.
        return PooledPostgresSaver(cast(Any, PostgresDatabase(target).pool))
    return open_sqlite_checkpointer(target)


@dataclass
class Runtime:
    """Everything a process opens once: the pack, the index, the brain, the resolver."""

    settings: Settings
    pack: Pack
    index: RunbookIndex
    resolver: Resolver
    outbox: FileOutbox
    ledger: Ledger
    directory: SqliteDirectory
    messages: MessageLog
    desk: Desk
    # Counts turns and handoffs (an after-turn hook); GET /metrics renders it.
    metrics: Metrics
    # What erasure reaches (app/erasure.py).
    erasure: ErasureScope
    # What L2 resolutions taught: suggested examples and runbooks (app/teaching.py).
    suggestions: Suggestions
    # Delivers new handoff packets to the helpdesk webhook; the server starts and stops its worker.
    notifier: Notifier | None = None
    # Inbound mail in, replies out by mail (POST /inbound/email).
    email: EmailChannel | None = None
    # The support lead's figures (GET /insights, /metrics' containment), knowledge gaps included.
    insights: Insights | None = None
    # Incidents on the desk: updates and resolutions delivered once to each attached customer.
    incidents: IncidentDesk | None = None
    # What ``close`` closes: the stores' database connections and the checkpointer's, where this
    # runtime opened them (an index or checkpointer passed in belongs to the caller).
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Close the databases this runtime opened; it cannot serve after that."""
        closers, self.closers = self.closers, []
        for close in closers:
            close()


def _open_index(settings: Settings, embedder: Embedder | None) -> RunbookIndex:
    """The pack's routing index, synced with the pack: on the Chroma server when one is set, else in a folder."""
    client = open_client(settings.chroma_dir, url=settings.chroma_url)
    index = RunbookIndex(client, load_pack(settings.runbooks), embedder or MiniLMEmbedder())
    index.sync()
    return index


def _declared(settings: Settings, pack: Pack, client: httpx.Client | None) -> DeclaredRunner | None:
    """The pack's own HTTP tools (tools.yaml), with the settings its references name; None without any."""
    if pack.tools is None:
        return None
    values = {name: secret.get_secret_value() for name, secret in settings.tool_values.items()}
    return DeclaredRunner(pack.tools, values, client)


def _toolbox(
    settings: Settings,
    clock: Callable[[], datetime],
    embedded: SqliteDirectory,
    mailer: Mailer,
    vault: Vault,
    declared: DeclaredRunner | None = None,
) -> Toolbox:
    """The tools, on the identity provider and status page the settings name (else the embedded ones)."""
    directory: Directory = (
        HttpDirectory(settings.directory_url, settings.directory_token) if settings.directory_url else embedded
    )
    status_page: StatusPage = HttpStatusPage(settings.status_url) if settings.status_url else embedded
    limits = Limits(
        verification_ttl=timedelta(minutes=settings.verification_ttl_minutes),
        code_cooldown=timedelta(seconds=settings.code_cooldown_seconds),
        codes_per_hour=settings.codes_per_account_per_hour,
        account_actions_per_day=settings.account_actions_per_day,
    )
    return Toolbox(
        directory=directory,
        status_page=status_page,
        outbox=mailer,
        ledger=Ledger(desk_target(settings), clock),
        clock=clock,
        limits=limits,
        vault=vault,
        declared=declared,
    )


def _email_channel(settings: Settings, mailer: Mailer, resolver: Resolver, desk: Desk) -> EmailChannel:
    """Mail in and out of the resolver's conversations, tied to the desk's status and the vault's addresses."""
    deps = resolver.deps
    vault, directory, clock = deps.toolbox.vault, deps.toolbox.directory, deps.clock
    assert vault is not None
    return EmailChannel(
        MailStore(
            desk_target(settings),
            clock,
            hash_address=vault.subject,
            sealer=vault.sealer,
            send_lease=timedelta(seconds=settings.mail_send_lease_s),
        ),
        mailer,
        resolver,
        sender=settings.mail_from,
        status=lambda cid: desk.status(cid).status,
        validate=lambda text: validate_message(text, settings.max_message_chars),
        clock=clock,
        email_of_account=lambda account_id: found.email if (found := directory.get(account_id)) else None,
        remember_address=vault.link_subject,
    )


def _incident_desk(
    settings: Settings, resolver: Resolver, messages: MessageLog, email: EmailChannel, desk: Desk
) -> IncidentDesk:
    """Incidents on the desk; the embedded status page shows the open ones."""
    deps = resolver.deps
    assert deps.incidents is not None
    published = deps.toolbox.status_page
    if not settings.status_url:
        deps.toolbox.status_page = IncidentStatusPage(published, deps.incidents)

    def close_ticket(packet_id: str, technician: str, note: str) -> None:
        with contextlib.suppress(DeskConflict):  # closed by hand already
            desk.resolve(packet_id, technician, note, admin=True)

    return IncidentDesk(
        deps.incidents,
        resolver,
        messages,
        email,
        validate=lambda text: validate_message(text, settings.max_message_chars),
        close_ticket=close_ticket,
        status_page=published,
        outage_category=next(iter(deps.pack.policy.incidents.outage_categories), None),
    )


def open_runtime(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    clock: Callable[[], datetime] = utc_now,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    index: RunbookIndex | None = None,
    tool_client: httpx.Client | None = None,
) -> Runtime:
    """Load the pack, sync the Chroma index, open the stores and build the resolver.

    ``tool_client`` carries the calls of the pack's declared tools (an eval's stand-in API, a test's respx).
    """
    with opened_together() as opened:
        require_current_schema(settings)
        index = index or _open_index(settings, embedder)
        desk_db = desk_target(settings)
        embedded = SqliteDirectory(desk_db, clock)
        outbox = FileOutbox(settings.outbox_dir, clock)
        # Codes and mail replies go out by SMTP when a relay is set, else into the file outbox.
        mailer = open_mailer(settings, outbox, clock)
        vault_key = load_key(settings.vault_key.get_secret_value() if settings.vault_key else None, settings.data_dir)
        retention = timedelta(hours=settings.vault_retention_hours)
        vault = Vault(vault_target(settings), vault_key, clock, retention=retention)
        toolbox = _toolbox(settings, clock, embedded, mailer, vault, _declared(settings, index.pack, tool_client))
        notifier = Notifier.from_settings(settings, clock)
        deps = Deps(
            pack=index.pack,
            brain=make_brain(settings, index),
            toolbox=toolbox,
            handoffs=HandoffQueue(desk_db, clock, on_store=notifier.enqueue if notifier.enabled else None),
            episodes=EpisodeStore(desk_db, clock),
            clock=clock,
            outcomes=OutcomeMatcher(index.embedder),
            incidents=IncidentStore(desk_db, clock),
        )
        saver = checkpointer or open_checkpointer(settings)
        resolver = Resolver(
            deps,
            saver,
            Conversations(desk_db),
            max_message_chars=settings.max_message_chars,
        )
        messages = MessageLog(desk_db, clock)
        desk = Desk(
            desk_db,
            clock,
            deps.handoffs,
            messages,
            reopen=resolver.reopen,
            at_risk_minutes=settings.sla_at_risk_minutes,
        )
        email = _email_channel(settings, mailer, resolver, desk)
        incidents = _incident_desk(settings, resolver, messages, email, desk)
        insights = open_insights(settings, index.pack, gaps_provider(deps.handoffs, index), clock=clock)
        metrics = Metrics(desk, insights)
        # Every after-turn hook, here and nowhere else: the desk's transcript and status, the mail link, the counts.
        resolver.after_turn += [desk.after_turn, email.after_turn, metrics.after_turn]
        desk.on_reply.append(email.on_desk_reply)
        erasure = ErasureScope(
            desk_db=desk_db,
            stores=DESK_STORES,
            vault=vault,
            resolver=resolver,
            directory=toolbox.directory,
            outbox=outbox,
            verification_ttl=timedelta(minutes=settings.verification_ttl_minutes),
            clock=clock,
        )
        # Knowledge gaps keep message vectors (app/gaps.py): their table exists from the start, for erasure.
        gap_db = open_database(desk_db)
        gap_db.migrate(GapVectors.MIGRATIONS)
        gap_db.close()
        runtime = Runtime(
            settings=settings,
            pack=index.pack,
            index=index,
            resolver=resolver,
            outbox=outbox,
            ledger=toolbox.ledger,
            directory=embedded,
            messages=messages,
            desk=desk,
            metrics=metrics,
            erasure=erasure,
            suggestions=Suggestions(desk_db, clock),
            notifier=notifier,
            email=email,
            insights=insights,
            incidents=incidents,
        )
    runtime.closers = [db.close for db in opened]
    if checkpointer is None and isinstance(saver, SqliteSaver):
        runtime.closers.append(saver.conn.close)
    return runtime
