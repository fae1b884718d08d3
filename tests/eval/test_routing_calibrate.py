"""Calibration: the whole curve, the suggestion at a wrong-resolution target, and the warnings an author needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from eval.calibrate import Probe, recommend, sweep, warnings_for
from tests.routing_pack import write_pack


def probe(top: float, chosen: str, truth: str | None, margin: float = 0.5) -> Probe:
    return Probe(text=f"{chosen}:{top}", top=top, margin=margin, chosen=chosen, truth=truth)


# Known probes routed right at high scores, one routed wrong at 0.6, out-of-scope ones at 0.3 and 0.7.
PROBES = [
    probe(0.9, "a", "a"),
    probe(0.8, "b", "b"),
    probe(0.85, "a", "a"),
    probe(0.6, "a", "b"),
    probe(0.3, "b", None),
    probe(0.7, "a", None),
]


@pytest.mark.parametrize(
    ("min_score", "routing", "recall", "wrong", "handed_off"),
    [
        (0.0, 3 / 4, 0.0, 3 / 6, 0.0),
        (0.5, 3 / 4, 1 / 2, 2 / 5, 1 / 6),
        (0.65, 3 / 4, 1 / 2, 1 / 4, 2 / 6),
        (0.75, 3 / 4, 1.0, 0.0, 3 / 6),
        (0.95, 0.0, 1.0, None, 1.0),
    ],
)
def test_sweep_point(min_score: float, routing: float, recall: float, wrong: float | None, handed_off: float) -> None:
    (point,) = sweep(PROBES, [min_score], [0.0])
    assert point.known_accuracy == pytest.approx(routing)
    assert point.unknown_recall == pytest.approx(recall)
    assert point.wrong_rate == (None if wrong is None else pytest.approx(wrong))
    assert point.handed_off == pytest.approx(handed_off)


def test_recommend_keeps_the_most_under_the_target() -> None:
    settings = sweep(PROBES, [0.0, 0.5, 0.65, 0.75, 0.95], [0.0])
    assert recommend(settings, 0.05).min_score == 0.75
    assert recommend(settings, 0.3).min_score == 0.65
    assert recommend(settings, 0.5).min_score == 0.0
    # Nothing reaches the target: the fewest wrong resolutions.
    assert recommend(sweep(PROBES, [0.0, 0.5], [0.0]), 0.01).min_score == 0.5


def test_warnings_for_low_routing_and_no_out_of_scope_probe() -> None:
    settings = sweep(PROBES, [0.75, 0.86], [0.0])
    low = next(s for s in settings if s.min_score == 0.86)
    assert any("routes only 25%" in w for w in warnings_for(low, PROBES))
    fine = next(s for s in settings if s.min_score == 0.75)
    assert warnings_for(fine, PROBES) == []
    known_only = [p for p in PROBES if p.known]
    assert any("no out-of-scope probe" in w for w in warnings_for(recommend(sweep(known_only), 0.05), known_only))


@pytest.mark.model  # the command embeds the pack with the real model
def test_calibrate_command_shows_the_curve_the_suggestion_and_the_confusions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    pack = write_pack(tmp_path / "pack")
    oos = tmp_path / "oos.txt"
    oos.write_text("# real ones from our inbox\nwhen is the canteen open\nwho won the match\n")
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {"id": "k1", "turns": ["vpn drops all the time"], "expect": {"handoff": False, "runbook": "vpn-connection"}}
        )
        + "\n"
    )
    result = CliRunner().invoke(
        app,
        ["runbooks", "calibrate", str(pack), "--out-of-scope", str(oos), "--cases", str(cases), "--write"],
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps at the terminal's width
    for word in ("known", "routed", "scope", "wrong", "handed off"):
        assert word in out
    table = out.split("suggested: routing.min_score")[0]
    assert "suggested" in table  # the suggested row is in the table
    assert "suggested: routing.min_score" in out
    assert "has no case expecting a handoff" in out  # the case file holds no out-of-scope case
    assert "min_score" in (pack / "policy.yaml").read_text()


@pytest.mark.model  # the command embeds the pack with the real model
def test_sweep_warns_without_handoff_cases_and_writes_nothing_into_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    pack = write_pack(tmp_path / "pack")
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {"id": "pw", "turns": ["I forgot my password"], "expect": {"handoff": False, "runbook": "password-reset"}}
        )
        + "\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["eval", "--runbooks", str(pack), "--cases", str(cases), "--sweep"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert "no case in" in out and "expects a handoff" in out
    for word in ("routing", "handoff", "wrong", "containment", "suggested"):
        assert word in out
    assert list(work.iterdir()) == []
