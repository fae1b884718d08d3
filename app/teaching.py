"""Every L2 fix teaches L1: what a technician says the bot could have done, kept as suggestions.

Resolving a handoff, a technician may say the bot could have handled it with a runbook the pack has
(``bot_could_have``), or that a runbook is missing (``new_runbook``). Either becomes a suggestion: the
customer's words, redacted, as a new example of that runbook, and a regression eval case built from
the conversation's customer turns that expects it. A runbook author then accepts it (eval/teach.py:
the pack must still lint, and the eval shows what changed) or rejects it with the reason:

    open ──accept──▶ accepted
      └───reject──▶ rejected

The suggestion is stored in the same transaction that resolves the ticket (``Suggestions.add`` takes
the desk's connection), so a ticket is never resolved with its lesson lost, nor the reverse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from agent.handoff import HandoffPacket
from app.desk import Desk, Ticket
from core.db import Connection, DatabaseTarget, Migration, Migrations, PersonalTables, open_database
from core.errors import TieroneError
from core.pack import Pack
from core.redact import redact

Kind = Literal["example", "new_runbook"]
State = Literal["open", "accepted", "rejected"]

_SUGGESTIONS = """CREATE TABLE IF NOT EXISTS suggestions (
    seq {serial},
    packet_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    runbook_id TEXT NOT NULL,
    text TEXT NOT NULL,
    case_json TEXT NOT NULL,
    draft TEXT,
    technician TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    why TEXT,
    decided_at TEXT
)"""

_PLACEHOLDER = re.compile(r"\[[a-z_]+\]")
_NOT_KEBAB = re.compile(r"[^a-z0-9]+")


class TeachingError(TieroneError):
    """A lesson or a suggestion cannot be taken as given; the text says what to change."""


class UnknownRunbook(TeachingError):
    """The technician named a runbook the pack does not have."""

    def __init__(self, runbook_id: str, known: list[str]) -> None:
        self.runbook_id = runbook_id
        hint = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
        super().__init__(
            f"bot_could_have.runbook_id: the pack has no runbook {runbook_id!r} (GET /runbooks lists them: {hint});"
            " the ticket was not resolved"
        )


class SuggestionNotFound(TeachingError):
    """No suggestion has the given id."""

    def __init__(self, suggestion_id: str) -> None:
        super().__init__(f"no suggestion has the id {suggestion_id!r}; `tierone runbooks suggestions` lists them")


@dataclass(frozen=True)
class BotCouldHave:
    """The technician's word that a runbook the pack has would have solved it."""

    runbook_id: str


@dataclass(frozen=True)
class NewRunbook:
    """The technician's outline of a runbook the pack lacks."""

    title: str
    steps: list[str]
    category: str | None = None


Lesson = BotCouldHave | NewRunbook


@dataclass(frozen=True)
class Suggestion:
    """One lesson from an L2 resolution, waiting for a runbook author."""

    id: str
    kind: Kind
    runbook_id: str
    text: str
    case: dict[str, Any]
    packet_id: str
    conversation_id: str
    technician: str
    created_at: datetime
    state: State = "open"
    why: str | None = None
    decided_at: datetime | None = None
    # For a new runbook: its title, steps and category (None: the author chooses when accepting).
    draft: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The suggestion as JSON-ready data (the CLI's --json and GET /suggestions)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "runbook_id": self.runbook_id,
            "text": self.text,
            "case": self.case,
            "state": self.state,
            "why": self.why,
            "packet_id": self.packet_id,
            "conversation_id": self.conversation_id,
            "technician": self.technician,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "draft": self.draft or None,
        }


def _says_something(text: str) -> bool:
    """Whether a customer turn holds words, not only a code, an address or other redacted values."""
    return sum(c.isalpha() for c in _PLACEHOLDER.sub(" ", text)) >= 3


def customer_turns(packet: HandoffPacket) -> list[str]:
    """The customer's turns of the packet's transcript, redacted, leaving out bare codes and addresses."""
    turns = [redact(line.text).strip() for line in packet.transcript if line.role == "customer"]
    return [t for t in turns if _says_something(t)]


def slug(title: str) -> str:
    """A kebab-case runbook id from a title."""
    return _NOT_KEBAB.sub("-", title.lower()).strip("-")[:60].strip("-") or "new-runbook"


def lesson_from(packet: HandoffPacket, lesson: Lesson, pack: Pack) -> dict[str, Any]:
    """Check the lesson against the pack and build what the suggestion holds; TeachingError if it cannot.

    Pure: nothing is stored, so a refused lesson leaves the ticket as it was.
    """
    turns = customer_turns(packet)
    if not turns:
        raise TeachingError("the conversation holds no customer words to learn from; resolve it without a lesson")
    # The problem as the customer put it: their longest turn (greetings and "yes" are short).
    text = max(turns, key=len)
    if isinstance(lesson, BotCouldHave):
        runbook = pack.runbooks.get(lesson.runbook_id)
        if runbook is None:
            raise UnknownRunbook(lesson.runbook_id, sorted(pack.runbooks))
        kind: Kind = "example"
        runbook_id = runbook.id
        handoff = pack.effective_tier(runbook) == 2
        draft: dict[str, Any] = {}
    else:
        title = " ".join(lesson.title.split())
        steps = [" ".join(s.split()) for s in lesson.steps if s.strip()]
        if len(title) < 3:
            raise TeachingError("new_runbook.title: give the runbook a title of 3 characters or more")
        if not steps:
            raise TeachingError("new_runbook.steps: give at least one step the bot should walk the customer through")
        runbook_id = slug(title)
        same = next((rb.id for rb in pack.runbooks.values() if rb.meta.title.lower() == title.lower()), None)
        if runbook_id in pack.runbooks or same:
            raise TeachingError(
                f"new_runbook.title: the pack already has a runbook {same or runbook_id!r};"
                " use bot_could_have with that runbook_id instead"
            )
        if lesson.category is not None and pack.policy.categories and lesson.category not in pack.policy.categories:
            known = ", ".join(sorted(pack.policy.categories))
            raise TeachingError(f"new_runbook.category: {lesson.category!r} is not a category of the pack ({known})")
        kind, handoff = "new_runbook", False
        draft = {"title": redact(title), "steps": [redact(s) for s in steps], "category": lesson.category}
    case = {
        "id": f"l2-{packet.packet_id}",
        # Up to the problem: what came after it (asking for a person, answering L2) is not the bot's test.
        "turns": turns[: turns.index(text) + 1],
        "expect": {"handoff": handoff, "runbook": runbook_id},
        "tags": ["from-l2"],
    }
    return {"kind": kind, "runbook_id": runbook_id, "text": text, "case": case, "draft": draft}


class Suggestions:
    """The suggestions of L2 resolutions, durable in the desk database."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "suggestions",
        Migration(
            1,
            {
                "sqlite": _SUGGESTIONS.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"),
                "postgresql": _SUGGESTIONS.format(serial="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
            },
            "CREATE INDEX IF NOT EXISTS suggestions_state ON suggestions (state, seq)",
        ),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "suggestions": {"conversation_id": "conversation", "packet_id": "packet"}
    }

    def __init__(self, path: DatabaseTarget, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._db = open_database(path)
        self._clock = clock
        self._db.migrate(self.MIGRATIONS)

    def add(self, conn: Connection, packet: HandoffPacket, technician: str, built: dict[str, Any]) -> str:
        """Store a suggestion inside the caller's transaction (the one that resolves the ticket); return its id."""
        row = conn.execute(
            "INSERT INTO suggestions (packet_id, conversation_id, kind, runbook_id, text, case_json, draft,"
            " technician, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                packet.packet_id,
                packet.conversation_id,
                built["kind"],
                built["runbook_id"],
                built["text"],
                json.dumps(built["case"]),
                json.dumps(built["draft"]) if built["draft"] else None,
                technician,
                self._clock().isoformat(),
            ),
        ).fetchone()
        return f"SUG-{row[0]}"

    @staticmethod
    def _seq(suggestion_id: str) -> int:
        digits = suggestion_id.strip().upper().removeprefix("SUG-")
        if not digits.isdigit():
            raise SuggestionNotFound(suggestion_id)
        return int(digits)

    @staticmethod
    def _row(row: Any) -> Suggestion:
        return Suggestion(
            id=f"SUG-{row['seq']}",
            kind=row["kind"],
            runbook_id=row["runbook_id"],
            text=row["text"],
            case=json.loads(row["case_json"]),
            packet_id=row["packet_id"],
            conversation_id=row["conversation_id"],
            technician=row["technician"],
            created_at=datetime.fromisoformat(row["created_at"]),
            state=row["state"],
            why=row["why"],
            decided_at=datetime.fromisoformat(row["decided_at"]) if row["decided_at"] else None,
            draft=json.loads(row["draft"]) if row["draft"] else {},
        )

    def get(self, suggestion_id: str) -> Suggestion:
        """One suggestion by id (``SUG-3`` or ``3``)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT * FROM suggestions WHERE seq = ?", (self._seq(suggestion_id),)).fetchone()
        if row is None:
            raise SuggestionNotFound(suggestion_id)
        return self._row(row)

    def list(self, state: State | Literal["all"] = "open") -> list[Suggestion]:
        """Suggestions in one state (or all), oldest first."""
        query = "SELECT * FROM suggestions"
        args: tuple[str, ...] = ()
        if state != "all":
            query, args = query + " WHERE state = ?", (state,)
        with self._db.transaction() as conn:
            rows = conn.execute(query + " ORDER BY seq", args).fetchall()
        return [self._row(r) for r in rows]

    def decide(self, suggestion_id: str, state: Literal["accepted", "rejected"], why: str) -> Suggestion:
        """Close an open suggestion as accepted or rejected, with the reason; TeachingError if it is closed."""
        why = " ".join(why.split())
        if state == "rejected" and not why:
            raise TeachingError("--why: say why the suggestion is rejected; the reason is kept with it")
        seq = self._seq(suggestion_id)
        with self._db.transaction() as conn:
            row = conn.execute("SELECT state FROM suggestions WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                raise SuggestionNotFound(suggestion_id)
            if row["state"] != "open":
                raise TeachingError(f"{suggestion_id} is already {row['state']}; only an open suggestion can change")
            conn.execute(
                "UPDATE suggestions SET state = ?, why = ?, decided_at = ? WHERE seq = ?",
                (state, why or None, self._clock().isoformat(), seq),
            )
        return self.get(suggestion_id)


def resolve_with_lesson(
    desk: Desk,
    suggestions: Suggestions,
    pack: Pack,
    packet_id: str,
    technician: str,
    note: str = "",
    lesson: Lesson | None = None,
    *,
    admin: bool = False,
) -> tuple[Ticket, str | None]:
    """Resolve a ticket and keep its lesson as a suggestion, both or neither; return the ticket and the id.

    The lesson is checked against the pack first: one naming an unknown runbook raises UnknownRunbook and
    the ticket stays as it was.
    """
    if lesson is None:
        return desk.resolve(packet_id, technician, note, admin=admin), None
    packet = desk.queue.get(packet_id)
    built = lesson_from(packet, lesson, pack)
    made: list[str] = []
    ticket = desk.resolve(
        packet_id,
        technician,
        note,
        admin=admin,
        also=lambda conn: made.append(suggestions.add(conn, packet, technician, built)),
    )
    return ticket, made[0]


# -- applying a suggestion to a pack's files (eval/teach.py checks and measures it first) -------------

_FRONT = re.compile(r"\A(---[ \t]*\r?\n)(.*?)(\r?\n---[ \t]*(?:\r?\n|\Z))", re.DOTALL)
_EXAMPLES_KEY = re.compile(r"^examples:[ \t]*(?:#.*)?$")


def _examples_added(front: str, text: str) -> str:
    """The front matter with one more example, its other lines untouched (block lists); else re-dumped."""
    old = yaml.safe_load(front)
    lines = front.split("\n")
    start = next((i for i, line in enumerate(lines) if _EXAMPLES_KEY.match(line.rstrip("\r"))), None)
    if start is not None:
        end = start + 1
        # The list's lines: its items ("- " at any indent) and their continuations (indented or blank).
        while end < len(lines) and (lines[end][:1] in (" ", "\t", "-") or not lines[end].strip()):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        first = next((line for line in lines[start + 1 : end] if line.lstrip().startswith("-")), "  - ")
        indent = first[: len(first) - len(first.lstrip())]
        new = [*lines[:end], f"{indent}- {json.dumps(text, ensure_ascii=False)}", *lines[end:]]
        edited = "\n".join(new)
        if yaml.safe_load(edited) == {**old, "examples": [*old["examples"], text]}:
            return edited
    # A flow list or an unusual layout: write the front matter again (its comments are lost).
    dumped: str = yaml.safe_dump(
        {**old, "examples": [*old["examples"], text]}, sort_keys=False, allow_unicode=True, width=1000
    )
    return dumped.rstrip("\n")


def add_example(path: Path, text: str) -> None:
    """Append an example to a runbook file's front matter."""
    content = path.read_text(encoding="utf-8")
    match = _FRONT.match(content)
    if match is None:
        raise TeachingError(f"{path}: no front matter to add the example to")
    head, front, tail = match.groups()
    path.write_text(head + _examples_added(front, text) + tail + content[match.end() :], encoding="utf-8")


def new_runbook_text(suggestion: Suggestion, category: str) -> str:
    """A runbook file for a new-runbook suggestion: its title, the customer's words, the technician's steps."""
    front = {
        "id": suggestion.runbook_id,
        "title": suggestion.draft["title"],
        "category": category,
        "tier": 1,
        "examples": [suggestion.text],
    }
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(suggestion.draft["steps"], start=1))
    return (
        "---\n"
        + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
        + "---\n"
        + f"Drafted from {suggestion.technician}'s resolution of {suggestion.packet_id} ({suggestion.id}).\n\n"
        + f"## Steps\n{steps}\n\n## Check\nDid that solve it?\n"
    )


def append_case(cases: Path, case: dict[str, Any]) -> None:
    """Append a case to a case file: a line of a .jsonl file, or an item of a YAML one (rewritten, comments lost)."""
    if cases.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(cases.read_text(encoding="utf-8")) if cases.exists() else []
        listed = data.get("cases") if isinstance(data, dict) else data
        if not isinstance(listed, list):
            raise TeachingError(f"{cases}: expected a list of cases (or a mapping with `cases:`) to append to")
        listed.append(case)
        cases.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")
        return
    if cases.suffix != ".jsonl":
        raise TeachingError(
            f"{cases}: cases are appended to a .jsonl or .yaml file; add this one by hand: {json.dumps(case)}"
        )
    text = cases.read_text(encoding="utf-8") if cases.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    cases.write_text(text + json.dumps(case, ensure_ascii=False) + "\n", encoding="utf-8")


def apply_to_files(suggestion: Suggestion, runbooks: Path, cases: Path, category: str | None = None) -> list[Path]:
    """Write the suggestion into a pack's files and its case into the case file; return the pack files written.

    Callers work on a copy (eval/teach.py) and keep it only once the copy lints and its eval holds.
    """
    written: list[Path] = []
    if suggestion.kind == "example":
        path = _runbook_file(runbooks, suggestion.runbook_id)
        add_example(path, suggestion.text)
        written.append(path)
    else:
        path = runbooks / f"{suggestion.runbook_id}.md"
        if path.exists():
            raise TeachingError(f"{path} exists already; rename the suggested runbook or reject the suggestion")
        chosen = category or suggestion.draft.get("category") or "uncategorised"
        path.write_text(new_runbook_text(suggestion, chosen), encoding="utf-8")
        written.append(path)
    append_case(cases, suggestion.case)
    return written


def _runbook_file(runbooks: Path, runbook_id: str) -> Path:
    """The file of a runbook in a pack folder, by its front matter's id."""
    for path in sorted(runbooks.rglob("*.md")):
        match = _FRONT.match(path.read_text(encoding="utf-8"))
        if match is None:
            continue
        try:
            front = yaml.safe_load(match.group(2))
        except yaml.YAMLError:
            continue
        if isinstance(front, dict) and front.get("id") == runbook_id:
            return path
    raise TeachingError(f"{runbooks} has no runbook {runbook_id!r}; was it renamed since the suggestion was made?")
