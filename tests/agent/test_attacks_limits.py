"""Tool abuse brakes: per-account code and change limits, expiring verification, every call audited by key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.runtime import Runtime, open_runtime
from core.errors import NotAuthorized
from core.settings import BUNDLED_RUNBOOKS, Settings
from tests.conftest import Clock, latest_code
from tools.base import make_verified
from vectorstore.index import RunbookIndex

JANE = "jane.doe@example.com"


def mails_to(runtime: Runtime, address: str) -> int:
    return sum(1 for m in runtime.outbox.messages() if m["to"] == address)


def test_a_second_code_in_one_conversation_waits_for_the_cooldown(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    first = toolbox.send_code(JANE, conversation_id="c_1", key="k1")
    again = toolbox.send_code(JANE, conversation_id="c_1", key="k2")
    assert mails_to(runtime, JANE) == 1
    # The customer sees the same words either way: nothing tells an attacker what happened.
    assert again.message == first.message and again.data["sent"] is False
    refused = [r for r in runtime.ledger.audit("c_1") if r["outcome"] == "refused"]
    assert [(r["tool"], r["key"], r["account_id"]) for r in refused] == [("send_code", "k2", "acc-1001")]
    assert "rate limited" in refused[0]["detail"]
    clock.advance(seconds=61)
    toolbox.send_code(JANE, conversation_id="c_1", key="k3")
    assert mails_to(runtime, JANE) == 2


def test_codes_to_one_account_are_capped_per_hour_across_conversations(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    for i in range(7):
        toolbox.send_code(JANE, conversation_id=f"c_{i}", key=f"k{i}")
        clock.advance(seconds=5)
    assert mails_to(runtime, JANE) == 5
    clock.advance(hours=1)
    toolbox.send_code(JANE, conversation_id="c_late", key="k_late")
    assert mails_to(runtime, JANE) == 6


def test_account_changes_are_capped_per_day(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    results = []
    for i in range(4):
        account = make_verified("acc-1001", JANE, clock(), "c_1")
        results.append(toolbox.run("reset_password", key=f"r{i}", conversation_id="c_1", account=account))
        clock.advance(minutes=1)
    assert [r.ok for r in results] == [True, True, True, False]
    assert "rate limited" in (results[-1].error or "")
    assert runtime.ledger.audit("c_1")[-1]["outcome"] == "refused"
    # Unlocks and MFA resets count against the same allowance.
    refused = toolbox.run(
        "reset_mfa", key="m", conversation_id="c_1", account=make_verified("acc-1001", JANE, clock(), "c_1")
    )
    assert not refused.ok
    clock.advance(days=1)
    again = toolbox.run(
        "unlock_account", key="u", conversation_id="c_1", account=make_verified("acc-1001", JANE, clock(), "c_1")
    )
    assert again.ok


def test_an_expired_verification_is_refused_inside_the_toolbox(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    stale = make_verified("acc-1001", JANE, clock(), "c_1")
    clock.advance(minutes=31)
    with pytest.raises(NotAuthorized, match="expired"):
        toolbox.run("reset_password", key="late", conversation_id="c_1", account=stale)
    [row] = runtime.ledger.audit("c_1")
    assert (row["outcome"], row["key"], row["account_id"]) == ("refused", "late", "acc-1001")


def test_another_conversations_verification_is_refused_and_audited(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    theirs = make_verified("acc-1002", "bob.smith@example.com", clock(), "c_bob")
    with pytest.raises(NotAuthorized):
        toolbox.run("unlock_account", key="steal", conversation_id="c_attacker", account=theirs)
    [row] = runtime.ledger.audit("c_attacker")
    assert (row["tool"], row["outcome"], row["key"]) == ("unlock_account", "refused", "steal")


def test_limits_come_from_settings(tmp_path: Path, clock: Clock, bundled_index: RunbookIndex) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        runbooks=BUNDLED_RUNBOOKS,
        verification_ttl_minutes=5,
        account_actions_per_day=1,
        codes_per_account_per_hour=2,
        code_cooldown_seconds=0,
    )
    toolbox = open_runtime(settings, clock=clock, index=bundled_index).resolver.deps.toolbox
    at = clock()
    clock.advance(minutes=6)
    assert toolbox.verified("acc-1001", JANE, at, "c_1") is None
    assert toolbox.limits.account_actions_per_day == 1 and toolbox.limits.codes_per_hour == 2


def test_a_conversation_that_outlives_its_verification_must_verify_again(runtime: Runtime, clock: Clock) -> None:
    resolver = runtime.resolver
    cid = resolver.start()
    for text in ("I forgot my password", JANE):
        resolver.send(cid, text)
    resolver.send(cid, latest_code(runtime, cid))
    clock.advance(minutes=31)
    result = resolver.send(cid, "no, and now I'm locked out too, unlock my account")
    assert result.stage in ("identity", "code", "handed_off"), result
    assert "unlock_account" not in [r["tool"] for r in runtime.ledger.audit(cid)]


def test_every_tool_call_of_a_conversation_is_audited_with_its_key(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    resolver = runtime.resolver
    cid = resolver.start()
    for text in ("my account is locked", "bob.smith@example.com"):
        resolver.send(cid, text)
    resolver.send(cid, latest_code(runtime, cid))
    resolver.send(cid, "no, get me a human")
    audit = runtime.ledger.audit(cid)
    assert [r["tool"] for r in audit] == ["send_code", "verify_identity", "unlock_account"]
    assert all(r["key"].startswith(cid + ":") for r in audit)
    packet = resolver.deps.handoffs.for_conversation(cid)[0]
    keyed = {a.idempotency_key for a in packet.attempts if a.idempotency_key}
    assert keyed <= {r["key"] for r in audit}
