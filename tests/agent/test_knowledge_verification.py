"""A runbook with `verify: knowledge`: the line's number and a date of birth, matched against the record.

The pack's API is served by respx in its real wire format; routing uses the hashing embedder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from pydantic import SecretStr

from app.runtime import Runtime, open_runtime
from core.pack import lint_pack
from core.settings import Settings
from tests.agent.test_sms_verification import API, LINE, RUNBOOK, TOOLS
from tests.conftest import Clock
from tests.fakes import HashingEmbedder

POLICY = (
    "routing: {scorer: nearest, min_score: 0.5, clarify_floor: 0.3}\n"
    "verification: {knowledge: {lookup: find_line_by_phone, fields: [phone, date_of_birth]}}\n"
)


def write_pack(root: Path, policy: str = POLICY) -> Path:
    root.mkdir()
    (root / "tools.yaml").write_text(TOOLS, encoding="utf-8")
    (root / "policy.yaml").write_text(policy, encoding="utf-8")
    (root / "top-up.md").write_text(
        RUNBOOK.format(
            id="data-top-up",
            title="Data allowance used up",
            examples="my data allowance is used up, out of data buy more gigabytes",
            extra="verify: knowledge\ntools: [top_up_data]\n",
            step="[tool: top_up_data] A data bundle was added to your line.",
        ),
        encoding="utf-8",
    )
    return root


@pytest.fixture
def runtime(tmp_path: Path, clock: Clock) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        runbooks=write_pack(tmp_path / "pack"),
        tool_values={"TIERONE_MOBILE_API_URL": SecretStr(API)},
        vault_key=SecretStr("x" * 43 + "="),
    )
    runtime = open_runtime(settings, clock=clock, embedder=HashingEmbedder(), tool_client=httpx.Client())
    yield runtime
    runtime.close()


def serve(router: respx.MockRouter, lookup_status: int = 200) -> tuple[respx.Route, respx.Route]:
    def find(request: httpx.Request) -> httpx.Response:
        if lookup_status != 200:
            return httpx.Response(lookup_status, json={"error": "down"})
        number = re.sub(r"\D", "", request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json=LINE) if number.endswith("7700900123") else httpx.Response(404, json={})

    lookup = router.get(url__regex=rf"{API}/lines/by-phone/.*").mock(side_effect=find)
    top_up = router.post(f"{API}/lines/line-7001/top-ups").mock(return_value=httpx.Response(200, json={"gb": 1}))
    return lookup, top_up


@respx.mock
def test_the_right_number_and_birth_date_verify_and_the_tool_acts_on_that_line(runtime: Runtime) -> None:
    lookup, top_up = serve(respx.mock)
    cid = runtime.resolver.start()
    first = runtime.resolver.send(cid, "my data allowance is used up")
    assert first.stage == "identity" and "date of birth" in first.replies[-1]
    done = runtime.resolver.send(cid, "07700 900123, born 3 April 1990")
    assert lookup.call_count == 1 and top_up.call_count == 1
    assert "A data bundle was added to your line." in done.replies[-1]
    state = runtime.resolver.view(cid)
    assert state["customer"]["account_id"] == "line-7001"
    # Neither the number nor the date sits in clear in the transcript, the state or the checkpoint.
    stored = json.dumps(state, default=str)
    assert "900123" not in stored and "1990" not in stored and "April" not in stored
    assert "[dob]" in json.dumps(state["transcript"])


@respx.mock
def test_a_bare_date_is_held_as_a_birth_date_only_when_asked_for(runtime: Runtime) -> None:
    _, top_up = serve(respx.mock)
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my data allowance is used up")
    runtime.resolver.send(cid, "+44 7700 900123 03/04/1990")
    assert top_up.call_count == 1
    assert "03/04/1990" not in json.dumps(runtime.resolver.view(cid), default=str)


@respx.mock
def test_a_wrong_date_and_an_unknown_number_get_the_same_answer_then_a_handoff(runtime: Runtime) -> None:
    _, top_up = serve(respx.mock)
    wrong, unknown = runtime.resolver.start(), runtime.resolver.start()
    for cid in (wrong, unknown):
        runtime.resolver.send(cid, "my data allowance is used up")
    by_wrong = runtime.resolver.send(wrong, "07700 900123, date of birth 04/03/1991")
    by_unknown = runtime.resolver.send(unknown, "07700 111222, date of birth 03/04/1990")
    assert by_wrong.replies == by_unknown.replies and by_wrong.stage == by_unknown.stage == "identity"
    assert "doesn't match" in by_wrong.replies[-1] and top_up.call_count == 0
    last = [runtime.resolver.send(wrong, "07700 900123, born 1 January 1980") for _ in range(2)][-1]
    assert last.stage == "handed_off"
    assert last.handoff is not None and last.handoff["reasons"] == ["verification_failed"]
    assert top_up.call_count == 0


@respx.mock
def test_a_failing_lookup_hands_off_with_tool_failed_and_its_status(runtime: Runtime) -> None:
    serve(respx.mock, lookup_status=500)
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my data allowance is used up")
    result = runtime.resolver.send(cid, "07700 900123, born 3 April 1990")
    assert result.stage == "handed_off"
    assert result.handoff is not None and result.handoff["reasons"] == ["tool_failed"]
    packet = runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])
    assert [(a.tool, a.result) for a in packet.attempts if a.kind == "tool"] == [("verify_identity", {"status": 500})]


def test_lint_refuses_knowledge_facts_a_chat_cannot_hold(tmp_path: Path) -> None:
    policy = POLICY.replace("[phone, date_of_birth]", "[phone, postcode]")
    _, problems = lint_pack(write_pack(tmp_path / "pack", policy))
    assert [(p.field, "postcode" in p.message) for p in problems] == [("verify", True)]


@respx.mock
def test_facts_given_with_the_problem_verify_at_once(runtime: Runtime) -> None:
    _, top_up = serve(respx.mock)
    cid = runtime.resolver.start()
    done = runtime.resolver.send(cid, "my data allowance is used up, line 07700 900123, date of birth 3 April 1990")
    assert top_up.call_count == 1 and "A data bundle was added to your line." in done.replies[-1]
    assert "1990" not in json.dumps(runtime.resolver.view(cid), default=str)
