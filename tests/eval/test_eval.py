"""The eval harness: case files, scoring (the report contract), and a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import respx

from core.errors import CaseFileError
from core.settings import BUNDLED_RUNBOOKS, Settings
from eval.cases import Case, load_cases
from eval.harness import Evaluator, run_eval
from eval.scoring import Outcome, TurnOutcome, failures, summarize
from vectorstore.embeddings import MiniLMEmbedder

SUMMARY_KEYS = {
    "cases",
    "passed",
    "routing_accuracy",
    "handoff_recall",
    "handoff_precision",
    "containment_rate",
    "wrong_resolution_rate",
    "latency_ms_p50",
    "latency_ms_p95",
}


def case(cid: str, handoff: bool, runbook: object = "<unset>", **expect: object) -> Case:
    body: dict[str, object] = {"handoff": handoff, **expect}
    if runbook != "<unset>":
        body["runbook"] = runbook
    return Case.model_validate({"id": cid, "turns": ["x"], "expect": body})


def outcome(
    handoff: bool,
    runbook: str | None,
    ms: float = 10.0,
    *,
    reasons: list[str] | None = None,
    tools: list[str] | None = None,
    replies: list[str] | None = None,
) -> Outcome:
    calls = [{"tool": t, "args": {}} for t in tools or []]
    turn = TurnOutcome(replies or [], reasons or [], calls, "handed_off" if handoff else "confirm", ms)
    return Outcome(handoff=handoff, runbook=runbook, confidence=0.8, reasons=reasons or [], calls=calls, turns=[turn])


def test_summary_metrics_follow_their_definitions() -> None:
    cases = [
        case("a", False, "vpn"),  # routed right
        case("b", False, "vpn"),  # routed wrong, not handed off -> wrong resolution
        case("c", False, "printer"),  # handed off though it should not -> routing miss
        case("d", True, None),  # handed off as expected
        case("e", True, None),  # not handed off though it should -> wrong resolution
        case("f", False),  # no runbook expectation, contained
    ]
    outcomes = [
        outcome(False, "vpn", 10),
        outcome(False, "wifi", 20),
        outcome(True, None, 30),
        outcome(True, None, 40),
        outcome(False, "vpn", 50),
        outcome(False, "x", 60),
    ]
    s = summarize(cases, outcomes)
    assert SUMMARY_KEYS <= set(s)
    assert s["cases"] == 6
    assert s["passed"] == 3  # a, d, f
    assert s["routing_accuracy"] == round(1 / 3, 4)  # a of a, b, c
    assert s["handoff_recall"] == 0.5  # d of d, e
    assert s["handoff_precision"] == 0.5  # d of c, d
    assert s["containment_rate"] == round(4 / 6, 4)
    assert s["wrong_resolution_rate"] == 0.5  # b, e of a, b, e, f
    assert s["latency_ms_p50"] == 35.0
    assert s["latency_ms_p95"] == pytest.approx(57.5)


def test_empty_denominators_are_null_not_zero() -> None:
    s = summarize([case("a", False, "vpn")], [outcome(False, "vpn")])
    assert s["handoff_recall"] is None and s["handoff_precision"] is None
    assert s["routing_accuracy"] == 1.0


def test_failures_name_each_unmet_expectation() -> None:
    c = case(
        "a",
        True,
        "billing",
        reason="escalation_keyword",
        tools_called=["lookup_account"],
        tools_not_called=["reset_password"],
        reply_contains=["refund"],
    )
    found = failures(c, outcome(False, "vpn", tools=["reset_password"], replies=["hello"]))
    assert found == [
        "expected a handoff, got none",
        "expected runbook 'billing', got 'vpn'",
        "expected reason 'escalation_keyword', got []",
        "expected tool 'lookup_account' to be called",
        "tool 'reset_password' must not be called",
        "no reply contains 'refund'",
    ]


def test_null_runbook_means_nothing_fits() -> None:
    c = case("a", True, None)
    assert failures(c, outcome(True, None)) == []
    assert failures(c, outcome(True, "vpn")) == ["expected runbook None, got 'vpn'"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "turns": ["x"], "expect": {"handoff": false}}\n{not json}\n', "line 2: not valid JSON"),
        ('{"id": "a", "turns": [], "expect": {"handoff": false}}\n', "line 1: turns: List should have at least 1"),
        ('{"id": "a", "turns": ["x"], "expect": {}}\n', "line 1: expect.handoff: Field required"),
        ('{"id": "a", "turns": ["x"], "expect": {"handoff": false, "colour": 1}}\n', "expect.colour: Extra inputs"),
        ('{"id": "a", "turns": ["x"], "expect": {"handoff": false}}\n' * 2, "line 2: id: 'a' is used twice"),
        ("\n", "holds no cases"),
    ],
)
def test_bad_case_files_say_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(content)
    with pytest.raises(CaseFileError, match=message):
        load_cases(path)


def test_yaml_case_file(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text("cases:\n  - id: a\n    turns: [hi]\n    expect: {handoff: false, runbook: null}\n")
    assert load_cases(path)[0].expect.runbook is None


def test_bundled_cases_are_not_runbook_examples() -> None:
    from core.pack import load_pack

    examples = {
        " ".join(e.lower().split()) for rb in load_pack(BUNDLED_RUNBOOKS).runbooks.values() for e in rb.meta.examples
    }
    cases = load_cases(Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl")
    assert len(cases) >= 150
    assert sum(1 for c in cases if len(c.turns) > 1) >= 30
    repeated = [c.id for c in cases for t in c.turns if " ".join(t.lower().split()) in examples]
    assert repeated == []


def test_run_eval_plays_multi_turn_cases_through_the_graph(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    cases_file = tmp_path / "cases.jsonl"
    rows = [
        {
            "id": "pw",
            "turns": ["can't get in, forgot the password again", "jane.doe@example.com", "{otp}", "yes"],
            "expect": {"handoff": False, "runbook": "password-reset", "tools_called": ["reset_password"]},
        },
        {
            "id": "pizza",
            "turns": ["order me a large pepperoni pizza to the office"],
            "expect": {"handoff": True, "runbook": None, "reason": "no_runbook_fits"},
        },
        {"id": "stop", "turns": ["get me a human", "hello?"], "expect": {"handoff": True}},
    ]
    cases_file.write_text("\n".join(json.dumps(r) for r in rows))
    report = run_eval(BUNDLED_RUNBOOKS, load_cases(cases_file), embedder=embedder)
    assert SUMMARY_KEYS <= set(report["summary"])
    by_id = {row["id"]: row for row in report["cases"]}
    assert by_id["pw"]["passed"], by_id["pw"]["failures"]
    assert by_id["pw"]["tools_called"] == ["send_code", "verify_identity", "reset_password"]
    assert by_id["pizza"]["passed"] and by_id["pizza"]["runbook"] is None
    assert len(by_id["stop"]["turn_latency_ms"]) == 1  # stopped at the handoff
    for row in report["cases"]:
        assert {"id", "passed", "handoff", "runbook", "confidence", "latency_ms"} <= set(row)
    assert report["summary"]["passed"] == 3


@respx.mock(assert_all_mocked=True, assert_all_called=False)
def test_eval_never_reaches_the_configured_real_backends(
    embedder: MiniLMEmbedder, respx_mock: respx.MockRouter
) -> None:
    # A team runs eval with production settings in its environment: the password reset in the case must
    # still play against the embedded directory, and nothing may reach the identity provider or helpdesk.
    idp = respx_mock.route(host="idp.example.test").respond(200, json={})
    helpdesk = respx_mock.route(host="helpdesk.example.test").respond(200, json={})
    settings = Settings(
        directory_url="https://idp.example.test/api",
        directory_token="t",
        status_url="https://status.example.test",
        handoff_webhook_url="https://helpdesk.example.test/hook",
        smtp_host="smtp.example.test",
    )
    case = Case.model_validate(
        {
            "id": "pw",
            "turns": ["forgot my password", "jane.doe@example.com", "{otp}", "yes"],
            "expect": {"handoff": False, "runbook": "password-reset", "tools_called": ["reset_password"]},
        }
    )
    report = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder, settings=settings).run([case])
    assert report["cases"][0]["passed"], report["cases"][0]["failures"]
    assert not idp.called and not helpdesk.called
