"""Accepting a suggestion: the pack must still lint, the eval runs before and after, and gates guard it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.teaching import BotCouldHave, NewRunbook, Suggestions, TeachingError, lesson_from
from core.db import Database
from core.pack import lint_pack, load_pack
from eval.teach import GateBroken, accept
from tests.app.test_teaching import T0, packet
from tests.conftest import Clock
from tests.fakes import HashingEmbedder
from tests.routing_pack import write_pack

CASES = [
    {"id": "pw", "turns": ["I forgot my password"], "expect": {"handoff": False, "runbook": "password-reset"}},
    {"id": "vpn", "turns": ["no vpn connection"], "expect": {"handoff": False, "runbook": "vpn-connection"}},
    {"id": "print", "turns": ["the printer is offline"], "expect": {"handoff": False, "runbook": "printer-problem"}},
]


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    return write_pack(tmp_path / "pack")


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"gates": {"cases": "<= 3"}}) + "\n" + "".join(json.dumps(c) + "\n" for c in CASES))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Suggestions:
    return Suggestions(tmp_path / "desk.sqlite", Clock(T0))


def suggest(store: Suggestions, pack_dir: Path, lesson: BotCouldHave | NewRunbook, *turns: str) -> str:
    p = packet(*turns)
    with Database(store.path).transaction() as conn:
        return store.add(conn, p, "Alex", lesson_from(p, lesson, load_pack(pack_dir)))


def snapshot(*roots: Path) -> dict[str, bytes]:
    files = [p for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*"))) if p.is_file()]
    return {str(p): p.read_bytes() for p in files}


def test_accept_writes_the_example_and_the_case_and_reports_the_change(
    store: Suggestions, pack_dir: Path, cases: Path
) -> None:
    sid = suggest(store, pack_dir, BotCouldHave("vpn-connection"), "my tunnel to the office drops at night")
    done = accept(store, sid, pack_dir, cases, force=True, embedder=HashingEmbedder())
    assert load_pack(pack_dir).runbooks["vpn-connection"].meta.examples[-1] == "my tunnel to the office drops at night"
    assert json.loads(cases.read_text().splitlines()[-1])["id"] == "l2-HO-1"
    assert done.suggestion.state == "accepted" and store.get(sid).state == "accepted"
    assert done.comparison["new_cases"] == ["l2-HO-1"]
    assert done.before["summary"]["cases"] == 3 and done.after["summary"]["cases"] == 4
    assert any(line.startswith("new case l2-HO-1 ") for line in done.changes())
    assert store.get(sid).why == "; ".join(done.changes())
    # The gate "cases <= 3" held before and not after: kept only because of force, and said.
    assert done.broken_gates == ["cases <= 3: was 3, now 4"]
    with pytest.raises(TeachingError, match="already accepted"):
        accept(store, sid, pack_dir, cases, embedder=HashingEmbedder())


def test_a_broken_gate_refuses_and_changes_nothing(store: Suggestions, pack_dir: Path, cases: Path) -> None:
    sid = suggest(store, pack_dir, BotCouldHave("vpn-connection"), "my tunnel to the office drops at night")
    before = snapshot(pack_dir, cases)
    with pytest.raises(GateBroken, match=r"cases <= 3: was 3, now 4"):
        accept(store, sid, pack_dir, cases, embedder=HashingEmbedder())
    assert snapshot(pack_dir, cases) == before and store.get(sid).state == "open"


def test_a_suggestion_that_would_break_lint_changes_nothing_and_says_why(
    store: Suggestions, pack_dir: Path, cases: Path
) -> None:
    # The customer's words are already an example of another runbook: the pack would not lint.
    sid = suggest(store, pack_dir, BotCouldHave("vpn-connection"), "the printer is offline")
    before = snapshot(pack_dir, cases)
    with pytest.raises(TeachingError, match="failing lint") as refused:
        accept(store, sid, pack_dir, cases, embedder=HashingEmbedder())
    assert "vpn-connection.md: examples.4: 'the printer is offline' is also an example of printer-problem" in str(
        refused.value
    )
    assert snapshot(pack_dir, cases) == before and store.get(sid).state == "open"


def test_a_new_runbook_is_written_as_a_file_that_lints(store: Suggestions, pack_dir: Path, cases: Path) -> None:
    lesson = NewRunbook("Monitor flickers when docked", ["Reseat the cable", "Update the dock's firmware"])
    sid = suggest(store, pack_dir, lesson, "my second screen flickers when the laptop is docked")
    cases.write_text(cases.read_text().replace('"<= 3"', '"<= 9"'))
    done = accept(store, sid, pack_dir, cases, category="it", embedder=HashingEmbedder())
    assert done.broken_gates == []
    runbook = load_pack(pack_dir).runbooks["monitor-flickers-when-docked"]
    assert runbook.meta.examples == ["my second screen flickers when the laptop is docked"]
    assert [s.text for s in runbook.steps] == ["Reseat the cable", "Update the dock's firmware"]
    assert runbook.meta.category == "it" and lint_pack(pack_dir)[1] == []


def test_a_pack_that_does_not_lint_now_is_named_as_the_problem(store: Suggestions, pack_dir: Path, cases: Path) -> None:
    sid = suggest(store, pack_dir, BotCouldHave("vpn-connection"), "my tunnel to the office drops at night")
    (pack_dir / "broken.md").write_text("no front matter")
    with pytest.raises(TeachingError, match="does not lint now") as refused:
        accept(store, sid, pack_dir, cases, embedder=HashingEmbedder())
    assert "broken.md: front matter: missing" in str(refused.value) and store.get(sid).state == "open"
