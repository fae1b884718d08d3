"""Suggestions from L2 resolutions: what a lesson becomes, and the store's states (no model needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.handoff import CustomerState, HandoffPacket, Sentiment, Sla, TranscriptLine
from app.teaching import (
    BotCouldHave,
    NewRunbook,
    SuggestionNotFound,
    Suggestions,
    TeachingError,
    UnknownRunbook,
    add_example,
    append_case,
    customer_turns,
    lesson_from,
    slug,
)
from core.db import DatabaseTarget, open_database
from core.pack import Pack, load_pack
from eval.cases import load_case_file
from tests.conftest import Clock
from tests.routing_pack import write_pack

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def packet(*customer: str, packet_id: str = "HO-1") -> HandoffPacket:
    lines = []
    for i, text in enumerate(customer):
        lines.append(TranscriptLine(at=T0 + timedelta(minutes=i), role="customer", text=text))
        lines.append(TranscriptLine(at=T0 + timedelta(minutes=i, seconds=5), role="bot", text="Let me look."))
    return HandoffPacket(
        packet_id=packet_id,
        conversation_id="c_1",
        channel="chat",
        created_at=T0,
        customer=CustomerState(),
        category=None,
        runbook_id=None,
        runbook_candidates=[],
        sla=Sla(priority="P3", first_response_due=T0, resolve_due=T0),
        reason_codes=["no_runbook_fits"],
        attempts=[],
        hypothesis="",
        summary="",
        transcript=lines,
        sentiment=Sentiment(score=0.0, label="neutral"),
    )


@pytest.fixture
def pack(tmp_path: Path) -> Pack:
    root = write_pack(tmp_path / "pack")
    # printer-problem becomes tier 2: the bot recognises it and hands off.
    path = root / "printer-problem.md"
    path.write_text(path.read_text().replace("tier: 1", "tier: 2"))
    return load_pack(root)


def test_customer_turns_are_redacted_and_skip_bare_codes_and_addresses() -> None:
    p = packet("hi", "my vpn drops at home, reach me on jane@example.com", "jane@example.com", "123456")
    assert customer_turns(p) == ["my vpn drops at home, reach me on [email]"]


def test_bot_could_have_takes_the_problem_turn_and_expects_the_runbook(pack: Pack) -> None:
    p = packet("hello", "the vpn keeps dropping every ten minutes when I work from home")
    built = lesson_from(p, BotCouldHave("vpn-connection"), pack)
    assert built["kind"] == "example" and built["runbook_id"] == "vpn-connection"
    assert built["text"] == "the vpn keeps dropping every ten minutes when I work from home"
    assert built["case"] == {
        "id": "l2-HO-1",
        "turns": ["hello", "the vpn keeps dropping every ten minutes when I work from home"],
        "expect": {"handoff": False, "runbook": "vpn-connection"},
        "tags": ["from-l2"],
    }
    # What came after the problem (asking for a person) would make the case a handoff: left out.
    later = lesson_from(
        packet("hello", "the vpn keeps dropping every ten minutes", "human please"),
        BotCouldHave("vpn-connection"),
        pack,
    )
    assert later["case"]["turns"] == ["hello", "the vpn keeps dropping every ten minutes"]
    # A tier-2 runbook: the regression case expects the bot to recognise it and hand off.
    tier2 = lesson_from(p, BotCouldHave("printer-problem"), pack)
    assert tier2["case"]["expect"] == {"handoff": True, "runbook": "printer-problem"}


def test_lessons_the_pack_cannot_take_are_refused(pack: Pack) -> None:
    p = packet("my monitor flickers when docked")
    with pytest.raises(UnknownRunbook, match="'monitor-flicker'"):
        lesson_from(p, BotCouldHave("monitor-flicker"), pack)
    with pytest.raises(TeachingError, match="already has a runbook 'vpn-connection'"):
        lesson_from(p, NewRunbook("Fix a VPN that will not connect", ["x"]), pack)
    with pytest.raises(TeachingError, match="new_runbook.steps"):
        lesson_from(p, NewRunbook("Monitor flickers", [" "]), pack)
    with pytest.raises(TeachingError, match="no customer words"):
        lesson_from(packet("123456"), BotCouldHave("vpn-connection"), pack)
    built = lesson_from(p, NewRunbook("Monitor  flickers when docked!", ["Reseat the cable", "Update the dock"]), pack)
    assert built["runbook_id"] == "monitor-flickers-when-docked" == slug("Monitor flickers when docked!")
    assert built["draft"] == {
        "title": "Monitor flickers when docked!",
        "steps": ["Reseat the cable", "Update the dock"],
        "category": None,
    }


def test_suggestions_move_from_open_to_one_decision_and_keep_the_reason(db_target: DatabaseTarget, pack: Pack) -> None:
    clock = Clock(T0)
    store = Suggestions(db_target, clock)
    p = packet("the vpn keeps dropping at home")
    with open_database(db_target).transaction() as conn:
        first = store.add(conn, p, "Alex", lesson_from(p, BotCouldHave("vpn-connection"), pack))
        second = store.add(conn, p, "Sam", lesson_from(p, NewRunbook("Home router advice", ["Restart it"]), pack))
    assert [s.id for s in store.list()] == [first, second] == ["SUG-1", "SUG-2"]
    with pytest.raises(TeachingError, match="say why"):
        store.decide(first, "rejected", "  ")
    clock.advance(minutes=5)
    rejected = store.decide("1", "rejected", "the  customer's router, not our VPN")
    assert (rejected.state, rejected.why) == ("rejected", "the customer's router, not our VPN")
    assert rejected.decided_at == clock()
    with pytest.raises(TeachingError, match="already rejected"):
        store.decide(first, "accepted", "")
    assert [s.id for s in store.list()] == [second]
    assert [s.id for s in store.list("all")] == [first, second]
    # A second process on the same database sees the same states.
    again = Suggestions(db_target, clock)
    assert again.get(first) == rejected and again.get(second).draft["title"] == "Home router advice"
    for missing in ("SUG-9", "nine"):
        with pytest.raises(SuggestionNotFound, match=repr(missing)):
            again.get(missing)


RUNBOOK = """---
id: vpn-connection
# routing reads these
examples:
  - the vpn keeps disconnecting
  - 'GlobalProtect says: "gateway unreachable"'
title: Fix a VPN that will not connect
category: it
tier: 1
---
Body stays.

## Steps
1. Reconnect.

## Check
Did it work?
"""


def test_an_example_is_added_leaving_every_other_line_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "vpn.md"
    path.write_text(RUNBOOK)
    add_example(path, 'it says "no route" when I\'m on hotel wifi')
    lines = RUNBOOK.splitlines()
    assert path.read_text().splitlines() == [
        *lines[:6],
        '  - "it says \\"no route\\" when I\'m on hotel wifi"',
        *lines[6:],
    ]
    assert (
        load_pack(tmp_path).runbooks["vpn-connection"].meta.examples[-1] == 'it says "no route" when I\'m on hotel wifi'
    )


def test_an_example_joins_a_flow_list_too(tmp_path: Path) -> None:
    path = tmp_path / "vpn.md"
    path.write_text(
        RUNBOOK.replace(
            "examples:\n  - the vpn keeps disconnecting\n  - 'GlobalProtect says: \"gateway unreachable\"'\n",
            "examples: [vpn down, no tunnel]\n",
        )
    )
    add_example(path, "vpn drops on hotel wifi")
    meta = load_pack(tmp_path).runbooks["vpn-connection"].meta
    assert meta.examples == ["vpn down", "no tunnel", "vpn drops on hotel wifi"]
    assert path.read_text().endswith("---\nBody stays.\n\n## Steps\n1. Reconnect.\n\n## Check\nDid it work?\n")


def test_a_case_joins_a_jsonl_or_a_yaml_case_file(tmp_path: Path) -> None:
    case = {"id": "l2-HO-1", "turns": ["vpn drops"], "expect": {"handoff": False, "runbook": "vpn-connection"}}
    lines = tmp_path / "cases.jsonl"
    lines.write_text('{"gates": {"cases": ">= 1"}}')  # no newline at the end
    append_case(lines, case)
    assert [json.loads(line) for line in lines.read_text().splitlines()][1] == case
    mapping = tmp_path / "cases.yaml"
    mapping.write_text("gates:\n  passed: '>= 1'\ncases:\n  - id: a\n    turns: [hi]\n    expect: {handoff: true}\n")
    append_case(mapping, case)
    data = load_case_file(mapping)
    assert [c.id for c in data.cases] == ["a", "l2-HO-1"] and [str(g) for g in data.gates] == ["passed >= 1"]
    with pytest.raises(TeachingError, match="add this one by hand"):
        append_case(tmp_path / "cases.csv", case)
