"""Runbook packs: the bundled pack is valid, and every kind of broken pack names its problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import PackError
from core.pack import lint_pack, load_pack
from core.settings import BUNDLED_RUNBOOKS

GOOD = """---
id: {id}
title: Fix the thing
category: account-access
tier: 1
examples: [{examples}]
{extra}---
What it covers.

## Steps
1. Do this first.
2. Then this.

## Check
Does it work now?
"""


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def good(rid: str = "fix-thing", examples: str = "a, b, c", extra: str = "") -> str:
    return GOOD.format(id=rid, examples=examples, extra=extra)


def problems(folder: Path) -> list[str]:
    pack, found = lint_pack(folder)
    assert pack is None
    return [str(p) for p in found]


def test_bundled_pack_is_valid_and_complete() -> None:
    pack = load_pack(BUNDLED_RUNBOOKS)
    assert len(pack.runbooks) >= 25
    for runbook in pack.runbooks.values():
        assert len(runbook.meta.examples) >= 8, runbook.id
        if pack.effective_tier(runbook) == 1:
            assert runbook.steps and runbook.check, runbook.id
    tier2 = {rid for rid, rb in pack.runbooks.items() if pack.effective_tier(rb) == 2}
    assert {
        "phishing-report",
        "lost-stolen-device",
        "new-hire-access",
        "file-share-permission",
        "hardware-damage",
    } <= tier2


def test_step_with_tool_is_parsed() -> None:
    runbook = load_pack(BUNDLED_RUNBOOKS).runbooks["password-reset"]
    assert runbook.steps[0].tool == "reset_password"
    assert runbook.steps[0].text.startswith("I've sent a password-reset link")
    assert runbook.steps[1].tool is None


def test_good_pack_loads(tmp_path: Path) -> None:
    write(tmp_path, "a.md", good())
    pack = load_pack(tmp_path)
    assert list(pack.runbooks) == ["fix-thing"]
    assert [s.text for s in pack.runbooks["fix-thing"].steps] == ["Do this first.", "Then this."]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.md": "no front matter here"}, "a.md: front matter: missing"),
        ({"a.md": "---\nid: [unclosed\n---\nbody"}, "a.md: front matter: is not valid YAML at line"),
        ({"a.md": '---\nid: x\nexamples:\n  - "quoted" then more\n---\n'}, "quote the whole line"),
        ({"a.md": "---\n- a list\n---\n"}, "a.md: front matter: must be a YAML mapping"),
        ({"a.md": good(rid="Fix_Thing")}, "a.md: id: 'Fix_Thing' is not kebab-case"),
        ({"a.md": good(), "b.md": good(examples="d, e")}, "b.md: id: 'fix-thing' is already used by a.md"),
        ({"a.md": good(extra="tools: [format_disk]\n")}, "a.md: tools: unknown tool 'format_disk'"),
        ({"a.md": good(extra="tools: [reset_password]\n")}, "a.md: verify: tool 'reset_password' acts on an account"),
        ({"a.md": good(extra="colour: blue\n")}, "a.md: colour: Extra inputs are not permitted"),
        ({"a.md": good().replace("tier: 1", "tier: 3")}, "a.md: tier: Input should be 1 or 2"),
        ({"a.md": good().replace("title: Fix the thing\n", "")}, "a.md: title: Field required"),
        ({"a.md": good(examples="")}, "a.md: examples: List should have at least 1 item"),
        (
            {"a.md": good(), "b.md": good(rid="other", examples="A,  x")},
            "b.md: examples.0: 'A' is also an example of fix-thing",
        ),
        (
            {"a.md": good().replace("## Check\nDoes it work now?\n", "")},
            "a.md: body: a tier-1 runbook needs a `## Check`",
        ),
        (
            {"a.md": good().replace("1. Do this first.", "1. [tool: reset_password] Done.")},
            "a.md: steps.1: runs 'reset_password', which `tools` does not list",
        ),
        ({"a.md": good(), "policy.yaml": "routing: {min_score: 2}\n"}, "policy.yaml: routing.min_score"),
        (
            {"a.md": good(), "policy.yaml": "categories: {network: {tier: 1}}\n"},
            "a.md: category: 'account-access' is not a category in policy.yaml",
        ),
        (
            {"a.md": good(), "policy.yaml": "sla: {P1: {first_response_minutes: 5, resolve_minutes: 60}}\n"},
            "policy.yaml: sla.P2: is missing",
        ),
        (
            {"a.md": good(), "policy.yaml": "incidents: {routine: [fix-thing, account-access, licences]}\n"},
            "policy.yaml: incidents.routine.2: 'licences' is neither a category nor a runbook id",
        ),
        ({"a.md": b"---\nid: \xff\n---\n"}, "a.md: file: is not UTF-8 text"),
        ({"a.md": good(examples="a, TODO more examples")}, "a.md: examples.1: still says TODO"),
        ({"a.md": good().replace("2. Then this.", "2. TODO: then what?")}, "a.md: body: still says TODO"),
    ],
)
def test_lint_names_file_and_field(tmp_path: Path, files: dict[str, str | bytes], expected: str) -> None:
    for name, text in files.items():
        if isinstance(text, bytes):
            (tmp_path / name).write_bytes(text)
        else:
            write(tmp_path, name, text)
    found = problems(tmp_path)
    assert any(expected in p for p in found), found


def test_lint_reports_every_problem_at_once(tmp_path: Path) -> None:
    write(tmp_path, "a.md", good(rid="Bad_Id"))
    write(tmp_path, "b.md", "nothing")
    assert len(problems(tmp_path)) == 2


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    assert "does not exist" in problems(tmp_path / "nope")[0]
    assert "holds no runbook" in problems(tmp_path)[0]


def test_load_pack_raises_with_every_problem(tmp_path: Path) -> None:
    write(tmp_path, "a.md", good(rid="Bad_Id"))
    with pytest.raises(PackError, match="a.md: id: 'Bad_Id' is not kebab-case") as info:
        load_pack(tmp_path)
    assert len(info.value.problems) == 1
