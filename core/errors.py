"""Errors a user of Tierone can meet, each saying what was wrong and what to do.

TieroneError
├── PackError                 a runbook pack cannot be loaded
├── MessageRejected           a customer message was refused before it reached the bot
├── ConversationNotFound      no conversation has that id
├── PacketNotFound            no handoff packet has that id
├── IncidentNotFound          no incident has that id
├── IncidentConflict          the incident's state does not allow the change (resolved, not attached)
├── CaseFileError             an eval case file cannot be read
├── MigrationFailed           a store's schema could not be brought up to date
├── DatabaseUnavailable       TIERONE_DATABASE_URL is wrong, or its database cannot be reached
├── SchemaOutdated            the database's schema is older than this code (run `tierone migrate`)
└── ToolError                 a tool backend failed
└── NotAuthorized         a tool was asked to act on an account it may not touch
"""

from __future__ import annotations

from dataclasses import dataclass


class TieroneError(Exception):
    """Base class of every error Tierone raises on purpose."""


@dataclass(frozen=True)
class PackProblem:
    """One problem in a runbook pack, named by file and field."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class PackError(TieroneError):
    """The runbook pack has problems; ``problems`` lists every one."""

    def __init__(self, problems: list[PackProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"the runbook pack has {len(problems)} problem(s):\n{lines}\n"
            "Fix them and run `tierone runbooks lint DIR` again."
        )


class MessageRejected(TieroneError):
    """A message was refused; the text says why. Nothing was stored."""


class ConversationNotFound(TieroneError):
    """No conversation has the given id."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"no conversation has the id {conversation_id!r}; start a new one instead")


class PacketNotFound(TieroneError):
    """No handoff packet has the given id."""

    def __init__(self, packet_id: str) -> None:
        self.packet_id = packet_id
        super().__init__(f"no handoff packet has the id {packet_id!r}; `tierone handoffs list` shows them")


class IncidentNotFound(TieroneError):
    """No incident has the given id."""

    def __init__(self, incident_id: str) -> None:
        self.incident_id = incident_id
        super().__init__(f"no incident has the id {incident_id!r}; GET /incidents?status=all lists them")


class IncidentConflict(TieroneError):
    """The incident's state does not allow the change asked for; the text says why."""


class CaseFileError(TieroneError):
    """An eval case file is malformed; the text names the line or case."""


class ToolError(TieroneError):
    """A tool's backend failed; the conversation records it as a failed step.

    ``status`` is the HTTP status a declared tool's API answered (None: no answer, or not HTTP).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class NotAuthorized(ToolError):
    """A tool was asked to act on an account other than the verified customer's own."""


class MigrationFailed(TieroneError):
    """A migration of a store's schema failed; its transaction was rolled back and it is not recorded."""

    def __init__(self, component: str, version: int, detail: str) -> None:
        self.component = component
        self.version = version
        super().__init__(
            f"migration {version} of the {component!r} schema failed: {detail}. The database is as it was"
            " before that migration; fix what this names and start again"
        )


class DatabaseUnavailable(TieroneError):
    """The database of ``TIERONE_DATABASE_URL`` cannot be used; the text names the host, never the password."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        super().__init__(
            f"cannot use the database of TIERONE_DATABASE_URL ({where}): {detail}. Check the setting and that"
            " PostgreSQL runs there and accepts this user"
        )


class SchemaOutdated(TieroneError):
    """The database holds an older schema than this code needs; ``behind`` maps each component to (found, needed)."""

    def __init__(self, behind: dict[str, tuple[int, int]]) -> None:
        self.behind = behind
        if all(found == 0 for found, _ in behind.values()):
            super().__init__("the database holds no Tierone schema yet; run `tierone migrate` to create it")
            return
        parts = ", ".join(f"{c} at {found} of {needed}" for c, (found, needed) in sorted(behind.items()))
        super().__init__(
            f"the database's schema is older than this version of Tierone ({parts}); run `tierone migrate`"
        )
