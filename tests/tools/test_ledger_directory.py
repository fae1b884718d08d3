"""The tool ledger and the embedded directory, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.db import DatabaseTarget
from core.errors import ToolError
from tests.conftest import Clock
from tools.base import ServiceStatus
from tools.ledger import Ledger
from tools.sqlite_backend import SqliteDirectory


def test_a_run_is_recorded_before_and_after_and_audited_in_order(db_target: DatabaseTarget, clock: Clock) -> None:
    ledger = Ledger(db_target, clock)
    ledger.start("c1:reset:1", "c1", "reset_password", "acc-1001")
    ledger.start("c1:reset:1", "c1", "reset_password", "acc-1001")  # a replay notes nothing new
    assert ledger.finished("c1:reset:1") is None
    ledger.finish("c1:reset:1", "c1", "reset_password", "acc-1001", {"link": "50%"}, ok=True)
    clock.advance(seconds=1)
    ledger.refuse("c1:unlock:1", "c1", "unlock", "acc-1002", "not the verified account")
    ledger.finish("c2:x", "c2", "unlock", "acc-1001", {}, ok=False, detail="down")
    assert ledger.finished("c1:reset:1") == {"link": "50%"}
    audit = ledger.audit()
    assert [(a["tool"], a["outcome"]) for a in audit] == [
        ("reset_password", "ok"),
        ("unlock", "refused"),
        ("unlock", "failed"),
    ]
    assert [a["seq"] for a in audit] == sorted(a["seq"] for a in audit) and len({a["seq"] for a in audit}) == 3
    assert [a["key"] for a in ledger.audit("c2")] == ["c2:x"]
    since = clock() - timedelta(hours=1)
    assert len(ledger.recent("acc-1001", ("reset_password", "unlock"), since)) == 1
    assert ledger.recent("acc-1001", ("unlock",), since, conversation_id="c1") == []


def test_one_pending_code_per_conversation_and_its_attempts(db_target: DatabaseTarget, clock: Clock) -> None:
    ledger = Ledger(db_target, clock)
    ledger.put_code("c1", "acc-1001", "hash-1", clock() + timedelta(minutes=5))
    assert ledger.take_code_attempt("c1")["attempts"] == 1  # type: ignore[index]
    ledger.put_code("c1", "acc-1002", "hash-2", clock() + timedelta(minutes=5))  # a new code replaces it
    code = ledger.take_code_attempt("c1")
    assert code is not None and (code["account_id"], code["code_hash"], code["attempts"]) == ("acc-1002", "hash-2", 1)
    ledger.start("c1:check", "c1", "check_code", "acc-1002")
    ledger.finish("c1:check", "c1", "check_code", "acc-1002", {}, ok=True, consume_code=True)
    assert ledger.take_code_attempt("c1") is None
    ledger.put_code("c2", None, "hash-3", clock())
    ledger.drop_code("c2")
    assert ledger.take_code_attempt("c2") is None


def test_the_directory_seeds_once_finds_any_case_and_acts_once_per_key(db_target: DatabaseTarget, clock: Clock) -> None:
    directory = SqliteDirectory(db_target, clock)
    again = SqliteDirectory(db_target, clock)  # a second process: no second seed
    jane = again.find_by_email(" JANE.Doe@example.com ")
    assert jane is not None and jane.account_id == "acc-1001"
    first = directory.unlock("acc-1002", key="c1:unlock")
    assert first["status_after"] == "active"
    assert directory.unlock("acc-1002", key="c1:unlock") == dict(first, replayed=True)
    with pytest.raises(ToolError, match="already used for another action"):
        directory.reset_mfa("acc-1002", key="c1:unlock")
    with pytest.raises(ToolError, match="does not exist"):
        directory.unlock("acc-404", key="c1:other")
    renamed = jane.model_copy(update={"email": "jane@example.com"})
    directory.add(renamed)
    assert directory.find_by_email("jane.doe@example.com") is None
    assert directory.get("acc-1001") == renamed
    before = len(directory.services())
    directory.set_service(ServiceStatus(name="vpn", state="outage", note="50% of users"))
    directory.set_service(ServiceStatus(name="vpn", state="operational"))
    assert len(again.services()) == before
    assert next(s for s in again.services() if s.name == "vpn").state == "operational"
