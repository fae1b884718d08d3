"""The desk's lifecycle on a real runtime, and on both backends with two replicas: atomic claims, status changes."""

from __future__ import annotations

import threading

import pytest

from agent.handoff import HandoffQueue
from app.desk import ConversationStatus, Desk, DeskConflict
from app.messages import MessageLog
from app.runtime import Runtime
from core.db import DatabaseTarget
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)
from tests.app.test_teaching import packet as handoff_packet
from tests.conftest import Clock


def handoff(runtime: Runtime) -> tuple[str, str]:
    cid = runtime.resolver.start("chat")
    result = runtime.resolver.send(cid, "let me talk to a human")
    assert result.handoff is not None
    return cid, str(result.handoff["packet_id"])


def test_two_technicians_cannot_both_claim(runtime: Runtime) -> None:
    for _ in range(8):
        _, packet_id = handoff(runtime)
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def claim(
            name: str,
            packet_id: str = packet_id,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                runtime.desk.claim(packet_id, name)
                outcomes[name] = "won"
            except DeskConflict:
                outcomes[name] = "refused"

        threads = [threading.Thread(target=claim, args=(name,)) for name in ("Alex", "Sam")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes.values()) == ["refused", "won"], outcomes
        winner = next(name for name, outcome in outcomes.items() if outcome == "won")
        assert runtime.desk.ticket(packet_id).claimed_by == winner
        claims = [e for e in runtime.desk.events(packet_id) if e["action"] == "claimed"]
        assert [e["actor"] for e in claims] == [winner]


def test_status_follows_the_lifecycle(runtime: Runtime) -> None:
    seen: list[tuple[str, str]] = []
    runtime.desk.on_status.append(lambda cid, old, new: seen.append((old.status, new.status)))
    cid = runtime.resolver.start("chat")
    assert runtime.desk.status(cid) == ConversationStatus("bot")
    runtime.resolver.send(cid, "I forgot my password")
    assert runtime.desk.status(cid).status == "bot" and seen == []
    packet_id = str(runtime.resolver.send(cid, "let me talk to a human").handoff["packet_id"])  # type: ignore[index]
    assert runtime.desk.status(cid) == ConversationStatus("queued", packet_id)
    runtime.desk.claim(packet_id, "Alex")
    assert runtime.desk.status(cid) == ConversationStatus("claimed", packet_id, "Alex")
    runtime.desk.resolve(packet_id, "Alex", "done")
    assert runtime.desk.status(cid).status == "resolved"
    runtime.resolver.send(cid, "thanks!")
    assert runtime.desk.status(cid).status == "bot"
    assert seen == [("bot", "queued"), ("queued", "claimed"), ("claimed", "resolved"), ("resolved", "bot")]


def test_the_turn_limit_counts_from_the_return_to_the_bot(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pack is the session's, shared: monkeypatch puts the limit back.
    monkeypatch.setattr(runtime.resolver.deps.pack.policy.limits, "max_customer_turns", 3)
    cid = runtime.resolver.start("chat")
    runtime.resolver.send(cid, "hello")
    runtime.resolver.send(cid, "my vpn keeps disconnecting every few minutes")
    first = runtime.resolver.send(cid, "let me talk to a human")
    assert first.handoff is not None and "turn_limit" not in first.reasons
    runtime.desk.claim(str(first.handoff["packet_id"]), "Alex")
    runtime.desk.return_to_bot(str(first.handoff["packet_id"]), "Alex", "a VPN matter the bot can walk through")
    # Three turns earlier count for nothing now: the bot answers up to the limit again.
    answers = [runtime.resolver.send(cid, text) for text in ("my vpn keeps disconnecting", "no", "no")]
    assert all(a.handoff is None for a in answers), [a.reasons for a in answers]
    over = runtime.resolver.send(cid, "still the same")
    assert over.handoff is not None and "turn_limit" in over.reasons


def test_return_moves_the_graph_out_of_handed_off(runtime: Runtime) -> None:
    cid, packet_id = handoff(runtime)
    runtime.desk.claim(packet_id, "Alex")
    assert runtime.resolver.send(cid, "still there?").replies == []
    runtime.desk.return_to_bot(packet_id, "Alex", "password only")
    state = runtime.resolver.view(cid)
    assert state["stage"] == "triage" and state["handoff"] is None
    snapshot = runtime.resolver.graph.get_state(runtime.resolver._config(cid))
    assert snapshot.next == ()  # nothing left to run: recover() has nothing to finish
    assert runtime.resolver.recover() == []
    answer = runtime.resolver.send(cid, "I forgot my password")
    assert answer.replies and answer.stage != "handed_off"
    assert runtime.desk.status(cid).status == "bot"


def test_technician_lines_reach_the_log_and_the_reply_hook(runtime: Runtime) -> None:
    cid, packet_id = handoff(runtime)
    sent = []
    runtime.desk.on_reply.append(sent.append)
    with pytest.raises(DeskConflict, match="not claimed"):
        runtime.desk.reply(packet_id, "Alex", "hello")
    runtime.desk.claim(packet_id, "Alex")
    line = runtime.desk.reply(packet_id, "Alex", "Call me on +44 20 7946 0958")
    assert line.role == "technician" and line.author == "Alex" and "[phone]" in line.text
    assert [s.text for s in sent] == ["Call me on +44 20 7946 0958"]
    lines = runtime.messages.lines(cid)
    assert [entry.role for entry in lines] == ["customer", "bot", "system", "technician"]
    assert [entry.seq for entry in lines] == [1, 2, 3, 4]
    assert runtime.desk.ticket(packet_id).first_response_at is not None


def test_catch_up_mirrors_missing_lines_and_keeps_resolved(runtime: Runtime) -> None:
    cid, packet_id = handoff(runtime)
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.resolve(packet_id, "Alex")
    before = runtime.messages.lines(cid)
    runtime.desk.catch_up(cid, runtime.resolver.view(cid))
    assert runtime.messages.lines(cid) == before
    assert runtime.desk.status(cid).status == "resolved"
    # A log that lost its lines (a kill before the write) is filled from the checkpoint, once.
    other = runtime.resolver.start("chat")
    values = runtime.resolver.view(other)
    runtime.resolver.after_turn.clear()
    runtime.resolver.send(other, "let me talk to a human")
    assert runtime.messages.lines(other) == [] and values == {}
    runtime.desk.catch_up(other, runtime.resolver.view(other))
    runtime.desk.catch_up(other, runtime.resolver.view(other))
    assert [entry.role for entry in runtime.messages.lines(other)] == ["customer", "bot"]
    assert runtime.desk.status(other).status == "queued"


def test_two_replicas_claim_a_ticket_once_and_its_holder_works_it_through_either(
    db_target: DatabaseTarget, clock: Clock
) -> None:
    queue = HandoffQueue(db_target, clock)
    reopened: list[tuple[str, str]] = []

    def replica() -> Desk:
        log = MessageLog(db_target, clock)
        return Desk(db_target, clock, HandoffQueue(db_target, clock), log, reopen=lambda c, s: reopened.append((c, s)))

    a, b = replica(), replica()
    winners = []
    for n in range(6):
        cid = f"c{n}"
        packet = handoff_packet("my monitor flickers", packet_id=f"HO-{n}")
        queue.put(packet.model_copy(update={"conversation_id": cid, "created_at": clock()}))
        a.after_turn(cid, {"stage": "handed_off", "handoff": {"packet_id": packet.packet_id}, "transcript": []})
        assert b.status(cid) == ConversationStatus("queued", packet.packet_id)
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def claim(
            desk: Desk,
            name: str,
            pid: str = packet.packet_id,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                desk.claim(pid, name)
                outcomes[name] = "won"
            except DeskConflict:
                outcomes[name] = "refused"

        threads = [threading.Thread(target=claim, args=args) for args in ((a, "Alex"), (b, "Sam"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes.values()) == ["refused", "won"], outcomes
        winners.append(next(name for name, outcome in outcomes.items() if outcome == "won"))
        assert a.ticket(packet.packet_id).claimed_by == b.ticket(packet.packet_id).claimed_by == winners[-1]

    # Claimed through one replica, answered and resolved through the other.
    holder, other = (a, b) if winners[0] == "Alex" else (b, a)
    other.reply("HO-0", winners[0], "Hi, I am on it.")
    assert holder.ticket("HO-0").first_response_at == clock()
    other.resolve("HO-0", winners[0], "replaced the cable")
    assert holder.status("c0") == ConversationStatus("resolved", "HO-0", winners[0])
    assert [e["action"] for e in holder.events("HO-0")] == ["queued", "claimed", "replied", "resolved"]
    assert reopened == [("c0", "resolved")]
    assert [t.packet.packet_id for t in holder.tickets()] == [f"HO-{n}" for n in range(1, 6)]
