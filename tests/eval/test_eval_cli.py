"""The runbook author's commands: gates, baselines, --only, --repeat, per-turn checks, try, init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from eval.cases import Case, load_case_file, parse_gate
from eval.drafts import draft_cases
from eval.harness import Evaluator
from eval.scoring import check_gates, compare
from vectorstore.embeddings import MiniLMEmbedder

# Marked model: the commands it runs build an index with the embedding model.
pytestmark = pytest.mark.model

runner = CliRunner()
BUNDLED_CASES = Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl"


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))


def write_cases(path: Path, rows: list[dict[str, object]], gates: dict[str, str] | None = None) -> Path:
    lines = ([json.dumps({"gates": gates})] if gates else []) + [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


WIFI = {
    "id": "wifi",
    "turns": ["the office wifi drops every few minutes"],
    "expect": {"handoff": False, "runbook": "wifi-connection"},
}
WRONG = {
    "id": "wrong",
    "turns": ["the office wifi drops every few minutes"],
    "expect": {"handoff": False, "runbook": "printer-problem"},
}


def test_gates_parse_and_check() -> None:
    assert str(parse_gate("wrong_resolution_rate<=0.02")) == "wrong_resolution_rate <= 0.02"
    summary = {"routing_accuracy": 0.85, "wrong_resolution_rate": 0.01, "handoff_recall": None}
    failed = check_gates(
        summary,
        [
            parse_gate("routing_accuracy>=0.9"),
            parse_gate("wrong_resolution_rate<=0.02"),
            parse_gate("handoff_recall>=0.5"),
            parse_gate("speed>=1"),
        ],
    )
    assert failed == [
        "routing_accuracy >= 0.9: got 0.85",
        "handoff_recall >= 0.5: got None",
        "speed >= 1: no metric named 'speed' in the summary",
    ]
    with pytest.raises(Exception, match="not of the form"):
        parse_gate("accuracy is high")


def test_case_file_gates_are_read(tmp_path: Path) -> None:
    path = write_cases(tmp_path / "c.jsonl", [WIFI], gates={"routing_accuracy": ">= 0.9"})
    assert [str(g) for g in load_case_file(path).gates] == ["routing_accuracy >= 0.9"]


def test_failing_gate_exits_1(tmp_path: Path) -> None:
    path = write_cases(tmp_path / "c.jsonl", [WIFI, WRONG])
    result = runner.invoke(app, ["eval", "--cases", str(path), "--gate", "routing_accuracy>=0.9"])
    assert result.exit_code == 1
    assert "gate failed: routing_accuracy >= 0.9: got 0.5" in flat(result.output)
    ok = runner.invoke(app, ["eval", "--cases", str(path), "--gate", "routing_accuracy>=0.5"])
    assert ok.exit_code == 0 and "all hold" in ok.output


def test_baseline_shows_newly_failing_and_deltas(tmp_path: Path) -> None:
    path = write_cases(tmp_path / "c.jsonl", [WIFI, WRONG])
    before = tmp_path / "before.json"
    runner.invoke(app, ["eval", "--cases", str(path), "--report", str(before)])
    old = json.loads(before.read_text())
    old["cases"][0]["passed"] = False  # wifi used to fail ...
    old["cases"][1]["passed"] = True  # ... and wrong used to pass
    old["summary"]["routing_accuracy"] = 0.25
    before.write_text(json.dumps(old))
    after = tmp_path / "after.json"
    result = runner.invoke(app, ["eval", "--cases", str(path), "--baseline", str(before), "--report", str(after)])
    assert result.exit_code == 0
    comparison = json.loads(after.read_text())["comparison"]
    assert comparison["newly_failing"] == ["wrong"] and comparison["newly_passing"] == ["wifi"]
    assert comparison["metrics"]["routing_accuracy"] == {"before": 0.25, "after": 0.5, "delta": 0.25}
    assert "NEW wrong" in flat(result.output)


def test_compare_lists_new_and_removed_cases() -> None:
    report = {"summary": {"passed": 1}, "cases": [{"id": "a", "passed": True}, {"id": "c", "passed": True}]}
    old = {"summary": {"passed": 2}, "cases": [{"id": "a", "passed": True}, {"id": "b", "passed": True}]}
    result = compare(report, old)
    assert result["new_cases"] == ["c"] and result["removed_cases"] == ["b"]
    assert result["metrics"]["passed"]["delta"] == -1


def test_only_plays_one_runbooks_cases(tmp_path: Path) -> None:
    path = write_cases(tmp_path / "c.jsonl", [WIFI, WRONG])
    report = tmp_path / "r.json"
    result = runner.invoke(app, ["eval", "--cases", str(path), "--only", "wifi-connection", "--report", str(report)])
    assert result.exit_code == 0
    assert [c["id"] for c in json.loads(report.read_text())["cases"]] == ["wifi"]
    none = runner.invoke(app, ["eval", "--cases", str(path), "--only", "vpn-connection"])
    assert none.exit_code == 2 and "no case" in none.output


def test_case_repeating_an_example_is_warned_about(tmp_path: Path) -> None:
    example = load_pack(BUNDLED_RUNBOOKS).runbooks["printer-problem"].meta.examples[0]
    path = write_cases(tmp_path / "c.jsonl", [{"id": "copy", "turns": [example], "expect": {"handoff": False}}])
    result = runner.invoke(app, ["eval", "--cases", str(path)])
    assert "case copy" in flat(result.output) and "is an example of printer-problem" in flat(result.output)


def test_per_turn_expectations_and_packet_fields(embedder: MiniLMEmbedder) -> None:
    case = Case.model_validate(
        {
            "id": "unlock",
            "turns": [
                {
                    "say": "locked out of my account",
                    "expect": {
                        "stage": "identity",
                        "reasons": ["identity_required"],
                        "tools_not_called": ["unlock_account"],
                    },
                },
                {
                    "say": "bob.smith@example.com",
                    "expect": {
                        # Tool arguments hold the address masked; the vault keeps it.
                        "tools_called": [{"tool": "send_code", "args": {"email": "b***@example.com"}}],
                        "reply_contains": ["6-digit code"],
                    },
                },
                {
                    "say": "{otp}",
                    "expect": {
                        "tools_called": [{"tool": "unlock_account", "args": {"account_id": "acc-1002"}}],
                        "reply_not_contains": ["didn't match"],
                    },
                },
                {"say": "no", "expect": {"stage": "confirm"}},
                {"say": "I want a human", "expect": {"handoff": True}},
            ],
            "expect": {
                "handoff": True,
                "runbook": "account-lockout",
                "reason": "customer_requested_human",
                "packet": {
                    "customer.verified": True,
                    "customer.account_id": "acc-1002",
                    "hypothesis": "*",
                    "sla.priority": "P3",
                },
            },
        }
    )
    bad = Case.model_validate(
        {
            "id": "bad",
            "turns": [
                {"say": "locked out of my account", "expect": {"stage": "confirm", "tools_called": ["unlock_account"]}},
                "human please",
                {"say": "never reached", "expect": {"stage": "confirm"}},
            ],
            "expect": {"handoff": True, "packet": {"customer.verified": True, "nope.missing": "*"}},
        }
    )
    report = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder).run([case, bad])
    rows = {r["id"]: r for r in report["cases"]}
    assert rows["unlock"]["passed"], rows["unlock"]["failures"]
    assert rows["bad"]["failures"] == [
        "packet 'customer.verified' is False, expected True",
        "the handoff packet has no 'nope.missing'",
        "turn 1: expected tool 'unlock_account' to be called",
        "turn 1: expected stage 'confirm', got 'identity'",
        "turn 3: not reached (the conversation was handed off at turn 2)",
    ]


def test_repeat_reports_pass_hat_k(embedder: MiniLMEmbedder) -> None:
    report = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder).run(
        [Case.model_validate(WIFI), Case.model_validate(WRONG)], repeat=3
    )
    assert report["summary"]["repeat"] == 3 and report["summary"]["pass_hat_k"] == 0.5
    assert [r["runs_passed"] for r in report["cases"]] == [3, 0]


def test_drafts_never_repeat_an_example() -> None:
    pack = load_pack(BUNDLED_RUNBOOKS)
    examples = {" ".join(e.lower().split()) for rb in pack.runbooks.values() for e in rb.meta.examples}
    for runbook in pack.runbooks.values():
        drafts = draft_cases(pack, runbook)
        assert drafts, runbook.id
        for draft in drafts:
            Case.model_validate(draft)
            assert all(" ".join(t.lower().split()) not in examples for t in draft["turns"]), draft
    flows = {d["id"]: d for d in draft_cases(pack, pack.runbooks["password-reset"])}
    assert flows["password-reset-draft-flow-yes"]["turns"][1:3] == ["jane.doe@example.com", "{otp}"]
    assert flows["password-reset-draft-flow-yes"]["expect"]["tools_called"] == ["reset_password"]


def test_init_command_appends_drafts(tmp_path: Path) -> None:
    out = tmp_path / "drafts.jsonl"
    result = runner.invoke(app, ["eval", "init", "phishing-report", "--out", str(out)])
    assert result.exit_code == 0
    drafts = [json.loads(line) for line in out.read_text().splitlines()]
    assert drafts and all(
        d["expect"] == {"handoff": True, "runbook": "phishing-report", "reason": "tier2_runbook"} for d in drafts
    )
    assert runner.invoke(app, ["eval", "init", "no-such-runbook"]).exit_code == 2


def test_try_shows_candidates_and_the_decision() -> None:
    result = runner.invoke(app, ["try", "someone stole my laptop from the car"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "lost-stolen-device" in result.output
    assert "decision: handoff (tier2_runbook) on lost-stolen-device" in flat(result.output)


@pytest.mark.slow
def test_bundled_suite_meets_its_gates(embedder: MiniLMEmbedder) -> None:
    case_file = load_case_file(BUNDLED_CASES)
    assert case_file.gates, "the bundled case file sets its gates"
    report = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder).run(case_file.cases)
    assert check_gates(report["summary"], case_file.gates) == []


def test_batched_embeddings_change_no_outcome() -> None:
    cases = load_case_file(BUNDLED_CASES).cases[:25]
    evaluator = Evaluator(BUNDLED_RUNBOOKS, embedder=MiniLMEmbedder(cache_size=0))
    plain = evaluator.run(cases)
    batched = Evaluator(BUNDLED_RUNBOOKS, embedder=MiniLMEmbedder()).run(cases, batch_embeddings=True)
    keys = ("id", "passed", "handoff", "runbook", "confidence")
    assert [{k: r[k] for k in keys} for r in plain["cases"]] == [{k: r[k] for k in keys} for r in batched["cases"]]
    assert plain["latency_includes_embedding"] and not batched["latency_includes_embedding"]
