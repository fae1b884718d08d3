"""An LLM brain may propose the outcome of an answer the embeddings could not place; the policy disposes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from agent.brains.llm import LLMBrain, LLMConfig
from agent.brains.offline import OfflineBrain
from agent.policy import Facts, RunbookFacts, StepFacts, decide
from agent.state import Understanding
from core.pack import Policy
from tests.llm_wire import URL, text_reply, tool_call
from vectorstore.index import RunbookIndex

OUTCOMES = {"fixed": ["the bars are back"], "no-change": ["still no bars"]}


@pytest.fixture
def brain(bundled_index: RunbookIndex) -> LLMBrain:
    config = LLMConfig(model="gpt-4.1-mini", api_key="sk-test", max_retries=1, timeout_s=2, propose_outcomes=True)
    return LLMBrain(config, bundled_index, OfflineBrain(bundled_index))


def test_off_by_default_nothing_is_asked(bundled_index: RunbookIndex, api: respx.MockRouter) -> None:
    plain = LLMBrain(LLMConfig(model="gpt-4.1-mini", api_key="sk-test"), bundled_index, OfflineBrain(bundled_index))
    route = api.post(URL)
    assert plain.propose_outcome("sorted", "Are the bars back?", OUTCOMES)[:2] == (None, 0.0)
    assert route.call_count == 0


def test_the_model_names_an_outcome(brain: LLMBrain, api: respx.MockRouter) -> None:
    route = api.post(URL).mock(
        return_value=tool_call(json.dumps({"outcome": "fixed", "confidence": 0.9}), name="OutcomeReading")
    )
    name, confidence, usage = brain.propose_outcome("sorted, ta, 4G is showing", "Are the bars back?", OUTCOMES)
    assert (name, confidence) == ("fixed", 0.9)
    assert usage.prompt_tokens == 120
    sent = json.loads(route.calls[0].request.content)
    assert sent["tool_choice"]["function"]["name"] == "OutcomeReading"
    assert json.loads(sent["messages"][1]["content"]) == {
        "question": "Are the bars back?",
        "outcomes": OUTCOMES,
        "customer_answer": "sorted, ta, 4G is showing",
    }


@pytest.mark.parametrize(
    "response",
    [
        tool_call(json.dumps({"outcome": "none", "confidence": 0.8}), name="OutcomeReading"),
        text_reply("I think it is fixed."),
        httpx.Response(500, json={"error": {"message": "boom"}}),
    ],
)
def test_none_no_call_or_an_error_proposes_nothing(
    brain: LLMBrain, api: respx.MockRouter, response: httpx.Response
) -> None:
    api.post(URL).mock(return_value=response)
    assert brain.propose_outcome("hmm", "Are the bars back?", OUTCOMES)[:2] == (None, 0.0)


STEP = StepFacts("airplane", {"fixed": ("resolved", None), "no-change": ("next", None)})
RUNBOOKS = {"r": RunbookFacts("r", 1, False, (None, None), steps=(STEP, StepFacts("restart")))}


def judged(**understanding: object) -> tuple[str, list[str], str | None]:
    facts = Facts(
        stage="confirm", understanding=Understanding(text="x", **understanding), runbooks=RUNBOOKS, runbook_id="r"
    )  # type: ignore[arg-type]
    decision = decide(facts, Policy())
    return decision.action, decision.reasons, decision.outcome


def test_a_sure_proposal_of_a_declared_outcome_is_taken() -> None:
    assert judged(proposed_outcome="fixed", outcome_confidence=0.9) == (
        "close_resolved",
        ["outcome_matched", "customer_confirmed", "llm_proposal_accepted"],
        "fixed",
    )


def test_an_unsure_proposal_asks_again() -> None:
    assert judged(proposed_outcome="fixed", outcome_confidence=0.4) == ("reask_confirmation", ["unclear_answer"], None)


def test_an_outcome_the_step_does_not_have_is_refused() -> None:
    action, reasons, _ = judged(proposed_outcome="refund-issued", outcome_confidence=0.99)
    assert (action, reasons) == ("reask_confirmation", ["unclear_answer", "llm_proposal_refused"])


def test_a_proposal_that_would_resolve_a_no_is_refused() -> None:
    action, reasons, _ = judged(proposed_outcome="fixed", outcome_confidence=0.99, deny=True)
    assert (action, reasons) == ("reask_confirmation", ["unclear_answer", "llm_proposal_refused"])


def test_a_meaning_match_needs_no_proposal() -> None:
    assert judged(outcome="no-change", proposed_outcome="fixed", outcome_confidence=0.99)[0] == "advance_step"


def test_through_the_graph_a_sure_proposal_resolves(bundled_index: RunbookIndex, tmp_path: Path) -> None:
    from app.runtime import open_runtime
    from core.settings import BUNDLED_RUNBOOKS, Settings
    from tests.conftest import Clock
    from tests.llm_wire import reading

    def model(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)
        called = data["tools"][0]["function"]["name"] if data.get("tools") else ""
        if called == "MessageReading":
            return tool_call(reading(runbook_id="wifi-connection", confidence=0.9, affirm=False, deny=False))
        if called == "OutcomeReading":
            return tool_call(json.dumps({"outcome": "fixed", "confidence": 0.9}), name="OutcomeReading")
        return text_reply(json.loads(data["messages"][1]["content"])["draft"])

    settings = Settings(
        data_dir=tmp_path / "data",
        runbooks=BUNDLED_RUNBOOKS,
        brain="llm",
        llm_api_key="sk-test",
        llm_max_retries=1,
        llm_propose_outcomes=True,
    )
    with respx.mock(assert_all_called=False) as router:
        router.post(URL).mock(side_effect=model)
        runtime = open_runtime(settings, clock=Clock(), index=bundled_index)
        cid = runtime.resolver.start()
        runtime.resolver.send(cid, "wifi not working")
        done = runtime.resolver.send(cid, "the little fan symbol has all three curves filled in now")
    assert done.stage == "resolved"
    assert "llm_proposal_accepted" in done.reasons
    answers = [a for a in runtime.resolver.view(cid)["attempts"] if a["kind"] == "answer"]
    assert [(a["outcome"], a["detail"].split("(")[1].split(",")[0]) for a in answers] == [("fixed", "llm")]
