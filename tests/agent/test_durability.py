"""A process that stops mid-conversation, or mid-turn, loses nothing and acts only once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.runtime import Runtime
from tests.conftest import latest_code


def actions(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT account_id, action FROM directory_actions")]


def test_conversation_continues_in_a_new_process(make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    first = make_runtime(tmp_path / "data")
    cid = first.resolver.start()
    first.resolver.send(cid, "I forgot my password")
    first.resolver.send(cid, "jane.doe@example.com")
    code = latest_code(first, cid)
    del first  # the process goes away; only the files remain

    second = make_runtime(tmp_path / "data")
    result = second.resolver.send(cid, code)
    assert result.stage == "confirm"
    assert result.runbook_id == "password-reset"
    assert actions(second.settings.desk_db) == [("acc-1001", "reset_password")]
    transcript = second.resolver.view(cid)["transcript"]
    assert [line["role"] for line in transcript] == ["customer", "bot"] * 3


class CrashAfterAction:
    """A directory that performs the action, then dies before the result is recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crashes = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def unlock(self, account_id: str, *, key: str) -> dict[str, Any]:
        result: dict[str, Any] = self.inner.unlock(account_id, key=key)
        if self.crashes:
            self.crashes -= 1
            raise SystemExit("power cut")  # not a ToolError: nothing catches it
        return result


def test_turn_cut_short_after_the_action_resumes_without_acting_twice(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    first = make_runtime(tmp_path / "data")
    toolbox = first.resolver.deps.toolbox
    toolbox.directory = CrashAfterAction(toolbox.directory)
    cid = first.resolver.start()
    first.resolver.send(cid, "my account is locked")
    first.resolver.send(cid, "bob.smith@example.com")
    code = latest_code(first, cid)
    with pytest.raises(SystemExit):
        first.resolver.send(cid, code)
    assert actions(first.settings.desk_db) == [("acc-1002", "unlock")]

    second = make_runtime(tmp_path / "data")
    assert second.resolver.recover() == [cid]
    state = second.resolver.view(cid)
    assert state["stage"] == "confirm"
    tools = [(a["tool"], a["ok"]) for a in state["attempts"] if a["kind"] == "tool"]
    assert tools == [("send_code", True), ("verify_identity", True), ("unlock_account", True)]
    assert actions(second.settings.desk_db) == [("acc-1002", "unlock")]
    ledger = second.ledger.audit(cid)
    assert [row["tool"] for row in ledger] == ["send_code", "verify_identity", "unlock_account"]
    # The customer carries on as if nothing happened.
    assert second.resolver.send(cid, "yes").stage == "resolved"


def test_handoff_replayed_after_a_crash_is_stored_once(make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path / "data")
    cid = runtime.resolver.start()
    result = runtime.resolver.send(cid, "I'd like a human please")
    packet = runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])  # type: ignore[index]
    assert runtime.resolver.deps.handoffs.put(packet) is False
    assert len(runtime.resolver.deps.handoffs.packets()) == 1
