"""A runbook with `verify: otp_sms`: the line's number, a code texted through the pack's tools, then the tool.

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

from app.runtime import Runtime, open_runtime
from core.settings import Settings
from tests.conftest import Clock
from tests.fakes import HashingEmbedder
from tools.verification import SMS_SENT

API = "https://api.mobile.test"
LINE = {"account_id": "line-7001", "phone": "+44 7700 900123", "date_of_birth": "1990-04-03"}

TOOLS = """base_url: ${TIERONE_MOBILE_API_URL}
tools:
  - name: find_line_by_phone
    description: Find a line by its phone number.
    method: GET
    url: /lines/by-phone/{phone}
    arguments: {type: object, properties: {phone: {type: string}}, required: [phone]}
  - name: send_sms
    description: Text a one-time code to a phone number.
    method: POST
    url: /sms
    arguments:
      type: object
      properties: {phone: {type: string}, code: {type: string}}
      required: [phone, code]
    changes: true
  - name: top_up_data
    description: Add a data bundle to the verified customer's line.
    method: POST
    url: /lines/{account_id}/top-ups
    arguments: {type: object, properties: {account_id: {type: string}}, required: [account_id]}
    needs_verified: true
    changes: true
"""

RUNBOOK = """---
id: {id}
title: {title}
category: mobile
tier: 1
examples: [{examples}]
{extra}---
What it covers.

## Steps
1. {step}
2. Restart the phone.

## Check
Does it work now?
"""


def write_pack(root: Path) -> Path:
    root.mkdir()
    (root / "tools.yaml").write_text(TOOLS, encoding="utf-8")
    (root / "policy.yaml").write_text(
        "routing: {scorer: nearest, min_score: 0.5, clarify_floor: 0.3}\n"
        "verification: {otp_sms: {lookup: find_line_by_phone, send: send_sms}}\n",
        encoding="utf-8",
    )
    (root / "top-up.md").write_text(
        RUNBOOK.format(
            id="data-top-up",
            title="Data allowance used up",
            examples="my data allowance is used up, out of data buy more gigabytes",
            extra="verify: otp_sms\ntools: [top_up_data]\n",
            step="[tool: top_up_data] A data bundle was added to your line.",
        ),
        encoding="utf-8",
    )
    (root / "signal.md").write_text(
        RUNBOOK.format(
            id="no-signal",
            title="No signal",
            examples="no signal bars at all, antenna mast down nearby",
            extra="",
            step="Turn airplane mode on and off.",
        ),
        encoding="utf-8",
    )
    return root


@pytest.fixture
def runtime(tmp_path: Path, clock: Clock) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        runbooks=write_pack(tmp_path / "pack"),
        tool_values={"TIERONE_MOBILE_API_URL": API},
        vault_key="x" * 43 + "=",
    )
    runtime = open_runtime(settings, clock=clock, embedder=HashingEmbedder(), tool_client=httpx.Client())
    yield runtime
    runtime.close()


def serve(router: respx.MockRouter, sms_status: int = 202) -> tuple[respx.Route, respx.Route]:
    def find(request: httpx.Request) -> httpx.Response:
        number = re.sub(r"\D", "", request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json=LINE) if number.endswith("7700900123") else httpx.Response(404, json={})

    router.get(url__regex=rf"{API}/lines/by-phone/.*").mock(side_effect=find)
    sms = router.post(f"{API}/sms").mock(return_value=httpx.Response(sms_status, json={"queued": True}))
    top_up = router.post(f"{API}/lines/line-7001/top-ups").mock(return_value=httpx.Response(200, json={"gb": 1}))
    return sms, top_up


def texted_code(sms: respx.Route) -> str:
    return str(json.loads(sms.calls[-1].request.content)["code"])


@respx.mock
def test_a_code_texted_to_the_line_verifies_and_the_tool_acts_on_that_line(runtime: Runtime) -> None:
    sms, top_up = serve(respx.mock)
    cid = runtime.resolver.start()
    first = runtime.resolver.send(cid, "my data allowance is used up")
    assert "mobile number of the line" in first.replies[-1]
    sent = runtime.resolver.send(cid, "it's 07700 900123")
    assert sent.replies == [SMS_SENT] and sent.stage == "code"
    # Texted to the number on file, not to the one typed.
    assert json.loads(sms.calls[0].request.content)["phone"] == "+44 7700 900123"
    done = runtime.resolver.send(cid, texted_code(sms))
    assert top_up.call_count == 1 and "A data bundle was added to your line." in done.replies[-1]
    state = runtime.resolver.view(cid)
    assert state["customer"]["account_id"] == "line-7001" and state["customer"]["email"] is None
    # The number stays in the vault: the transcript and the state hold a placeholder and its last digits.
    stored = json.dumps(state["transcript"]) + json.dumps(state["customer"])
    assert "900123" not in stored and "[phone]" in stored


@respx.mock
def test_an_unknown_number_gets_the_same_answer_and_no_text(runtime: Runtime) -> None:
    sms, _ = serve(respx.mock)
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my data allowance is used up")
    sent = runtime.resolver.send(cid, "07700 111111")
    assert sent.replies == [SMS_SENT] and sms.call_count == 0
    replies = [runtime.resolver.send(cid, code) for code in ("123456", "234567", "345678")]
    assert replies[-1].stage == "handed_off"
    assert replies[-1].handoff is not None and replies[-1].handoff["reasons"] == ["verification_failed"]


@respx.mock
def test_a_failing_sms_api_hands_off_with_tool_failed(runtime: Runtime) -> None:
    serve(respx.mock, sms_status=500)
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my data allowance is used up")
    result = runtime.resolver.send(cid, "07700 900123")
    assert result.stage == "handed_off"
    assert result.handoff is not None and result.handoff["reasons"] == ["tool_failed"]
    packet = runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])
    assert [(a.tool, a.result) for a in packet.attempts if a.kind == "tool"] == [("send_code", {"status": 500})]
