"""Recall and precision of redaction per class, on 225 labelled support messages written for Tierone.

A labelled span counts as found when a finding of the same class covers all of it; a finding counts
as correct when it overlaps a labelled span of its class. Run with ``-s`` to see the table.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.redact import KINDS, find, redact

DATA = Path(__file__).resolve().parents[1] / "data" / "pii_labelled.jsonl"
# The floor for secrets and contact details; every class is held to it today.
RECALL_FLOOR = {"secret": 0.98, "email": 0.98, "phone": 0.98, "code": 0.98}
RECALL_FLOOR_OTHER = 0.95
# Set from measurement (SECURITY.md): every class measured 1.00; a drop below this fails.
PRECISION_FLOOR = 0.95


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    expected: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    found: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    misses: list[str] = []
    for row in rows:
        spans = find(row["text"])
        for want in row["spans"]:
            expected[want["kind"]] += 1
            if any(s.kind == want["kind"] and s.start <= want["start"] and s.end >= want["end"] for s in spans):
                hit[want["kind"]] += 1
            else:
                misses.append(f"{row['id']}: missed {want['kind']} {want['value']!r} in {row['text']!r}")
        for span in spans:
            found[span.kind] += 1
            if any(w["kind"] == span.kind and span.start < w["end"] and span.end > w["start"] for w in row["spans"]):
                correct[span.kind] += 1
            else:
                misses.append(
                    f"{row['id']}: wrongly took {row['text'][span.start : span.end]!r} as {span.kind} "
                    f"in {row['text']!r}"
                )
    table = {
        kind: {
            "labelled": expected[kind],
            "recall": hit[kind] / expected[kind] if expected[kind] else 1.0,
            "precision": correct[kind] / found[kind] if found[kind] else 1.0,
        }
        for kind in KINDS
    }
    return table, misses


def test_the_labelled_set_is_big_and_covers_every_class() -> None:
    rows = load()
    assert len(rows) >= 200
    assert len({r["id"] for r in rows}) == len(rows)
    kinds = Counter(s["kind"] for r in rows for s in r["spans"])
    assert set(kinds) == set(KINDS), kinds
    assert sum(1 for r in rows if not r["spans"]) >= 50, "too few negatives"
    for row in rows:
        for span in row["spans"]:
            assert row["text"][span["start"] : span["end"]] == span["value"], row["id"]


def test_recall_and_precision_per_class() -> None:
    table, misses = score(load())
    print("\nclass        labelled  recall  precision")
    for kind, row in table.items():
        print(f"{kind:<12} {row['labelled']:>8}  {row['recall']:.3f}   {row['precision']:.3f}")
    for line in misses:
        print("  " + line)
    failures = []
    for kind, row in table.items():
        floor = RECALL_FLOOR.get(kind, RECALL_FLOOR_OTHER)
        if row["recall"] < floor:
            failures.append(f"{kind} recall {row['recall']:.3f} < {floor}")
        if row["precision"] < PRECISION_FLOOR:
            failures.append(f"{kind} precision {row['precision']:.3f} < {PRECISION_FLOOR}")
    assert not failures, "; ".join(failures) + "\n" + "\n".join(misses)


def test_no_labelled_value_survives_redaction() -> None:
    leaks = [
        f"{row['id']}: {s['value']!r}"
        for row in load()
        for s in row["spans"]
        if len(s["value"]) >= 4 and s["value"] in redact(row["text"])
    ]
    assert leaks == []


@pytest.mark.parametrize("row", [r for r in load() if not r["spans"]], ids=lambda r: r["id"])
def test_negatives_are_left_alone(row: dict[str, Any]) -> None:
    assert redact(row["text"]) == row["text"]


HOLDOUT = Path(__file__).resolve().parents[1] / "data" / "pii_holdout.jsonl"


def test_held_out_messages_meet_the_floor_on_secrets_and_contact() -> None:
    """41 messages written after the rules were tuned and never tuned against (figures in SECURITY.md)."""
    rows = [json.loads(line) for line in HOLDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    table, misses = score(rows)
    print("\nheld out: " + ", ".join(f"{k} {v['recall']:.2f}/{v['precision']:.2f}" for k, v in table.items()))
    for line in misses:
        print("  " + line)
    low = {k: v["recall"] for k, v in table.items() if k in RECALL_FLOOR and v["recall"] < RECALL_FLOOR[k]}
    assert low == {}, misses
    assert all(v["precision"] >= PRECISION_FLOOR for v in table.values()), misses
