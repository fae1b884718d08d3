"""The embedded backends: a SQLite directory seeded with demo accounts, and a status page."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from core.db import DatabaseTarget, Migration, Migrations, PersonalTables, Step, open_database
from core.errors import ToolError
from core.redact import mask_email
from tools.base import Account, ServiceStatus

DEMO_ACCOUNTS = [
    Account(
        account_id="acc-1001", email="jane.doe@example.com", name="Jane Doe", next_invoice="2026-12-01, 240.00 EUR"
    ),
    Account(
        account_id="acc-1002",
        email="bob.smith@example.com",
        name="Bob Smith",
        status="locked",
        failed_sign_ins=6,
        next_invoice="2026-12-01, 120.00 EUR",
    ),
    Account(
        account_id="acc-1003",
        email="priya.patel@example.com",
        name="Priya Patel",
        mfa_method="SMS to a phone ending in 42",
        plan="Enterprise",
        next_invoice="2026-12-15, 1,150.00 EUR",
    ),
    Account(
        account_id="acc-1004",
        email="li.wei@example.com",
        name="Li Wei",
        plan="Team",
        next_invoice="2026-12-03, 60.00 EUR",
    ),
    Account(
        account_id="acc-1005",
        email="maria.garcia@example.com",
        name="Maria Garcia",
        status="locked",
        failed_sign_ins=10,
        next_invoice="2026-12-01, 240.00 EUR",
    ),
]

DEMO_SERVICES = [
    ServiceStatus(name="email", state="operational", aliases=["mail", "outlook", "inbox"]),
    ServiceStatus(name="vpn", state="operational", aliases=["remote access"]),
    ServiceStatus(name="sso", state="operational", aliases=["single sign-on", "sign-in", "login"]),
    ServiceStatus(name="customer portal", state="operational", aliases=["portal", "website"]),
    ServiceStatus(
        name="file sharing", state="operational", aliases=["sharepoint", "onedrive", "shared drive", "file share"]
    ),
    ServiceStatus(name="video meetings", state="operational", aliases=["teams", "zoom", "meetings"]),
    ServiceStatus(
        name="payments",
        state="degraded",
        aliases=["payment", "checkout", "card"],
        note="Card payments are slower than usual; no payment is lost.",
    ),
    ServiceStatus(name="api", state="operational", aliases=["rest api", "webhooks"]),
]

_SCHEMA: tuple[Step, ...] = (
    {
        "sqlite": """CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    data TEXT NOT NULL
)""",
        # No NOCASE collation: one address in any case is one account by a unique index on lower(email).
        "postgresql": "CREATE TABLE IF NOT EXISTS accounts (account_id TEXT PRIMARY KEY, email TEXT NOT NULL,"
        " data TEXT NOT NULL)",
    },
    {"sqlite": None, "postgresql": "CREATE UNIQUE INDEX IF NOT EXISTS accounts_email ON accounts (lower(email))"},
    """CREATE TABLE IF NOT EXISTS directory_actions (
    key TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    at TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
)""",
)


class SqliteDirectory:
    """Accounts in the desk database (SQLite or PostgreSQL); every action is deduplicated by its idempotency key."""

    MIGRATIONS: ClassVar[Migrations] = Migrations("directory", Migration(1, *_SCHEMA))
    # An action's key starts with the conversation it was taken in; the accounts are the customers' own
    # records in the account system, not a conversation's.
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"directory_actions": {"key": "key"}}

    def __init__(self, path: DatabaseTarget, clock: Callable[[], datetime], *, seed: bool = True) -> None:
        self.target = path
        self._db = open_database(path)
        self._clock = clock
        self._db.migrate(self.MIGRATIONS)
        # Matched whatever its case: SQLite's column compares without case, PostgreSQL's index is on lower().
        self._by_email = (
            "SELECT data FROM accounts WHERE email = ?"
            if self._db.dialect == "sqlite"
            else "SELECT data FROM accounts WHERE lower(email) = lower(?)"
        )
        with self._db.transaction() as conn:
            self._db.hold(conn, "directory.seed")  # two replicas starting at once seed once
            empty = conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0
            if seed and empty:
                for account in DEMO_ACCOUNTS:
                    self._put(conn, account)
                for service in DEMO_SERVICES:
                    conn.execute(
                        "INSERT INTO services (name, data) VALUES (?, ?)",
                        (service.name, service.model_dump_json()),
                    )

    @staticmethod
    def _put(conn: Any, account: Account) -> None:
        conn.execute(
            "INSERT INTO accounts (account_id, email, data) VALUES (?, ?, ?)"
            " ON CONFLICT (account_id) DO UPDATE SET email = excluded.email, data = excluded.data",
            (account.account_id, account.email, account.model_dump_json()),
        )

    def add(self, account: Account) -> None:
        """Add or replace an account (for tests and administration)."""
        with self._db.transaction() as conn:
            self._put(conn, account)

    def find_by_email(self, email: str) -> Account | None:
        """The account with this contact email, or None."""
        with self._db.transaction() as conn:
            row = conn.execute(self._by_email, (email.strip(),)).fetchone()
        return Account.model_validate_json(row["data"]) if row else None

    def get(self, account_id: str) -> Account | None:
        """The account with this id, or None."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT data FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
        return Account.model_validate_json(row["data"]) if row else None

    def _act(
        self, account_id: str, action: str, key: str, change: Callable[[Account], dict[str, Any]]
    ) -> dict[str, Any]:
        # The change and its idempotency record commit together: a replay returns the first result.
        with self._db.transaction() as conn:
            # One change of an account at a time, across processes too (the account is read, then written).
            self._db.hold(conn, f"account:{account_id}")
            done = conn.execute(
                "SELECT account_id, action, result FROM directory_actions WHERE key = ?", (key,)
            ).fetchone()
            if done:
                if done["account_id"] != account_id or done["action"] != action:
                    raise ToolError(f"idempotency key {key!r} was already used for another action")
                return dict(json.loads(done["result"]), replayed=True)
            row = conn.execute("SELECT data FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
            if row is None:
                raise ToolError(f"account {account_id!r} does not exist in the directory")
            account = Account.model_validate_json(row["data"])
            result = change(account)
            self._put(conn, account)
            conn.execute(
                "INSERT INTO directory_actions (key, account_id, action, result, at) VALUES (?, ?, ?, ?, ?)",
                (key, account_id, action, json.dumps(result), self._clock().isoformat()),
            )
        return result

    def reset_password(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Issue a single-use reset link to the account's contact on file."""

        def change(account: Account) -> dict[str, Any]:
            return {"link_id": secrets.token_hex(6), "sent_to": mask_email(account.email), "expires_minutes": 30}

        return self._act(account_id, "reset_password", key, change)

    def unlock(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Unlock the account and clear its failed sign-in count."""

        def change(account: Account) -> dict[str, Any]:
            before = account.status
            if account.status == "disabled":
                raise ToolError("the account is disabled by an administrator, not locked")
            account.status = "active"
            account.failed_sign_ins = 0
            return {"status_before": before, "status_after": "active"}

        return self._act(account_id, "unlock", key, change)

    def reset_mfa(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Remove the registered second factor so the owner enrols a new one at next sign-in."""

        def change(account: Account) -> dict[str, Any]:
            before = account.mfa_method
            account.mfa_method = "none (enrolment pending)"
            return {"removed": before, "enrolment": "required at next sign-in"}

        return self._act(account_id, "reset_mfa", key, change)

    def create_ticket(self, account_id: str, summary: str, *, key: str) -> dict[str, Any]:
        """File a request that needs approval (licence, access)."""

        def change(account: Account) -> dict[str, Any]:
            return {"ticket": f"REQ-{secrets.randbelow(900000) + 100000}", "summary": summary[:200]}

        return self._act(account_id, "create_ticket", key, change)

    def services(self) -> list[ServiceStatus]:
        """The embedded status page's services."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT data FROM services ORDER BY name").fetchall()
        return [ServiceStatus.model_validate_json(r["data"]) for r in rows]

    def set_service(self, status: ServiceStatus) -> None:
        """Publish a service's state on the embedded status page."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO services (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (status.name, status.model_dump_json()),
            )
