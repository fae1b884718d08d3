"""Streamed replies against respx SSE bodies in the chat-completions chunk format, and the policy's LLM checks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from agent.brains.base import ReplyContext
from agent.brains.llm import LLMBrain
from agent.brains.offline import OfflineBrain
from agent.brains.streaming import Delta, stream_reply
from agent.nodes import runbook_facts
from agent.policy import Facts, decide
from agent.state import Decision, Scored, Understanding
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.llm_wire import URL, body, sse, sse_body
from vectorstore.index import RunbookIndex


def step_ctx(brain: LLMBrain, action: str = "present_step") -> ReplyContext:
    rb = brain._index.pack.runbooks["password-reset"]
    decision = Decision(action=action, reasons=["step_presented"], runbook_id=rb.id)  # type: ignore[arg-type]
    return ReplyContext(decision=decision, runbook=rb, step=1)


def run(brain: LLMBrain, ctx: ReplyContext) -> tuple[list[Delta], str, bool]:
    deltas: list[Delta] = []
    reply = stream_reply(brain, ctx, deltas.append)
    return deltas, reply.text, reply.fallback


def test_sentences_are_released_as_they_complete(brain: LLMBrain, api: respx.MockRouter) -> None:
    pieces = ["Open the link ", "in a private ", "window. ", "Can you sign", " in now?"]
    route = api.post(URL).mock(return_value=sse(pieces, prompt=210, done=33))
    stream = brain.reply_stream(step_ctx(brain))
    deltas = list(stream)
    assert [d.text for d in deltas] == [
        "Open the link in a private window. ",
        "Can you sign in now?",
        " [password-reset]",
    ]
    assert stream.reply is not None and not stream.reply.fallback
    assert stream.reply.text == "".join(d.text for d in deltas)
    assert stream.reply.usage.prompt_tokens == 210 and stream.reply.usage.completion_tokens == 33
    sent = body(route.calls[0].request)
    assert sent["stream"] is True and sent["model"] == "gpt-4.1-mini"
    assert sent["messages"][0]["role"] == "system"


def test_first_delta_leaves_before_the_model_has_finished(brain: LLMBrain, api: respx.MockRouter) -> None:
    raw = sse_body(["Open the link in a private window. ", "Can you sign in now? ", "[password-reset]"])
    events = [e + b"\n\n" for e in raw.split(b"\n\n") if e]
    served: list[int] = []

    class Chunks(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for i, event in enumerate(events):
                served.append(i)
                yield event

    api.post(URL).mock(return_value=httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks()))
    stream = brain.reply_stream(step_ctx(brain))
    first = next(iter(stream))
    assert first.text == "Open the link in a private window. "
    assert len(served) < len(events)  # the rest of the answer was still to come
    rest = list(stream)
    assert stream.reply is not None and not stream.reply.fallback
    assert "".join(d.text for d in [first, *rest]) == stream.reply.text


def test_a_later_ungrounded_sentence_replaces_what_was_shown(brain: LLMBrain, api: respx.MockRouter) -> None:
    ctx = step_ctx(brain)
    pieces = ["Open the link in a private window. ", "If it fails call +44 20 7946 0958. ", "Can you sign in?"]
    api.post(URL).mock(return_value=sse(pieces))
    deltas, text, fallback = run(brain, ctx)
    offline = brain._fallback.text_for(ctx)
    assert deltas[0] == Delta("Open the link in a private window. ")
    assert deltas[-1] == Delta(offline, replace=True)
    assert not any("7946" in d.text for d in deltas)
    assert text == offline and fallback


@pytest.mark.parametrize(
    "response",
    [
        sse([]),
        sse(["   "]),
        httpx.Response(500, json={"error": {"message": "boom"}}),
    ],
    ids=["no-content", "blank", "server-error"],
)
def test_empty_or_failed_streams_fall_back(brain: LLMBrain, api: respx.MockRouter, response: httpx.Response) -> None:
    ctx = step_ctx(brain)
    api.post(URL).mock(return_value=response)
    deltas, text, fallback = run(brain, ctx)
    assert deltas == [Delta(brain._fallback.text_for(ctx), replace=True)]
    assert fallback and text == brain._fallback.text_for(ctx)


def test_a_stream_cut_off_mid_way_is_replaced(brain: LLMBrain, api: respx.MockRouter) -> None:
    raw = sse_body(["Open the link in a private window. ", "Can you sign in now?"])
    head = raw.split(b"\n\n")[:2]

    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for event in head:
                yield event + b"\n\n"
            raise httpx.ReadError("connection reset by peer")

    api.post(URL).mock(return_value=httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken()))
    ctx = step_ctx(brain)
    deltas, text, fallback = run(brain, ctx)
    assert deltas[-1].replace and fallback and text == brain._fallback.text_for(ctx)


def test_rate_limit_before_the_stream_is_retried(brain: LLMBrain, api: respx.MockRouter) -> None:
    limited = httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}})
    route = api.post(URL).mock(side_effect=[limited, sse(["Open the link in a private window. Can you sign in?"])])
    deltas, text, fallback = run(brain, step_ctx(brain))
    assert route.call_count == 2 and not fallback
    assert text.endswith("[password-reset]")


def test_verbatim_actions_stream_as_one_delta_without_a_call(brain: LLMBrain, api: respx.MockRouter) -> None:
    route = api.post(URL).mock(return_value=sse(["Call +1 555 0100"]))
    ctx = step_ctx(brain, "ask_code")
    deltas, text, _ = run(brain, ctx)
    assert route.call_count == 0
    assert deltas == [Delta(brain._fallback.text_for(ctx))]


def test_offline_brain_streams_its_whole_reply(bundled_index: RunbookIndex) -> None:
    offline = OfflineBrain(bundled_index)
    rb = bundled_index.pack.runbooks["password-reset"]
    ctx = ReplyContext(
        decision=Decision(action="present_step", reasons=["step_presented"], runbook_id=rb.id), runbook=rb
    )
    deltas: list[Delta] = []
    reply = stream_reply(offline, ctx, deltas.append)
    assert deltas == [Delta(reply.text)]


# -- the policy's judgement of LLM proposals ----------------------------------------------------------

PACK = load_pack(BUNDLED_RUNBOOKS)
FACTS = runbook_facts(PACK)
CANDIDATES = [Scored(runbook_id="password-reset", score=0.62), Scored(runbook_id="account-lockout", score=0.55)]


def judged(stage: str = "triage", **understanding: object) -> Decision:
    fields: dict[str, object] = {"text": "I can't get in", "candidates": CANDIDATES, **understanding}
    return decide(Facts(stage=stage, understanding=Understanding(**fields), runbooks=FACTS), PACK.policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("understanding", "action", "reason"),
    [
        ({"proposed_runbook": "account-lockout", "proposal_confidence": 0.9}, "ask_identity", "llm_proposal_accepted"),
        (
            {"proposed_runbook": "delete-everything", "proposal_confidence": 0.99},
            "ask_identity",
            "llm_proposal_refused",
        ),
        ({"proposed_runbook": "vpn-connection", "proposal_confidence": 0.99}, "ask_identity", "llm_proposal_refused"),
        ({"proposed_runbook": "", "proposal_confidence": 0.9}, "handoff", "llm_proposal_accepted"),
        ({"proposed_runbook": "account-lockout", "manipulation": True, "proposal_confidence": 0.9}, "handoff", None),
        ({"degraded": True}, "ask_identity", "llm_unavailable"),
        ({"degraded": True, "language": "de"}, "handoff", "llm_unavailable"),
    ],
    ids=["accepted", "unknown-runbook", "outside-candidates", "nothing-fits", "manipulation", "down-en", "down-de"],
)
def test_policy_disposes_of_proposals(understanding: dict[str, object], action: str, reason: str | None) -> None:
    decision = judged(**understanding)
    assert decision.action == action
    if reason:
        assert reason in decision.reasons
    if understanding.get("manipulation"):
        assert decision.reasons[0] == "manipulation_suspected"
    if understanding.get("language") == "de":
        assert decision.reasons == ["llm_unavailable"]
    if "refused" in (reason or ""):
        assert decision.runbook_id == "password-reset"
