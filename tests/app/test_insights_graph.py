"""The resolver records the facts honest outcomes need: fixes shown, "didn't work" answers, handoff reasons."""

from __future__ import annotations

from datetime import timedelta

from agent.episodes import EpisodeStore
from app.insights import Period, open_insights
from app.runtime import Runtime
from tests.conftest import Clock


def test_a_conversation_leaves_the_facts_and_its_outcome_follows(runtime: Runtime, clock: Clock) -> None:
    resolver = runtime.resolver
    store = resolver.deps.episodes
    assert isinstance(store, EpisodeStore)
    cid = resolver.start("chat")
    resolver.send(cid, "my printer won't print anything")
    clock.advance(minutes=2)
    resolver.send(cid, "no, that didn't work")
    [episode] = store.for_conversation(cid)
    assert episode.runbook_id == "printer-problem"
    assert episode.failed_steps == [0] and episode.steps_tried == [0, 1]
    assert episode.fix_at == clock() and episode.last_at == clock()
    insights = open_insights(runtime.settings, runtime.pack)
    assert insights.outcomes(Period.of(None, clock() + timedelta(hours=1)))[0]["outcome"] == "pending"
    assert insights.outcomes(Period.of(None, clock() + timedelta(hours=73)))[0]["outcome"] == "no_recontact"

    other = resolver.start("chat")
    resolver.send(other, "I want to talk to a human")
    [handed] = store.for_conversation(other)
    packet = resolver.deps.handoffs.for_conversation(other)[-1]
    assert (handed.outcome, handed.reason, handed.packet_id) == (
        "handed_off",
        "customer_requested_human",
        packet.packet_id,
    )
    report = insights.report(Period.of(None, clock() + timedelta(hours=1)))
    assert report["handed_off"] == 1
    assert report["didnt_work"] == [{"runbook_id": "printer-problem", "answers": 1, "episodes": 1}]
