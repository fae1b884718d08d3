"""The simulator: the eval cases through the real graph, at simulated times; one seed, one month."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.insights import Period
from app.runtime import Runtime
from eval.cases import load_cases
from eval.simulate import Simulator, summary
from tests.conftest import Clock

START = datetime(2026, 11, 1, tzinfo=UTC)
CASES = load_cases(Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl")


def month(make_runtime: Callable[..., Runtime], clock: Clock, data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    clock.now = START
    runtime = make_runtime(data_dir)
    tally = Simulator(runtime, clock, CASES, seed=5).run(START, days=10, conversations=40)  # type: ignore[arg-type]
    assert runtime.insights is not None
    report = runtime.insights.report(Period.of(None, datetime(2026, 11, 20, tzinfo=UTC)))
    return summary(tally), report


def test_one_seed_plays_the_same_month_and_leaves_every_kind_of_record(
    make_runtime: Callable[..., Runtime], clock: Clock, tmp_path: Path
) -> None:
    tally, report = month(make_runtime, clock, tmp_path / "one")
    again, report_again = month(make_runtime, clock, tmp_path / "two")
    assert tally == again
    figures = ("episodes", "confirmed", "no_recontact", "reopened", "abandoned", "handed_off", "containment_rate")
    assert {k: report[k] for k in figures} == {k: report_again[k] for k in figures}
    assert tally["conversations"] == 40 and tally["turns"] >= 40
    assert report["confirmed"] > 0 and report["handed_off"] > 0
    assert report["handoff_times"]["first_response"]["count"] > 0
    # Every simulated moment lies in the simulated month, never the real clock's.
    assert all(day["day"].startswith("2026-11-") for day in report["timeline"])
