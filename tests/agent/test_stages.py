"""The stage machine, table-driven: every declared move, every undeclared one, and its drawing."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Literal, get_args

import pytest
from langchain_core.runnables import RunnableConfig

from agent.drawing import COMMAND, document
from agent.stages import INITIAL, TRANSITIONS, Event, advance, mermaid
from agent.state import Stage
from app.runtime import Runtime
from tests.conftest import latest_code

ROOT = Path(__file__).resolve().parents[2]

# The machine as the nodes ran it before the table existed: a change here is a change of behaviour.
EXPECTED: list[tuple[Stage, Event, Stage]] = [
    ("triage", "runbook_chosen", "steps"),
    ("triage", "handoff", "handed_off"),
    ("identity", "identity_asked", "identity"),
    ("identity", "code_sent", "code"),
    ("identity", "topic_changed", "steps"),
    ("identity", "step_presented", "confirm"),
    ("identity", "handoff", "handed_off"),
    ("code", "code_asked", "code"),
    ("code", "code_sent", "code"),
    ("code", "identity_verified", "steps"),
    # verify: knowledge: the facts are checked where they were asked for (or came with the problem).
    ("identity", "identity_verified", "steps"),
    ("steps", "identity_verified", "steps"),
    ("confirm", "identity_verified", "steps"),
    ("code", "topic_changed", "steps"),
    ("code", "step_presented", "confirm"),
    ("code", "handoff", "handed_off"),
    ("steps", "step_presented", "confirm"),
    ("steps", "identity_asked", "identity"),
    ("steps", "code_sent", "code"),
    ("steps", "topic_changed", "steps"),
    ("steps", "handoff", "handed_off"),
    ("steps", "step_skipped", "steps"),
    ("steps", "slot_asked", "slot"),
    ("slot", "slot_asked", "slot"),
    ("slot", "slot_filled", "steps"),
    ("slot", "topic_changed", "steps"),
    ("slot", "handoff", "handed_off"),
    ("confirm", "customer_confirmed", "resolved"),
    ("confirm", "outcome_matched", "steps"),
    ("confirm", "step_did_not_work", "steps"),
    ("confirm", "topic_changed", "steps"),
    ("confirm", "identity_asked", "identity"),
    ("confirm", "code_sent", "code"),
    ("confirm", "handoff", "handed_off"),
    ("resolved", "runbook_chosen", "steps"),
    ("resolved", "handoff", "handed_off"),
    ("triage", "incident_joined", "incident"),
    ("resolved", "incident_joined", "incident"),
    ("identity", "incident_joined", "incident"),
    ("code", "incident_joined", "incident"),
    ("steps", "incident_joined", "incident"),
    ("confirm", "incident_joined", "incident"),
    ("slot", "incident_joined", "incident"),
    ("incident", "incident_joined", "incident"),
    ("incident", "handoff", "handed_off"),
    ("incident", "incident_resolved", "resolved"),
    ("incident", "incident_detached", "triage"),
    ("handed_off", "returned_by_l2", "triage"),
    ("handed_off", "resolved_by_l2", "resolved"),
]
DECLARED = {(source, event) for source, event, _ in EXPECTED}
UNDECLARED = [pair for pair in itertools.product(get_args(Stage), get_args(Event)) if pair not in DECLARED]


@pytest.mark.parametrize(("source", "event", "target"), EXPECTED)
def test_declared_transition(source: Stage, event: Event, target: Stage) -> None:
    assert advance(source, event) == target


@pytest.mark.parametrize(("source", "event"), UNDECLARED)
def test_undeclared_transition_raises(source: Stage, event: Event) -> None:
    with pytest.raises(ValueError, match=rf"from stage '{source}' on event '{event}'.*agent/stages.py"):
        advance(source, event)


def test_table_declares_exactly_the_expected_moves_once_each() -> None:
    assert [(t.source, t.event, t.target) for t in TRANSITIONS] == EXPECTED
    assert len(DECLARED) == len(EXPECTED)


def test_every_move_says_why_in_one_line() -> None:
    for move in TRANSITIONS:
        assert move.doc.strip() and "\n" not in move.doc, move


def test_every_event_is_used_and_every_stage_reached_and_left() -> None:
    assert {t.event for t in TRANSITIONS} == set(get_args(Event))
    reached, frontier = {INITIAL}, [INITIAL]
    while frontier:
        stage = frontier.pop()
        for move in TRANSITIONS:
            if move.source == stage and move.target not in reached:
                reached.add(move.target)
                frontier.append(move.target)
    assert reached == set(get_args(Stage))
    assert {t.source for t in TRANSITIONS} == set(get_args(Stage))


def test_mermaid_draws_one_arrow_per_move() -> None:
    assert mermaid().splitlines() == [
        "stateDiagram-v2",
        f"    [*] --> {INITIAL}",
        *(f"    {source} --> {target} : {event}" for source, event, target in EXPECTED),
    ]


def test_committed_drawing_is_current() -> None:
    committed = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    assert committed == document(), f"docs/stages.md is stale: run `{COMMAND}` and commit it"


def test_drawing_holds_the_graph_of_the_nodes() -> None:
    text = document()
    assert "stateDiagram-v2" in text
    for node in ("understand", "decide", "act", "reply", "handoff", "incident"):
        assert f"\t{node}({node})" in text


def _stage_literals(path: Path) -> list[int]:
    """Lines where a "stage" key is given a string literal (dict entry or item assignment)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "stage" and isinstance(value, ast.Constant):
                    found.append(value.lineno)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                key = target.slice if isinstance(target, ast.Subscript) else None
                if isinstance(key, ast.Constant) and key.value == "stage":
                    found.append(node.lineno)
    return sorted(found)


@pytest.mark.parametrize("module", ["agent/nodes.py", "agent/resolver.py"])
def test_no_stage_is_written_as_a_literal(module: str) -> None:
    assert _stage_literals(ROOT / module) == []


def test_stage_literal_finder_finds_both_forms(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('update = {"stage": "steps"}\nupdate["stage"] = "code"\nupdate = {"stage": advance(s, e)}\n')
    assert _stage_literals(sample) == [1, 2]


def _stages_seen(runtime: Runtime, cid: str) -> list[str]:
    """Every stage the conversation's checkpoints held, oldest first, repeats folded."""
    config: RunnableConfig = {"configurable": {"thread_id": cid}}
    history = [s.values.get("stage") for s in runtime.resolver.graph.get_state_history(config)]
    return [stage for stage, _ in itertools.groupby(reversed(history)) if stage is not None]


def test_password_reset_walks_the_table(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    for text in ("I forgot my password", "jane.doe@example.com", "{otp}", "yes, that worked"):
        runtime.resolver.send(cid, latest_code(runtime, cid) if text == "{otp}" else text)
    assert _stages_seen(runtime, cid) == ["triage", "steps", "identity", "code", "steps", "confirm", "resolved"]


@pytest.mark.parametrize(("back_to", "expected"), [("triage", "triage"), ("resolved", "resolved")])
def test_reopen_applies_the_l2_events(
    runtime: Runtime, back_to: Literal["triage", "resolved"], expected: Stage
) -> None:
    cid = runtime.resolver.start()
    assert runtime.resolver.send(cid, "let me talk to a human please").stage == "handed_off"
    runtime.resolver.reopen(cid, back_to)
    assert runtime.resolver.view(cid)["stage"] == expected
    # Only a handed-off conversation is taken back; a second call changes nothing.
    runtime.resolver.reopen(cid, "triage" if back_to == "resolved" else "resolved")
    assert runtime.resolver.view(cid)["stage"] == expected


@pytest.mark.parametrize(("event", "expected"), [("incident_resolved", "resolved"), ("incident_detached", "triage")])
def test_leaving_an_incident_applies_its_events(
    runtime: Runtime, event: Literal["incident_resolved", "incident_detached"], expected: Stage
) -> None:
    cid = runtime.resolver.start()
    assert runtime.resolver.send(cid, "nobody can get online in the whole office").stage == "incident"
    assert runtime.resolver.leave_incident(cid, event)
    assert _stages_seen(runtime, cid) == ["triage", "incident", expected]
    # Only a conversation in an incident leaves one; a second call changes nothing.
    assert not runtime.resolver.leave_incident(cid, event)
    assert runtime.resolver.view(cid)["stage"] == expected
