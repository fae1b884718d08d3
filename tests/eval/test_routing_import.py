"""`tierone eval import` takes any [text, intent] list: awkward intent names, bad files named by item and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from core.errors import CaseFileError
from core.pack import lint_pack
from eval.importer import import_intents

AWKWARD = [
    ["no thanks, that's all", "no"],
    ["nope", "no"],
    ["where is my w2 form", "w2"],
    ["I need last year's W2", "w2"],
    ["hello there", "日本"],
    ["good morning", "日本"],
    ["it broke", "a b"],
    ["it broke again", "a-b"],
    ["shared text", "x"],
    ["shared text", "yy"],
    ["   ", "blank"],
    ["only text", ""],
]


def test_awkward_intents_make_a_pack_the_lint_accepts(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(AWKWARD, ensure_ascii=False))
    report = import_intents(pairs, tmp_path / "out", k=10, holdout=0)
    pack, problems = lint_pack(report.pack_dir)
    assert problems == [] and pack is not None
    titles = {rb.meta.title for rb in pack.runbooks.values()}
    assert all(len(t) >= 3 for t in titles)
    assert "Intent 'No'" in titles or any(t.startswith("Intent") for t in titles)
    ids = set(pack.runbooks)
    assert {"no", "w2", "a-b", "a-b-2"} <= ids
    assert any(rid.startswith("intent-") for rid in ids)  # 日本 and "" have no ASCII to name them by
    # "shared text" is an example of one runbook only; the other intent's case expects a handoff.
    owners = [rid for rid, rb in pack.runbooks.items() if "shared text" in rb.meta.examples]
    assert len(owners) == 1
    cases = [json.loads(line) for line in report.cases_file.read_text().splitlines()]
    assert all(c["turns"][0].strip() for c in cases)
    assert len({c["id"] for c in cases}) == len(cases)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("{}", "expected a JSON list"),
        ('[["text", "intent"], ["only one"]]', "item 1: expected a [text, intent] pair"),
        ('[["text", 3]]', "item 0: intent: expected a string"),
        ('[[null, "intent"]]', "item 0: text: expected a string"),
        ("[[", "not valid JSON"),
    ],
)
def test_a_bad_file_is_named_with_its_item_and_field(tmp_path: Path, content: str, where: str) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text(content)
    with pytest.raises(CaseFileError) as raised:
        import_intents(pairs, tmp_path / "out", holdout=0)
    assert str(pairs) in str(raised.value) and where in str(raised.value)


@pytest.mark.model  # runs the command, which embeds the pack with the real model
def test_import_command_calibrates_an_awkward_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(AWKWARD, ensure_ascii=False))
    result = CliRunner().invoke(app, ["eval", "import", str(pairs), "--out", str(tmp_path / "out"), "--holdout", "1"])
    assert result.exit_code == 0, result.output
    assert "calibrated: min_score" in result.output
    policy = yaml.safe_load((tmp_path / "out" / "runbooks" / "policy.yaml").read_text())
    routing = policy["routing"]
    assert routing["clarify_floor"] <= routing["min_score"]


def test_import_command_names_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "import", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "none.json" in result.output
