"""Render an eval report as one self-contained HTML page for people reviewing a pack.

The page holds the summary metrics (against a baseline when one is given), where routing went
wrong, every failing case with its transcript and decisions, and the threshold sweep. Everything is
inline (CSS, the sweep's PNG as a data URI) so the file can be mailed or attached to a review.
Customer text is untrusted: the template is rendered with autoescaping on.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from itertools import zip_longest
from pathlib import Path
from typing import Any

import jinja2

from core.pack import Pack
from eval.sweep import SweepPoint, describe, is_setting, percent

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
NOTHING_FITS = "nothing fits"

# Lower is better for these; higher is better for the others, except the plain counts below.
_LOWER_BETTER = {"wrong_resolution_rate", "latency_ms_p50", "latency_ms_p95"}
_NEUTRAL = {"cases", "turns", "repeat"}
_RATES = {
    "routing_accuracy",
    "handoff_recall",
    "handoff_precision",
    "containment_rate",
    "wrong_resolution_rate",
    "pass_hat_k",
}
_MEANING = {
    "cases": "Cases played",
    "passed": "Cases whose every expectation held",
    "routing_accuracy": "Cases with an expected runbook that were routed to it",
    "handoff_recall": "Cases that should reach a person and did",
    "handoff_precision": "Handoffs that should have happened",
    "containment_rate": "Conversations the bot kept (no handoff)",
    "wrong_resolution_rate": "Kept conversations on the wrong runbook, or that should have reached a person",
    "latency_ms_p50": "Median time to answer one turn",
    "latency_ms_p95": "95th-percentile time to answer one turn",
    "turns": "Customer turns played",
    "repeat": "Times each case was played",
    "pass_hat_k": "Cases that passed on every repeat",
}


def _format(key: str, value: Any) -> str:
    if value is None:
        return "\u2014"
    if key in _RATES and isinstance(value, int | float):
        return percent(float(value))
    if key.startswith("latency_ms") and isinstance(value, int | float):
        return f"{value:,.1f} ms"
    return str(value)


def _format_delta(key: str, delta: float) -> str:
    sign = "+" if delta > 0 else ("\u2212" if delta < 0 else "\u00b1")
    size = abs(delta)
    if key in _RATES:
        return f"{sign}{size * 100:.1f} pp"
    if key.startswith("latency_ms"):
        return f"{sign}{size:,.1f} ms"
    return f"{sign}{size:g}"


def _verdict(key: str, delta: float) -> str:
    if delta == 0 or key in _NEUTRAL:
        return "same"
    better = delta < 0 if key in _LOWER_BETTER else delta > 0
    return "better" if better else "worse"


def _metric_rows(summary: dict[str, Any], comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    deltas: dict[str, Any] = (comparison or {}).get("metrics", {})
    rows = []
    for key, value in summary.items():
        row: dict[str, Any] = {
            "key": key,
            "meaning": _MEANING.get(key, ""),
            "value": _format(key, value),
            "before": None,
            "delta": None,
            "verdict": None,
        }
        if key in deltas:
            delta = float(deltas[key]["delta"])
            row["before"] = _format(key, deltas[key]["before"])
            row["delta"] = _format_delta(key, delta)
            row["verdict"] = _verdict(key, delta)
        rows.append(row)
    return rows


def _label(runbook: str | None) -> str:
    return NOTHING_FITS if runbook is None else runbook


def _confusion(cases: list[dict[str, Any]], pack: Pack) -> dict[str, Any]:
    """Expected -> chosen mismatches and per-runbook accuracy, over cases that name a runbook."""
    routed = [c for c in cases if "runbook" in c.get("expect", {})]
    mismatches: Counter[tuple[str, str]] = Counter()
    examples: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    totals: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for case in routed:
        expected, chosen = case["expect"]["runbook"], case.get("runbook")
        totals[_label(expected)] += 1
        if chosen == expected:
            right[_label(expected)] += 1
        else:
            pair = (_label(expected), _label(chosen))
            mismatches[pair] += 1
            examples[pair].append(str(case["id"]))
    off_diagonal = [
        {"expected": e, "chosen": c, "count": n, "cases": examples[(e, c)]}
        for (e, c), n in sorted(mismatches.items(), key=lambda item: (-item[1], item[0]))
    ]
    per_runbook: list[dict[str, Any]] = []
    for label, total in totals.items():
        runbook = pack.runbooks.get(label)
        per_runbook.append(
            {
                "runbook": label,
                "title": runbook.meta.title if runbook is not None else "",
                "cases": total,
                "right": right[label],
                "accuracy": right[label] / total,
                "accuracy_text": percent(right[label] / total),
            }
        )
    per_runbook.sort(key=lambda r: (r["accuracy"], -r["cases"], r["runbook"]))
    return {"cases": len(routed), "mismatches": off_diagonal, "per_runbook": per_runbook}


def _transcript(case: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation line by line; from turns and replies when the report has no transcript."""
    lines = case.get("transcript") or []
    if lines:
        return [
            {"role": str(line.get("role", "")), "text": str(line.get("text", "")), "at": str(line.get("at", ""))}
            for line in lines
        ]
    built = []
    for said, replied in zip_longest(case.get("turns") or [], case.get("replies") or []):
        if said is not None:
            built.append({"role": "customer", "text": str(said), "at": ""})
        if replied is not None:
            built.append({"role": "bot", "text": str(replied), "at": ""})
    return built


def _runbook_block(pack: Pack, runbook_id: str | None, role: str) -> dict[str, Any]:
    if runbook_id is None:
        return {"role": role, "id": NOTHING_FITS, "title": "", "path": "", "body": "(nothing fits)"}
    runbook = pack.runbooks.get(runbook_id)
    if runbook is None:
        return {"role": role, "id": runbook_id, "title": "", "path": "", "body": "(not a runbook of this pack)"}
    return {"role": role, "id": runbook_id, "title": runbook.meta.title, "path": runbook.path, "body": runbook.body}


def _failing(cases: list[dict[str, Any]], pack: Pack) -> list[dict[str, Any]]:
    """One view per failing case; cases with the same text, expectation and outcome share one."""
    views: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for case in cases:
        if case.get("passed"):
            continue
        same = json.dumps(
            [case.get("turns"), case.get("expect"), case.get("handoff"), case.get("runbook")], sort_keys=True
        )
        if same in seen:
            seen[same]["same_text"].append(str(case["id"]))
            continue
        expect = case.get("expect", {})
        chosen = case.get("runbook")
        if "runbook" not in expect:
            blocks = [_runbook_block(pack, chosen, "chosen")]
        elif expect["runbook"] == chosen:
            blocks = [_runbook_block(pack, chosen, "chosen and expected")]
        else:
            blocks = [_runbook_block(pack, chosen, "chosen"), _runbook_block(pack, expect["runbook"], "expected")]
        decisions = [
            {
                "turn": d.get("turn", ""),
                "action": d.get("action", ""),
                "reasons": list(d.get("reasons") or []),
                "runbook": d.get("runbook_id") or "",
                "confidence": "" if d.get("confidence") is None else f"{float(d['confidence']):.2f}",
            }
            for d in case.get("decisions") or []
        ]
        views.append(
            {
                "id": str(case["id"]),
                "tags": list(case.get("tags") or []),
                "failures": list(case.get("failures") or []),
                "path": list(case.get("path") or []),
                "handoff": bool(case.get("handoff")),
                "runbook": _label(chosen),
                "expected_runbook": _label(expect["runbook"]) if "runbook" in expect else None,
                "expected_handoff": expect.get("handoff"),
                "confidence": f"{float(case.get('confidence') or 0.0):.2f}",
                "routing_note": str(case.get("routing_note") or ""),
                "same_text": [],
                "runs": case.get("runs", 1),
                "runs_passed": case.get("runs_passed", 0),
                "reasons": list(case.get("reasons") or []),
                "tools": list(case.get("tools_called") or []),
                "transcript": _transcript(case),
                "decisions": decisions,
                "runbooks": blocks,
            }
        )
        seen[same] = views[-1]
    return views


def _rate(hits: int, total: int) -> str:
    return percent(hits / total) if total else "\u2014"


def by_tag(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The main metrics for each case tag (as the summary defines them), tags in name order.

    Args:
        cases: The report's case rows.

    Returns:
        One row per tag: ``tag``, ``cases``, ``passed``, ``routing``, ``handoff_recall`` and
        ``wrong_resolution`` (percentages; a dash where no case counts).
    """
    rows = []
    for tag in sorted({t for c in cases for t in c.get("tags") or []}):
        tagged = [c for c in cases if tag in (c.get("tags") or [])]
        routed = [c for c in tagged if c["expect"].get("runbook") and not c["expect"].get("handoff")]
        expecting = [c for c in tagged if c["expect"].get("handoff")]
        kept = [c for c in tagged if not c.get("handoff")]
        wrong = [
            c
            for c in kept
            if c["expect"].get("handoff") or ("runbook" in c["expect"] and c.get("runbook") != c["expect"]["runbook"])
        ]
        rows.append(
            {
                "tag": tag,
                "cases": len(tagged),
                "passed": sum(1 for c in tagged if c.get("passed")),
                "routing": _rate(
                    sum(1 for c in routed if c.get("runbook") == c["expect"]["runbook"] and not c.get("handoff")),
                    len(routed),
                ),
                "handoff_recall": _rate(sum(1 for c in expecting if c.get("handoff")), len(expecting)),
                "wrong_resolution": _rate(len(wrong), len(kept)),
            }
        )
    return rows


def _all_cases(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": str(c["id"]),
            "passed": bool(c.get("passed")),
            "handoff": bool(c.get("handoff")),
            "runbook": _label(c.get("runbook")),
            "expected": _label(c["expect"]["runbook"]) if "runbook" in c.get("expect", {}) else "",
            "confidence": f"{float(c.get('confidence') or 0.0):.2f}",
            "latency": f"{float(c.get('latency_ms') or 0.0):,.0f} ms",
        }
        for c in cases
    ]


def _sweep_view(sweep: dict[str, Any], current: float | None, png: Path | None) -> dict[str, Any]:
    target = float(sweep.get("target_wrong_resolution", 0.0))
    today = sweep.get("current", current)
    raw = sweep.get("recommended")
    recommended = SweepPoint(**raw) if raw else None
    rows = []
    for item in sweep.get("points", []):
        point = SweepPoint(**item)
        today_row = is_setting(point, today)
        recommended_row = recommended is not None and is_setting(point, recommended.min_score)
        rows.append(
            {
                "css": " ".join(name for name, on in (("today", today_row), ("recommended", recommended_row)) if on),
                "min_score": f"{point.min_score:g}",
                "containment": percent(point.containment_rate),
                "wrong": percent(point.wrong_resolution_rate),
                "meets_target": point.wrong_resolution_rate is not None and point.wrong_resolution_rate <= target,
                "routing": percent(point.routing_accuracy),
                "recall": percent(point.handoff_recall),
                "passed": f"{point.passed} / {point.cases}",
                "today": today_row,
                "recommended": recommended_row,
            }
        )
    image = None
    if png is not None:
        image = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    return {
        "target": percent(target),
        "current": f"{today:g}" if isinstance(today, int | float) else "\u2014",
        "sentence": sweep.get("sentence") or describe(recommended, target),
        "recommended": recommended,
        "rows": rows,
        "image": image,
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(
    report: dict[str, Any],
    pack: Pack,
    *,
    comparison: dict[str, Any] | None = None,
    sweep: dict[str, Any] | None = None,
    sweep_png: Path | None = None,
) -> str:
    """Render a report as one self-contained HTML page.

    Args:
        report: An eval report, as ``Evaluator.run`` returns it (or read back from its JSON).
        pack: The pack the report was played against; the failing cases show its runbooks' text.
        comparison: ``eval.scoring.compare(report, baseline)``, to show deltas and cases that
            newly fail or pass.
        sweep: ``eval.sweep.sweep_to_dict(...)``, to show the threshold sweep.
        sweep_png: The sweep's chart (``eval.sweep.plot``), embedded as a data URI.

    Returns:
        The HTML page: inline CSS, no scripts, no external assets.
    """
    summary: dict[str, Any] = report.get("summary", {})
    cases: list[dict[str, Any]] = report.get("cases", [])
    routing: dict[str, Any] = report.get("routing") or {}
    passed = int(summary.get("passed", sum(1 for c in cases if c.get("passed"))))
    total = int(summary.get("cases", len(cases)))
    current = routing.get("min_score")
    context = {
        "pack_path": report.get("runbooks") or pack.root.name,
        "runbook_count": len(pack.runbooks),
        "brain": report.get("brain", ""),
        "routing": routing,
        "created_at": report.get("created_at", ""),
        "passed": passed,
        "total": total,
        "all_passed": passed == total,
        "pass_rate": percent(passed / total if total else None),
        "metrics": _metric_rows(summary, comparison),
        "by_tag": by_tag(cases),
        "comparison": comparison,
        "confusion": _confusion(cases, pack),
        "failing": _failing(cases, pack),
        "all_cases": _all_cases(cases),
        "sweep": _sweep_view(sweep, current, sweep_png) if sweep is not None else None,
    }
    return _environment().get_template(TEMPLATE).render(**context)
