"""Types shared by tools and backends: accounts, the verified account, results, backend protocols."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

AccountStatus = Literal["active", "locked", "disabled"]
ServiceState = Literal["operational", "degraded", "outage", "maintenance"]


class Account(BaseModel):
    """An account as the directory sees it."""

    account_id: str
    email: str
    name: str
    status: AccountStatus = "active"
    mfa_method: str = "authenticator app"
    plan: str = "Business"
    next_invoice: str | None = None
    failed_sign_ins: int = 0


class ServiceStatus(BaseModel):
    """One service on the status page."""

    name: str
    state: ServiceState
    note: str = ""
    # Words customers use for the service ("outlook" for email).
    aliases: list[str] = []


_VERIFIER = object()


@dataclass(frozen=True)
class VerifiedAccount:
    """An account whose owner proved control of its contact on file in this conversation.

    Only tools/identity.py creates one (it passes the module's private token); every tool that
    acts on an account takes this type, so authorization is checked where the value is made.
    """

    account_id: str
    email: str
    verified_at: datetime
    conversation_id: str
    _token: object = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self._token is not _VERIFIER:
            raise TypeError("a VerifiedAccount is only made by tools.identity.check_code")


def make_verified(account_id: str, email: str, at: datetime, conversation_id: str) -> VerifiedAccount:
    """Mint a VerifiedAccount; called by tools.identity and tools.verification once a proof held."""
    return VerifiedAccount(account_id, email, at, conversation_id, _VERIFIER)


class ToolResult(BaseModel):
    """What a tool did: ``message`` is for the customer, ``data`` for the technician."""

    tool: str
    ok: bool
    message: str
    data: dict[str, Any] = {}
    idempotency_key: str = ""
    replayed: bool = False
    error: str | None = None


class Directory(Protocol):
    """The identity provider / account system the tools act on."""

    def find_by_email(self, email: str) -> Account | None:
        """The account with this contact email, or None."""
        ...

    def get(self, account_id: str) -> Account | None:
        """The account with this id, or None."""
        ...

    def reset_password(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Send a reset link to the contact on file; idempotent by key."""
        ...

    def unlock(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Unlock the account; idempotent by key."""
        ...

    def reset_mfa(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Remove registered second factors so the owner can enrol a new one; idempotent by key."""
        ...

    def create_ticket(self, account_id: str, summary: str, *, key: str) -> dict[str, Any]:
        """File a request (licence, access) for approval; idempotent by key."""
        ...


class StatusPage(Protocol):
    """Where the current state of each service is published."""

    def services(self) -> list[ServiceStatus]:
        """Every service and its state."""
        ...


class Outbox(Protocol):
    """Delivers mail to a customer's contact on file."""

    def deliver(self, to: str, subject: str, body: str, *, conversation_id: str) -> str:
        """Send a message; return its message id."""
        ...
