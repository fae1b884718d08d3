"""Runbooks that branch: front-matter steps, outcomes, conditions and slots, and what lint refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.pack import lint_pack

HEAD = """---
id: no-signal
title: No mobile signal
category: network
tier: 1
examples: [no bars, no signal on my phone, phone says no service]
"""

BODY = """---
What it covers.

## Check
Is it working now?

## For L2
Look at the cell.
"""

GOOD_STEPS = """slots:
  abroad: {type: yesno, ask: "Are you abroad right now?"}
  gigabytes: {type: int, ask: "How many GB would you like?", min: 1, max: 2}
steps:
  - id: airplane
    say: Swipe down and make sure airplane mode is off.
    check:
      question: Are the bars back?
      outcomes:
        - {name: fixed, when: [the bars are back, it works now], then: resolved}
        - {name: no-change, when: [still no bars], then: next}
        - {name: travelling, when: [I am abroad], then: roaming, set: {abroad: yes}}
        - {name: sim-locked, when: [it asks for a PUK], then: handoff, reason: sim_locked}
  - id: restart
    say: Restart the phone.
  - id: roaming
    if: {slot: abroad, equals: yes}
    say: Turn on data roaming.
  - id: top-up
    needs: [gigabytes]
    say: I can add {gigabytes} GB.
"""


def lint(tmp_path: Path, front: str) -> list[str]:
    (tmp_path / "rb.md").write_text(HEAD + front + BODY, encoding="utf-8")
    pack, found = lint_pack(tmp_path)
    assert (pack is None) == bool(found)
    return [f"{p.file}: {p.field}: {p.message}" for p in found]


def test_a_branching_runbook_loads_with_its_graph(tmp_path: Path) -> None:
    assert lint(tmp_path, GOOD_STEPS) == []
    pack, _ = lint_pack(tmp_path)
    assert pack is not None
    rb = pack.runbooks["no-signal"]
    assert [s.id for s in rb.steps] == ["airplane", "restart", "roaming", "top-up"]
    assert rb.question(0) == "Are the bars back?"
    assert rb.question(1) == "Is it working now?"
    assert rb.steps[0].outcomes[3].reason == "sim_locked"
    assert rb.steps[2].condition is not None and rb.steps[2].condition.holds({"abroad": True}, {})
    assert not rb.steps[2].condition.holds({}, {})
    assert rb.steps[3].needs == ("gigabytes",)
    assert rb.slots["gigabytes"].max == 2
    assert rb.step_index("roaming") == 2


def test_linear_runbooks_get_step_ids(tmp_path: Path) -> None:
    text = HEAD + "---\nSummary.\n\n## Steps\n1. One.\n2. Two.\n\n## Check\nOk?\n"
    (tmp_path / "rb.md").write_text(text, encoding="utf-8")
    pack, found = lint_pack(tmp_path)
    assert found == [] and pack is not None
    assert [s.id for s in pack.runbooks["no-signal"].steps] == ["step-1", "step-2"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("then: roaming", "then: roamin", "rb.md: steps.0.check.outcomes.2.then: 'roamin' is no step id"),
        ("type: int", "type: number", "rb.md: slots.gigabytes.type:"),
        ("min: 1, max: 2", "min: 3, max: 2", "rb.md: slots.gigabytes.min: 3 is above max 2"),
        ("needs: [gigabytes]", "needs: [gb]", "rb.md: steps.3.needs: slot 'gb' is not declared"),
        ("{slot: abroad, equals: yes}", "{slot: away, equals: yes}", "rb.md: steps.2.if.slot: slot 'away'"),
        ("{slot: abroad, equals: yes}", "{slot: abroad}", "rb.md: steps.2.if: give exactly one of"),
        ("set: {abroad: yes}", "set: {abroad: 3}", "rb.md: steps.0.check.outcomes.2.set.abroad: 3 is not yes or no"),
        ("then: resolved}", "then: resolved, reason: x}", "rb.md: steps.0.check.outcomes.0.reason: a reason goes"),
        ("id: restart", "id: airplane", "rb.md: steps.1.id: 'airplane' is used by another step"),
        ("when: [still no bars]", "when: []", "rb.md: steps.0.check.outcomes.1.when:"),
        ("    say: Restart", "    tool: reset_mfa\n    say: Restart", "rb.md: steps.1.tool: runs 'reset_mfa'"),
    ],
)
def test_lint_names_file_step_and_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD_STEPS
    found = lint(tmp_path, GOOD_STEPS.replace(old, new))
    assert any(line.startswith(expected) for line in found), found


def test_an_unreachable_step_is_named(tmp_path: Path) -> None:
    front = GOOD_STEPS.replace("then: next}", "then: top-up}").replace(
        "  - id: restart\n    say: Restart the phone.\n",
        "  - id: restart\n    say: Restart the phone.\n    check:\n      outcomes:\n"
        "        - {name: ok, when: [fine], then: resolved}\n",
    )
    # Nothing leads to restart any more (airplane goes to roaming, top-up or out).
    found = lint(tmp_path, front)
    assert "rb.md: steps.1: step 'restart' is unreachable: no outcome leads to it" in found


def test_a_loop_with_no_exit_is_named(tmp_path: Path) -> None:
    front = """steps:
  - id: one
    say: Try one.
    check:
      outcomes:
        - {name: again, when: [not yet], then: two}
  - id: two
    say: Try two.
    check:
      outcomes:
        - {name: again, when: [not yet], then: one}
"""
    found = lint(tmp_path, front)
    assert "rb.md: steps.0: step 'one' is in a loop with no exit (no resolved, handoff or end)" in found
    assert "rb.md: steps.1: step 'two' is in a loop with no exit (no resolved, handoff or end)" in found


def test_steps_declared_twice_are_refused(tmp_path: Path) -> None:
    text = HEAD + GOOD_STEPS + "---\nS.\n\n## Steps\n1. One.\n\n## Check\nOk?\n"
    (tmp_path / "rb.md").write_text(text, encoding="utf-8")
    pack, found = lint_pack(tmp_path)
    assert pack is None
    assert [p.message for p in found] == ["declare the steps once: front-matter `steps` or `## Steps`"]
