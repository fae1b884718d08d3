"""The episodes store: one row per problem, written once per id, found by conversation or verified customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.episodes import Episode, EpisodeStore
from agent.handoff import HandoffPacket
from core.db import DatabaseTarget
from tests.conftest import Clock

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def episode(
    episode_id: str, conversation_id: str = "c1", runbook_id: str | None = "vpn-connection", **kw: object
) -> Episode:
    return Episode.model_validate(
        {"episode_id": episode_id, "conversation_id": conversation_id, "runbook_id": runbook_id, "opened_at": T0, **kw}
    )


def test_open_is_idempotent_and_records_steps_and_outcome(db_target: DatabaseTarget) -> None:
    clock = Clock(T0)
    store = EpisodeStore(db_target, clock)
    assert store.open(episode("c1:e0"))
    assert not store.open(episode("c1:e0", runbook_id="printer-problem"))  # a replayed turn
    store.tried("c1:e0", 0)
    store.tried("c1:e0", 0)
    store.tried("c1:e0", 2)
    store.tried("missing", 1)
    clock.advance(minutes=5)
    store.close("c1:e0", "confirmed")
    clock.advance(minutes=5)
    store.close("c1:e0", "reopened")
    got = store.get("c1:e0")
    assert got is not None
    assert (got.runbook_id, got.outcome, got.steps_tried) == ("vpn-connection", "reopened", [0, 2])
    assert got.closed_at == T0 + timedelta(minutes=5)
    assert store.get("missing") is None


def test_earlier_by_conversation_and_verified_subject_within_the_window(db_target: DatabaseTarget) -> None:
    store = EpisodeStore(db_target, Clock(T0))
    store.open(episode("c1:e0"))
    store.open(episode("c2:e0", conversation_id="c2", subject="hash-a"))
    store.open(episode("c3:e0", conversation_id="c3", subject="hash-b"))
    store.open(episode("c4:e0", conversation_id="c4", subject="hash-a", opened_at=T0 - timedelta(hours=100)))
    store.open(episode("c5:e0", conversation_id="c5"))
    store.verified("c5:e0", "hash-a")
    store.retarget("c5:e0", "printer-problem")
    since = T0 - timedelta(hours=72)
    assert [e.episode_id for e in store.earlier("c1", None, since)] == ["c1:e0"]
    assert [e.episode_id for e in store.earlier("c1", "hash-a", since)] == ["c1:e0", "c2:e0", "c5:e0"]
    assert store.get("c5:e0").runbook_id == "printer-problem"  # type: ignore[union-attr]
    assert [e.episode_id for e in store.for_conversation("c2")] == ["c2:e0"]


def test_without_links_across_conversations_only_the_conversations_own(db_target: DatabaseTarget) -> None:
    store = EpisodeStore(db_target, Clock(T0), across_conversations=False)
    store.open(episode("c1:e0", subject="hash-a"))
    store.open(episode("c2:e0", conversation_id="c2", subject="hash-a"))
    assert [e.episode_id for e in store.earlier("c1", "hash-a", T0 - timedelta(hours=1))] == ["c1:e0"]


def test_packet_schema_stays_backward_compatible() -> None:
    schema = HandoffPacket.model_json_schema()
    assert "queued_problems" in schema["properties"]
    assert "earlier_episodes" in schema["properties"]
    assert not {"queued_problems", "earlier_episodes"} & set(schema["required"])


def test_every_reason_the_policy_hands_off_for_is_a_handoff_reason_of_episodes() -> None:
    # An episode records the boundary's own reason; one missing here recorded a later, lesser code.
    import re
    import typing

    from agent import policy
    from agent.episodes import HANDOFF_REASONS
    from agent.state import ReasonCode

    source = Path(policy.__file__).read_text(encoding="utf-8")
    handed_for = set(re.findall(r'_handoff\("([a-z_0-9]+)"', source))
    assert "tool_failed" in handed_for and handed_for <= HANDOFF_REASONS, handed_for - HANDOFF_REASONS
    assert set(HANDOFF_REASONS) <= set(typing.get_args(ReasonCode))
