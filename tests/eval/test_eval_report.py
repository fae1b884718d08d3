"""The eval's HTML report and its min_score sweep, on a real (small) run of the bundled pack."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from core.settings import BUNDLED_RUNBOOKS
from eval.cases import Case
from eval.harness import Evaluator
from eval.html import render_html
from eval.scoring import compare
from eval.sweep import SweepPoint, default_scores, plot, recommend, run_sweep, sweep_to_dict
from vectorstore.embeddings import MiniLMEmbedder

SCRIPT = "<script>alert('x')</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CASES = [
    {
        "id": "ok-printer",
        "turns": ["the office printer on the second floor keeps jamming every time I print"],
        "expect": {"handoff": False, "runbook": "printer-problem"},
        "tags": ["routing"],
    },
    {
        # Fails on purpose: a VPN question, expected to go to the Wi-Fi runbook.
        "id": "wrong-on-purpose",
        "turns": [f"{SCRIPT} my VPN client will not connect from home since this morning"],
        "expect": {"handoff": False, "runbook": "wifi-connection"},
        "tags": ["on-purpose"],
    },
    {
        "id": "oos-weather",
        "turns": ["what is the weather going to be like in Paris tomorrow afternoon?"],
        "expect": {"handoff": True, "runbook": None},
        "tags": ["out-of-scope"],
    },
    {
        "id": "ok-wifi",
        "turns": ["my laptop can not connect to the office wifi network at all today"],
        "expect": {"handoff": False, "runbook": "wifi-connection"},
    },
]


@pytest.fixture(scope="module")
def evaluator(embedder: MiniLMEmbedder) -> Evaluator:
    return Evaluator(BUNDLED_RUNBOOKS, embedder=embedder)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [Case.model_validate(c) for c in CASES]


@pytest.fixture(scope="module")
def report(evaluator: Evaluator, cases: list[Case]) -> dict[str, Any]:
    return evaluator.run(cases)


def _text(page: str) -> str:
    """The page's visible text, whitespace collapsed, entities decoded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _case(report: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in report["cases"] if c["id"] == cid)


def test_the_cases_do_what_the_tests_rely_on(report: dict[str, Any]) -> None:
    assert {c["id"]: c["passed"] for c in report["cases"]} == {
        "ok-printer": True,
        "wrong-on-purpose": False,
        "oos-weather": True,
        "ok-wifi": True,
    }
    assert _case(report, "wrong-on-purpose")["runbook"] == "vpn-connection"


def test_html_shows_failing_case_its_failure_and_the_confusion_row(
    report: dict[str, Any], evaluator: Evaluator
) -> None:
    page = render_html(report, evaluator.pack)
    text = _text(page)
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert 'id="case-wrong-on-purpose"' in page
    failure = _case(report, "wrong-on-purpose")["failures"][0]
    assert "expected runbook 'wifi-connection', got 'vpn-connection'" == failure
    assert str(escape(failure)) in page
    # Passing cases get no card of their own.
    assert 'id="case-ok-printer"' not in page
    # The confusion view: one off-diagonal row, wifi-connection expected, vpn-connection chosen.
    confusion = page[page.index('class="confusion"') :]
    confusion = confusion[: confusion.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", confusion, re.DOTALL)
    assert len(rows) == 1 + 1  # the header and the single mismatch
    row = _text(rows[1])
    assert row.startswith("wifi-connection vpn-connection")
    assert row.endswith("1")
    # Per-runbook accuracy, worst first: wifi-connection is right 1 time in 2.
    assert re.search(r"wifi-connection\s*</code></td>\s*<td class=\"num\">2</td>\s*<td class=\"num\">1</td>", page)
    assert text.index("wifi-connection 2 1 50%") < text.index("printer-problem 1 1 100%")
    # Header: cases passed / total, red because one failed.
    assert "3 / 4" in text
    assert 'class="score bad"' in page


def test_html_escapes_customer_text(report: dict[str, Any], evaluator: Evaluator) -> None:
    page = render_html(report, evaluator.pack)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert SCRIPT in _text(page)


def test_html_shows_decisions_and_both_runbooks_text(report: dict[str, Any], evaluator: Evaluator) -> None:
    page = render_html(report, evaluator.pack)
    card = page[page.index('id="case-wrong-on-purpose"') :]
    card = card[: card.index("</article>")]
    decision = _case(report, "wrong-on-purpose")["decisions"][0]
    for reason in decision["reasons"]:
        assert reason in card
    assert f"{decision['confidence']:.2f}" in card
    assert "<details>" in card
    for rid in ("vpn-connection", "wifi-connection"):
        body = evaluator.pack.runbooks[rid].body
        assert str(escape(body.splitlines()[0])) in card


def test_transcript_falls_back_to_turns_and_replies(report: dict[str, Any], evaluator: Evaluator) -> None:
    stripped = copy.deepcopy(report)
    row = _case(stripped, "wrong-on-purpose")
    row["transcript"] = []
    row["replies"] = ["FALLBACK-REPLY"]
    page = render_html(stripped, evaluator.pack)
    assert re.search(r'class="line customer">.*?&lt;script&gt;', page, re.DOTALL)
    assert re.search(r'class="line bot">.*?FALLBACK-REPLY', page, re.DOTALL)


def test_nothing_fits_is_shown_for_a_null_runbook(evaluator: Evaluator, report: dict[str, Any]) -> None:
    altered = copy.deepcopy(report)
    row = _case(altered, "oos-weather")
    row["passed"] = False
    row["handoff"] = False
    row["runbook"] = "billing-question"
    row["failures"] = ["expected a handoff, got none"]
    page = render_html(altered, evaluator.pack)
    text = _text(page)
    assert "nothing fits billing-question oos-weather 1" in text
    card = page[page.index('id="case-oos-weather"') :]
    assert "(nothing fits)" in card[: card.index("</article>")]


def test_comparison_shows_newly_failing_and_deltas(report: dict[str, Any], evaluator: Evaluator) -> None:
    baseline = copy.deepcopy(report)
    _case(baseline, "wrong-on-purpose")["passed"] = True
    baseline["summary"]["routing_accuracy"] = 1.0
    baseline["summary"]["containment_rate"] = report["summary"]["containment_rate"] - 0.25
    comparison = compare(report, baseline)
    assert comparison["newly_failing"] == ["wrong-on-purpose"]
    page = render_html(report, evaluator.pack, comparison=comparison)
    text = _text(page)
    assert "1 case newly failing" in text
    assert 'href="#case-wrong-on-purpose"' in page
    assert "newly failing" in page[page.index('id="case-wrong-on-purpose"') :]
    accuracy = report["summary"]["routing_accuracy"]
    drop = f"\u2212{(1.0 - accuracy) * 100:.1f} pp"
    assert re.search(rf'<td class="num worse">{drop}</td>', page), drop
    assert re.search(r'<td class="num better">\+25\.0 pp</td>', page)
    # Without a comparison there is no delta column.
    assert " pp<" not in render_html(report, evaluator.pack)


def test_sweep_is_monotonic_and_recommends(evaluator: Evaluator, cases: list[Case]) -> None:
    # Long messages (no clarifying question) routed to tier-1 runbooks, and one out of scope:
    # raising min_score can only turn a routed conversation into a handoff.
    chosen = [c for c in cases if c.id in {"ok-printer", "ok-wifi", "oos-weather"}]
    seen: list[SweepPoint] = []
    points = run_sweep(evaluator, chosen, [0.3, 0.7, 0.99], on_point=seen.append)
    assert seen == points
    assert [p.min_score for p in points] == [0.3, 0.7, 0.99]
    assert all(p.cases == 3 for p in points)
    containment = [p.containment_rate for p in points]
    assert all(c is not None for c in containment)
    assert all(a >= b for a, b in zip(containment, containment[1:], strict=False))  # type: ignore[operator]
    assert containment[0] > containment[-1]  # type: ignore[operator]
    recall = [p.handoff_recall for p in points]
    assert all(a <= b for a, b in zip(recall, recall[1:], strict=False))  # type: ignore[operator]
    # At 0.99 nothing is contained, so there is no wrong-resolution rate, and it cannot be chosen.
    assert points[-1].containment_rate == 0.0
    assert points[-1].wrong_resolution_rate is None
    best = recommend(points, 0.02)
    assert best is not None
    assert best.min_score == 0.3


def test_recommend_rule_on_hand_made_points() -> None:
    def p(score: float, contained: float | None, wrong: float | None, routing: float | None = 0.9) -> SweepPoint:
        return SweepPoint(score, contained, wrong, routing, 1.0, 8, 10)

    points = [
        p(0.3, 0.9, 0.10),  # contains most, but too many wrong resolutions
        p(0.4, 0.6, 0.02),  # at the target exactly: allowed
        p(0.5, 0.6, 0.01, routing=0.95),  # same containment, better routing: wins the tie
        p(0.6, 0.6, 0.0, routing=0.95),  # same again: the lower min_score wins
        p(0.9, 0.0, None),  # contains nothing
    ]
    assert recommend(points, 0.02) == points[2]
    assert recommend(points, 0.015) == points[2]
    assert recommend(points, 0.005) == points[3]
    assert recommend(points, 0.2) == points[0]
    assert recommend([p(0.3, 0.9, 0.10), p(0.9, 0.0, None)], 0.02) is None
    assert recommend([], 0.02) is None
    tie = [p(0.45, 0.5, 0.0, routing=0.8), p(0.35, 0.5, 0.0, routing=0.8)]
    assert recommend(tie, 0.02) == tie[1]


def test_default_scores() -> None:
    scores = default_scores(0.47)
    assert scores == sorted(set(scores))
    assert scores[0] == 0.05 and scores[-1] == 0.95
    assert 0.47 in scores and 0.55 in scores
    assert len(scores) == 20
    assert default_scores(0.5).count(0.5) == 1


def test_plot_and_sweep_section(tmp_path: Path, report: dict[str, Any], evaluator: Evaluator) -> None:
    points = [
        SweepPoint(0.3, 0.8, 0.06, 0.9, 0.7, 30, 40),
        SweepPoint(0.47, 0.6, 0.015, 0.92, 0.9, 36, 40),
        SweepPoint(0.55, 0.5, 0.01, 0.88, 0.95, 35, 40),
        SweepPoint(0.8, 0.0, None, 0.0, 1.0, 10, 40),
    ]
    best = recommend(points, 0.02)
    assert best == points[1]
    png = plot(points, current=0.47, recommended=best, target=0.02, out=tmp_path / "charts" / "sweep.png")
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 600)

    sweep = sweep_to_dict(points, 0.47, best, 0.02)
    assert sweep["recommended"]["min_score"] == 0.47
    assert sweep["sentence"] == (
        "min_score 0.47 keeps wrong resolutions at 1.5% (target 2%) and contains 60% of conversations."
    )
    page = render_html(report, evaluator.pack, sweep=sweep, sweep_png=png)
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page
    assert sweep["sentence"] in _text(page)
    row = re.search(r'<tr class="today recommended">(.*?)</tr>', page, re.DOTALL)
    assert row is not None and "<strong>0.47</strong>" in row.group(1)
    assert page.count('class="today') == 1

    none = sweep_to_dict(points, 0.47, recommend(points, 0.001), 0.001)
    assert none["recommended"] is None
    page = render_html(report, evaluator.pack, sweep=none)
    assert "No min_score in the sweep keeps wrong resolutions at or under the target of 0.1%." in _text(page)
    assert "data:image/png" not in page
    assert "recommended</span>" not in page
