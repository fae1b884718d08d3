"""Escalation keywords with context: a phrase, what must come with it, and what it is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli import app
from core.pack import Keyword, Policy, load_pack, pack_warnings
from core.settings import BUNDLED_RUNBOOKS

PRESS = Keyword(phrase="press", only_with=["the press", "journalist", "reporter"])
SUE = Keyword(phrase="sue", unless=["sue from"])


@pytest.mark.parametrize(
    ("keyword", "text", "escalates"),
    [
        (Keyword(phrase="lawyer"), "my lawyer will call you", True),
        (Keyword(phrase="lawyer"), "my lawyers will call you", False),  # whole words only, as before
        (Keyword(phrase="data breach"), "I think this is a DATA BREACH", True),
        (PRESS, "when I press the power button nothing happens", False),
        (PRESS, "I'm going to the press with this", True),
        (PRESS, "a journalist asked me to press you for a comment", True),
        (SUE, "sue from accounting can't print", False),
        (SUE, "I will sue", True),
        # One excepted use does not hide a second, real one.
        (SUE, "sue from accounting says she will sue", True),
        (Keyword(phrase="press", unless=["press the"]), "press the button, or I go to the press", True),
    ],
)
def test_a_keyword_escalates_only_in_its_sense(keyword: Keyword, text: str, escalates: bool) -> None:
    assert keyword.matches(text) is escalates


def test_policy_takes_plain_strings_and_keywords_with_context() -> None:
    policy = Policy.model_validate(
        {"escalation_keywords": ["lawyer", {"phrase": "press", "only_with": ["the press"], "unless": ["press kit"]}]}
    )
    assert policy.escalation_keywords == [
        Keyword(phrase="lawyer"),
        Keyword(phrase="press", only_with=["the press"], unless=["press kit"]),
    ]
    assert policy.escalates("talk to my lawyer") and policy.escalates("I'll go to the press")
    assert not policy.escalates("press the power button")


def test_a_keyword_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="when"):
        Policy.model_validate({"escalation_keywords": [{"phrase": "press", "when": ["the press"]}]})


def test_bare_words_are_single_words_without_context() -> None:
    assert Keyword(phrase="press").bare_word
    assert not Keyword(phrase="legal action").bare_word
    assert not PRESS.bare_word and not SUE.bare_word


def _pack_with_keywords(tmp_path: Path, keywords: str) -> Path:
    pack = tmp_path / "pack"
    shutil.copytree(BUNDLED_RUNBOOKS, pack)
    policy = pack / "policy.yaml"
    text = policy.read_text(encoding="utf-8")
    start = text.index("escalation_keywords:")
    end = text.index("\n\n", start)
    policy.write_text(text[:start] + "escalation_keywords:\n" + keywords + text[end:], encoding="utf-8")
    return pack


def test_lint_warns_about_common_words_and_keywords_the_examples_contain(tmp_path: Path) -> None:
    pack = load_pack(_pack_with_keywords(tmp_path, "  - press\n  - ombudsman\n  - printer\n  - data breach\n"))
    warnings = {w.field: w.message for w in pack_warnings(pack)}
    assert set(warnings) == {"escalation_keywords.0", "escalation_keywords.2"}
    assert "'press' is a common word with no context" in warnings["escalation_keywords.0"]
    assert (
        "'printer' matches" in warnings["escalation_keywords.2"]
        and "printer-problem" in warnings["escalation_keywords.2"]
    )


def test_the_bundled_pack_lints_without_warnings_and_the_cli_prints_them(tmp_path: Path) -> None:
    assert pack_warnings(load_pack(BUNDLED_RUNBOOKS)) == []
    result = CliRunner().invoke(app, ["runbooks", "lint", str(_pack_with_keywords(tmp_path, "  - press\n"))])
    assert result.exit_code == 0, result.output
    assert "warning: policy.yaml" in result.output and "escalation_keywords.0" in result.output
