"""Knowledge gaps: the period's unanswered handoffs, clustered, ranked, redacted (hashing embedder, no model)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from agent.handoff import HandoffQueue
from app.gaps import GapsError, cluster, draft_runbook, find_gaps, gaps_provider
from core.db import DatabaseTarget
from core.pack import lint_pack, load_pack
from tests.app.test_teaching import T0, packet
from tests.conftest import Clock
from tests.fakes import HashingEmbedder
from tests.routing_pack import write_pack
from vectorstore.index import RunbookIndex, open_client

MONITOR = [
    "my monitor flickers when docked",
    "the monitor flickers when the laptop is docked, mail jane@example.com",
    "monitor flickers when docked at my desk",
    "second monitor flickers when docked",
]
EXPENSES = ["where do I file an expense report", "how do I file my expense report for travel"]


@pytest.fixture
def index(tmp_path: Path) -> RunbookIndex:
    built = RunbookIndex(open_client(None), load_pack(write_pack(tmp_path / "pack")), HashingEmbedder())
    built.sync()
    return built


@pytest.fixture
def queue(db_target: DatabaseTarget) -> HandoffQueue:
    q = HandoffQueue(db_target, Clock(T0))
    n = 0

    def put(text: str, reason: str, hours: float) -> None:
        nonlocal n
        n += 1
        p = packet("hello", text, packet_id=f"HO-{n}")
        q.put(p.model_copy(update={"reason_codes": [reason], "created_at": T0 + timedelta(hours=hours)}))

    for i, text in enumerate(MONITOR):
        put(text, "no_runbook_fits" if i else "ambiguous_after_clarifying", i)
    for i, text in enumerate(EXPENSES):
        put(text, "no_runbook_fits", 10 + i)
    put("the printer is offline again", "no_runbook_fits", 20)
    # Not gaps: a request for a person, and a gap from before the period.
    put("monitor flickers when docked, get me a human", "customer_requested_human", 21)
    put("monitor flickers when docked since last week", "no_runbook_fits", -48)
    return q


def test_gaps_are_clusters_ranked_by_size_with_redacted_examples(queue: HandoffQueue, index: RunbookIndex) -> None:
    gaps = find_gaps(queue, index, since=T0 - timedelta(hours=1), until=T0 + timedelta(days=1))
    assert [(g.rank, g.size) for g in gaps] == [(1, 4), (2, 2), (3, 1)]
    first = gaps[0]
    assert sorted(first.examples) == sorted(
        [*MONITOR[:1], "the monitor flickers when the laptop is docked, mail [email]", *MONITOR[2:]]
    )
    assert first.reasons == {"ambiguous_after_clarifying": 1, "no_runbook_fits": 3}
    assert (first.first_seen, first.last_seen) == (T0, T0 + timedelta(hours=3))
    assert set(gaps[1].examples) == set(EXPENSES)
    assert gaps[2].nearest_runbook == "printer-problem" and gaps[2].nearest_example == "the printer is offline"
    assert gaps[2].nearest_score == pytest.approx(4 / np.sqrt(20))  # 4 shared words of 4 and 5
    as_dict = first.as_dict()
    assert {"size", "examples", "nearest_runbook"} <= set(as_dict) and as_dict["size"] == 4
    # The whole history holds the older handoff too; a later period holds nothing.
    assert find_gaps(queue, index)[0].size == 5
    assert find_gaps(queue, index, since=T0 + timedelta(days=2)) == []


def test_vectors_are_embedded_once_per_handoff(queue: HandoffQueue, index: RunbookIndex) -> None:
    calls: list[int] = []
    real = index.embedder

    class Counting:
        name = real.name

        def embed(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            return real.embed(texts)

    index.embedder = Counting()  # type: ignore[assignment]
    first = find_gaps(queue, index)
    assert sum(calls) == 8
    assert find_gaps(queue, index) == first and sum(calls) == 8


def test_a_period_that_ends_before_it_starts_is_refused(queue: HandoffQueue, index: RunbookIndex) -> None:
    with pytest.raises(GapsError, match="is not after --since"):
        find_gaps(queue, index, since=T0, until=T0 - timedelta(days=1))


def test_many_messages_cluster_through_birch_the_same_way() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    rows = np.concatenate([c + rng.normal(scale=0.05, size=(900, 32)) for c in centres]).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    labels = cluster(rows, 0.3)
    assert len(rows) > 2000 and len(set(labels.tolist())) == 3
    assert all(len(set(labels[i * 900 : (i + 1) * 900].tolist())) == 1 for i in range(3))


def test_a_draft_holds_the_gap_and_does_not_lint_until_finished(
    queue: HandoffQueue, index: RunbookIndex, tmp_path: Path
) -> None:
    gap = find_gaps(queue, index, since=T0 - timedelta(hours=1))[0]
    pack_dir = write_pack(tmp_path / "drafted")
    draft = pack_dir / "draft.md"
    draft.write_text(draft_runbook(gap))
    _, problems = lint_pack(pack_dir)
    assert {(p.file, p.field) for p in problems} == {
        ("draft.md", "title"),
        ("draft.md", "category"),
        ("draft.md", "body"),
    }
    assert all("TODO" in p.message for p in problems)
    finished = draft.read_text()
    finished = finished.replace("TODO: name the problem these 4 customers describe", "Fix a flickering docked monitor")
    finished = finished.replace("category: TODO", "category: it").replace("TODO: ", "")
    draft.write_text(finished)
    pack, problems = lint_pack(pack_dir)
    assert problems == [] and pack is not None
    assert sorted(pack.runbooks["draft-gap-1"].meta.examples) == sorted(gap.examples)


def test_the_provider_insights_call_gives_the_gaps_as_dicts(queue: HandoffQueue, index: RunbookIndex) -> None:
    provide = gaps_provider(queue, index)
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=1)
    assert provide(since, until) == [g.as_dict() for g in find_gaps(queue, index, since=since, until=until)]
    assert [g["size"] for g in provide(None, until)] == [5, 2, 1]


def test_a_provider_given_a_way_to_open_the_index_opens_it_only_for_a_period_with_gaps(
    queue: HandoffQueue, index: RunbookIndex
) -> None:
    opened: list[RunbookIndex] = []

    def open_index() -> RunbookIndex:
        opened.append(index)
        return index

    provide = gaps_provider(queue, open_index)
    assert provide(T0 + timedelta(days=5), T0 + timedelta(days=6)) == [] and opened == []
    assert [g["size"] for g in provide(None, T0 + timedelta(days=1))] == [5, 2, 1] and opened == [index]
