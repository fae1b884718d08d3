"""The `tierone` command, through typer's runner with settings from the environment."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.runtime import Runtime
from cli import app
from core.settings import BUNDLED_RUNBOOKS

runner = CliRunner()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_lint_bundled_pack() -> None:
    result = runner.invoke(app, ["runbooks", "lint", str(BUNDLED_RUNBOOKS)])
    assert result.exit_code == 0, result.output
    assert "ok: 25 runbooks" in result.output


def test_lint_broken_pack_exits_1_naming_file_and_field(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "a.md").write_text("---\nid: a\ntitle: A thing\ncategory: x\ntier: 1\nexamples: [q]\ntools: [nuke]\n---\n")
    result = runner.invoke(app, ["runbooks", "lint", str(pack)])
    assert result.exit_code == 1
    assert "a.md: tools: unknown tool 'nuke'" in " ".join(result.output.split())


def test_handoffs_list_and_show(make_runtime: Callable[..., Runtime], data_dir: Path) -> None:
    runtime = make_runtime(data_dir)
    cid = runtime.resolver.start()
    packet_id = runtime.resolver.send(cid, "someone stole my work laptop from my car").handoff["packet_id"]  # type: ignore[index]
    listed = runner.invoke(app, ["handoffs", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0
    assert packet_id in listed.output and "lost-stolen-device" in listed.output
    shown = runner.invoke(app, ["handoffs", "show", packet_id])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["conversation_id"] == cid


def test_handoffs_show_unknown_id() -> None:
    result = runner.invoke(app, ["handoffs", "show", "HO-NOPE"])
    assert result.exit_code == 2
    assert "no handoff packet has the id 'HO-NOPE'" in result.output


def test_schema_is_json_schema() -> None:
    result = runner.invoke(app, ["handoffs", "schema"])
    assert json.loads(result.output)["title"] == "HandoffPacket"


@pytest.mark.model  # the eval it runs builds an index with the embedding model
def test_eval_writes_the_report(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {
                "id": "a",
                "turns": ["the wifi in the office drops every few minutes"],
                "expect": {"handoff": False, "runbook": "wifi-connection"},
            }
        )
        + "\n"
    )
    report = tmp_path / "out" / "report.json"
    result = runner.invoke(
        app, ["eval", "--runbooks", str(BUNDLED_RUNBOOKS), "--cases", str(cases), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["summary"]
    assert summary["cases"] == 1 and summary["passed"] == 1 and summary["routing_accuracy"] == 1.0


def test_eval_bad_case_file_exits_2(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text("{oops\n")
    result = runner.invoke(app, ["eval", "--cases", str(cases)])
    assert result.exit_code == 2
    assert "line 1: not valid JSON" in " ".join(result.output.split())
