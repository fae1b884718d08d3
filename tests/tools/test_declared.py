"""Tools a pack declares (tools.yaml), run over HTTP: respx serves the API in its real wire format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import respx

from app.runtime import Runtime, open_runtime
from core.errors import NotAuthorized
from core.pack import load_pack
from core.settings import Settings
from tests.conftest import Clock, latest_code
from tests.fakes import HashingEmbedder
from tools.actions import Limits, Toolbox
from tools.base import make_verified
from tools.declared import DeclaredRunner
from tools.ledger import Ledger
from tools.outbox import FileOutbox
from tools.sqlite_backend import SqliteDirectory

API = "https://api.mobile.test/v1"

TOOLS = """base_url: ${TIERONE_MOBILE_API_URL}
headers:
  Authorization: Bearer ${TIERONE_MOBILE_API_TOKEN}
tools:
  - name: top_up_data
    description: Add a data bundle to the verified customer's line.
    method: POST
    url: /lines/{account_id}/top-ups
    arguments:
      type: object
      properties:
        account_id: {type: string}
        gb: {type: integer, minimum: 1, maximum: 2, default: 1}
      required: [account_id]
    needs_verified: true
    changes: true
    quote: [gb, data_left_gb]
  - name: line_status
    description: Read whether the network has an outage in an area.
    method: GET
    url: /network/status
    arguments:
      type: object
      properties:
        area: {type: string, default: national}
"""

RUNBOOK = """---
id: {id}
title: {title}
category: mobile
tier: 1
examples: [{examples}]
verify: {verify}
tools: [{tool}]
---
What it covers.

## Steps
1. [tool: {tool}] {say}
2. Restart the phone.

## Check
Does it work now?
"""


def write_pack(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tools.yaml").write_text(TOOLS, encoding="utf-8")
    (root / "top-up.md").write_text(
        RUNBOOK.format(
            id="data-top-up",
            title="Data allowance used up",
            examples="my data allowance is used up, out of data buy more gigabytes, top up mobile data bundle",
            verify="otp",
            tool="top_up_data",
            say="A data bundle was added to your line.",
        ),
        encoding="utf-8",
    )
    (root / "outage.md").write_text(
        RUNBOOK.format(
            id="network-outage",
            title="No signal anywhere",
            examples="no signal bars at all, network outage in my town, antenna mast down nearby",
            verify="none",
            tool="line_status",
            say="I checked the network.",
        ),
        encoding="utf-8",
    )
    (root / "policy.yaml").write_text(
        "routing: {scorer: nearest, min_score: 0.5, clarify_floor: 0.3}\n", encoding="utf-8"
    )
    return root


VALUES = {"TIERONE_MOBILE_API_URL": API, "TIERONE_MOBILE_API_TOKEN": "tok-123"}


@pytest.fixture
def toolbox(tmp_path: Path, clock: Clock) -> Toolbox:
    pack = load_pack(write_pack(tmp_path / "pack"))
    assert pack.tools is not None
    return Toolbox(
        directory=SqliteDirectory(tmp_path / "desk.sqlite", clock),
        status_page=SqliteDirectory(tmp_path / "desk.sqlite", clock),
        outbox=FileOutbox(tmp_path / "outbox", clock),
        ledger=Ledger(tmp_path / "desk.sqlite", clock),
        clock=clock,
        limits=Limits(account_actions_per_day=2),
        declared=DeclaredRunner(pack.tools, VALUES, httpx.Client()),
    )


def jane(toolbox: Toolbox, cid: str = "c_1") -> object:
    return make_verified("acc-1001", "jane.doe@example.com", toolbox.clock(), cid)


@respx.mock
def test_a_change_goes_out_once_per_key_with_settings_filled_in(toolbox: Toolbox) -> None:
    route = respx.post(f"{API}/lines/acc-1001/top-ups").mock(
        return_value=httpx.Response(201, json={"gb": 1, "data_left_gb": 1.0, "contact": "+44 7700 900123"})
    )
    account = jane(toolbox)
    first = toolbox.run("top_up_data", key="c_1:t4:s0", conversation_id="c_1", account=account)  # type: ignore[arg-type]
    again = toolbox.run("top_up_data", key="c_1:t4:s0", conversation_id="c_1", account=account)  # type: ignore[arg-type]
    assert route.call_count == 1
    request = route.calls[0].request
    assert request.headers["Authorization"] == "Bearer tok-123"
    assert request.headers["Idempotency-Key"] == "c_1:t4:s0"
    # The account comes from the verification, the size from the schema's default.
    assert json.loads(request.content) == {"gb": 1}
    assert first.ok and again.replayed and again.data == first.data
    assert first.message == "(gb: 1; data left gb: 1.0.)"
    # Stored redacted: the phone number in the answer never reaches the ledger.
    assert "7700" not in json.dumps(first.data)
    assert [row["outcome"] for row in toolbox.ledger.audit("c_1")] == ["ok"]


@respx.mock
def test_a_change_takes_the_slots_filled_so_far_but_never_the_account_from_one(toolbox: Toolbox) -> None:
    route = respx.post(f"{API}/lines/acc-1001/top-ups").mock(
        return_value=httpx.Response(200, json={"gb": 2, "data_left_gb": 2.0})
    )
    account = jane(toolbox)
    slots = {"gb": 2, "account_id": "acc-1002", "abroad": False}
    result = toolbox.run("top_up_data", key="c_1:t6:s2", conversation_id="c_1", account=account, args={"slots": slots})  # type: ignore[arg-type]
    assert result.ok and route.call_count == 1
    # The customer's 2 GB reaches the API; the line is the verified one's, not the slot's.
    assert json.loads(route.calls[0].request.content) == {"gb": 2}


@respx.mock
def test_a_read_sends_its_arguments_as_a_query_and_no_idempotency_header(toolbox: Toolbox) -> None:
    route = respx.get(f"{API}/network/status").mock(return_value=httpx.Response(200, json={"state": "ok"}))
    result = toolbox.run("line_status", key="k1", conversation_id="c_1", args={"area": "leeds", "text": "x"})
    assert result.ok
    request = route.calls[0].request
    assert dict(request.url.params) == {"area": "leeds"}  # only what the schema declares goes out
    assert "Idempotency-Key" not in request.headers


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (httpx.Response(503, text="upstream timeout at db-7 (stack trace...)"), 503),
        (httpx.Response(404, json={"error": "no such line"}), 404),
        (httpx.Response(200, text="<html>maintenance</html>"), 200),
        (httpx.Response(200, json=["not", "an", "object"]), 200),
    ],
)
@respx.mock
def test_errors_and_garbage_fail_with_the_status_and_no_raw_output(
    toolbox: Toolbox, response: httpx.Response, status: int
) -> None:
    respx.post(f"{API}/lines/acc-1001/top-ups").mock(return_value=response)
    result = toolbox.run("top_up_data", key="k", conversation_id="c_1", account=jane(toolbox))  # type: ignore[arg-type]
    assert not result.ok and result.data == {"status": status} and result.message == ""
    assert result.error is not None and "db-7" not in result.error and "maintenance" not in result.error
    assert [row["outcome"] for row in toolbox.ledger.audit("c_1")] == ["failed"]


@respx.mock
def test_an_unreachable_api_fails_with_no_status(toolbox: Toolbox) -> None:
    respx.get(f"{API}/network/status").mock(side_effect=httpx.ConnectError("refused"))
    result = toolbox.run("line_status", key="k", conversation_id="c_1")
    assert not result.ok and result.data == {"status": None}
    assert result.error == "line_status: the API could not be reached (ConnectError)"


def test_a_tool_needing_a_verified_customer_refuses_without_one(toolbox: Toolbox) -> None:
    with pytest.raises(NotAuthorized, match="top_up_data needs the verified account"):
        toolbox.run("top_up_data", key="k", conversation_id="c_1")
    other = make_verified("acc-1001", "jane.doe@example.com", toolbox.clock(), "c_other")
    with pytest.raises(NotAuthorized):
        toolbox.run("top_up_data", key="k2", conversation_id="c_1", account=other)


@respx.mock
def test_declared_changes_count_against_the_daily_limit(toolbox: Toolbox) -> None:
    route = respx.post(f"{API}/lines/acc-1001/top-ups").mock(return_value=httpx.Response(200, json={"gb": 1}))
    account = jane(toolbox)
    results = [
        toolbox.run("top_up_data", key=f"k{i}", conversation_id="c_1", account=account)  # type: ignore[arg-type]
        for i in range(3)
    ]
    assert [r.ok for r in results] == [True, True, False]
    assert results[2].error is not None and results[2].error.startswith("rate limited")
    assert route.call_count == 2


@respx.mock
def test_arguments_that_break_the_schema_are_not_sent(toolbox: Toolbox) -> None:
    route = respx.post(f"{API}/lines/acc-1001/top-ups")
    account = jane(toolbox)
    result = toolbox.run("top_up_data", key="k", conversation_id="c_1", account=account, args={"gb": 5})  # type: ignore[arg-type]
    assert not result.ok and route.call_count == 0
    assert result.error is not None and "gb: 5 is greater than the maximum of 2" in result.error


def test_a_missing_setting_is_named(tmp_path: Path, toolbox: Toolbox) -> None:
    assert toolbox.declared is not None
    toolbox.declared = DeclaredRunner(toolbox.declared.declared, {}, httpx.Client())
    result = toolbox.run("line_status", key="k", conversation_id="c_1")
    assert result.error == "base_url refers to TIERONE_MOBILE_API_URL, which is not set; set it in the environment"


@pytest.fixture
def mobile_runtime(tmp_path: Path, clock: Clock) -> Runtime:
    settings = Settings(data_dir=tmp_path / "data", runbooks=write_pack(tmp_path / "pack"), tool_values=VALUES)
    return open_runtime(settings, clock=clock, embedder=HashingEmbedder(), tool_client=httpx.Client())


def talk(runtime: Runtime, cid: str, *turns: str) -> list[str]:
    replies: list[str] = []
    for turn in turns:
        text = latest_code(runtime, cid) if turn == "{otp}" else turn
        replies += runtime.resolver.send(cid, text).replies
    return replies


@respx.mock
def test_a_conversation_runs_the_declared_tool_after_verification(mobile_runtime: Runtime) -> None:
    route = respx.post(f"{API}/lines/acc-1001/top-ups").mock(
        return_value=httpx.Response(200, json={"gb": 1, "data_left_gb": 1.0})
    )
    cid = mobile_runtime.resolver.start()
    talk(mobile_runtime, cid, "my data allowance is used up", "jane.doe@example.com")
    replies = talk(mobile_runtime, cid, "{otp}")
    assert route.call_count == 1
    assert "A data bundle was added to your line." in replies[-1] and "data left gb: 1.0" in replies[-1]


@respx.mock
def test_a_failing_declared_tool_hands_off_with_tool_failed_and_its_status(mobile_runtime: Runtime) -> None:
    respx.post(f"{API}/lines/acc-1001/top-ups").mock(
        return_value=httpx.Response(502, text="Bad gateway: upstream billing-7 stack trace")
    )
    cid = mobile_runtime.resolver.start()
    talk(mobile_runtime, cid, "my data allowance is used up", "jane.doe@example.com")
    result = mobile_runtime.resolver.send(cid, latest_code(mobile_runtime, cid))
    assert result.stage == "handed_off"
    assert result.handoff is not None and result.handoff["reasons"] == ["tool_failed"]
    assert not any(re.search(r"billing-7|stack trace|502", reply) for reply in result.replies)
    packet = mobile_runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])
    tool_runs = [a for a in packet.attempts if a.kind == "tool" and a.tool == "top_up_data"]
    assert [(a.ok, a.result) for a in tool_runs] == [(False, {"status": 502})]
    assert packet.runbook_id == "data-top-up"
