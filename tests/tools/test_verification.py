"""Proving identity by facts on file (knowledge) or by a texted code (otp_sms), through declared tools."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import respx

from core.db import DatabaseTarget
from core.errors import ToolError
from core.pack import lint_pack
from core.pack_tools import DeclaredTools, Knowledge, SmsCode
from tests.conftest import Clock
from tools.declared import DeclaredRunner
from tools.ledger import Ledger
from tools.verification import SMS_SENT, check_sms_code, normalise, send_sms_code, verify_knowledge

API = "https://api.mobile.test"

DECLARED = DeclaredTools.model_validate(
    {
        "base_url": "${TIERONE_MOBILE_API_URL}",
        "tools": [
            {
                "name": "lookup_line",
                "description": "Find a line by its phone number.",
                "method": "GET",
                "url": "/lines/by-phone/{phone}",
                "arguments": {"type": "object", "properties": {"phone": {"type": "string"}}, "required": ["phone"]},
            },
            {
                "name": "send_sms",
                "description": "Text a verification code to a phone number.",
                "method": "POST",
                "url": "/sms",
                "arguments": {
                    "type": "object",
                    "properties": {"phone": {"type": "string"}, "code": {"type": "string"}},
                    "required": ["phone", "code"],
                },
                "changes": True,
            },
        ],
    }
)
KNOWLEDGE = Knowledge(lookup="lookup_line", fields=["phone", "date_of_birth"], max_attempts=2)
LINE = {"account_id": "line-7001", "phone": "+44 7700 900123", "date_of_birth": "1990-04-03", "name": "Ada"}


@pytest.fixture
def runner() -> DeclaredRunner:
    return DeclaredRunner(DECLARED, {"TIERONE_MOBILE_API_URL": API}, httpx.Client())


@pytest.fixture
def ledger(db_target: DatabaseTarget, clock: Clock) -> Ledger:
    return Ledger(db_target, clock)


def serve_lines(router: respx.MockRouter) -> respx.Route:
    def answer(request: httpx.Request) -> httpx.Response:
        phone = request.url.path.rsplit("/", 1)[1]
        if re.sub(r"\D", "", phone).endswith("7700900123"):
            return httpx.Response(200, json=LINE)
        return httpx.Response(404, json={"error": "no line"})

    return router.get(url__regex=rf"{API}/lines/by-phone/.*").mock(side_effect=answer)


@pytest.mark.parametrize(
    ("field", "a", "b"),
    [
        ("phone", "+44 7700 900123", "07700900123"),
        ("phone", "0044-7700-900123", "(07700) 900 123"),
        ("date_of_birth", "3 April 1990", "1990-04-03"),
        ("date_of_birth", "03/04/1990", "1990-04-03"),
        ("postcode", "SW1A  1aa", "sw1a 1AA"),
    ],
)
def test_the_same_fact_written_two_ways_matches(field: str, a: str, b: str) -> None:
    assert normalise(field, a) == normalise(field, b)


def test_different_facts_do_not_match() -> None:
    assert normalise("date_of_birth", "04/03/1990") != normalise("date_of_birth", "1990-04-03")
    assert normalise("phone", "07700 900124") != normalise("phone", "07700 900123")


def knowledge(given: dict[str, str], key: str, runner: DeclaredRunner, ledger: Ledger, clock: Clock) -> object:
    return verify_knowledge(
        given,
        conversation_id="c_1",
        key=key,
        config=KNOWLEDGE,
        account_field="account_id",
        runner=runner,
        ledger=ledger,
        clock=clock,
    )


@respx.mock
def test_knowledge_verifies_when_every_fact_matches(runner: DeclaredRunner, ledger: Ledger, clock: Clock) -> None:
    serve_lines(respx.mock)
    account = knowledge({"phone": "07700 900123", "date_of_birth": "3 April 1990"}, "k1", runner, ledger, clock)
    assert account is not None and account.account_id == "line-7001"  # type: ignore[attr-defined]
    # Nothing of the record is kept: the ledger holds the outcome and the account id only.
    stored = json.dumps(ledger.audit("c_1")) + json.dumps(ledger.finished("k1"))
    assert "1990" not in stored.replace(clock().isoformat(), "") and "Ada" not in stored
    again = knowledge({"phone": "x", "date_of_birth": "y"}, "k1", runner, ledger, clock)  # a replay of the key
    assert again is not None


@respx.mock
def test_wrong_fact_and_unknown_line_answer_alike_then_the_limit_holds(
    runner: DeclaredRunner, ledger: Ledger, clock: Clock
) -> None:
    route = serve_lines(respx.mock)
    wrong_date = knowledge({"phone": "07700 900123", "date_of_birth": "1 Jan 1980"}, "k1", runner, ledger, clock)
    no_line = knowledge({"phone": "07700 111111", "date_of_birth": "3 April 1990"}, "k2", runner, ledger, clock)
    assert wrong_date is None and no_line is None
    assert [r["detail"] for r in ledger.audit("c_1")] == ["did not match", "did not match"]
    # Past max_attempts even the right answer is refused, and nothing more is looked up.
    right = knowledge({"phone": "07700 900123", "date_of_birth": "3 April 1990"}, "k3", runner, ledger, clock)
    assert right is None and route.call_count == 2
    assert ledger.audit("c_1")[-1]["detail"] == "over the attempt limit"


@respx.mock
def test_a_lookup_that_fails_otherwise_than_404_raises_with_its_status(
    runner: DeclaredRunner, ledger: Ledger, clock: Clock
) -> None:
    respx.get(url__regex=rf"{API}/lines/by-phone/.*").mock(return_value=httpx.Response(500))
    with pytest.raises(ToolError) as caught:
        knowledge({"phone": "07700 900123", "date_of_birth": "3 April 1990"}, "k1", runner, ledger, clock)
    assert caught.value.status == 500


def test_a_missing_fact_is_named(runner: DeclaredRunner, ledger: Ledger, clock: Clock) -> None:
    with pytest.raises(ValueError, match="needs date_of_birth"):
        knowledge({"phone": "07700 900123"}, "k1", runner, ledger, clock)


@respx.mock
def test_sms_code_goes_to_the_number_on_file_and_checks_once(
    runner: DeclaredRunner, ledger: Ledger, clock: Clock
) -> None:
    serve_lines(respx.mock)
    sms = respx.post(f"{API}/sms").mock(return_value=httpx.Response(202, json={"queued": True}))
    config = SmsCode(lookup="lookup_line", send="send_sms")
    args = {"conversation_id": "c_1", "config": config, "account_field": "account_id", "runner": runner}
    found = send_sms_code("07700900123", key="s1", ledger=ledger, clock=clock, **args)  # type: ignore[arg-type]
    unknown = send_sms_code("07700111111", key="s2", ledger=ledger, clock=clock, **args)  # type: ignore[arg-type]
    assert found.message == unknown.message == SMS_SENT
    assert sms.call_count == 1
    body = json.loads(sms.calls[0].request.content)
    assert body["phone"] == "+44 7700 900123" and re.fullmatch(r"\d{6}", body["code"])
    # The unknown number dropped the pending code: no code checks now.
    assert check_sms_code(body["code"], conversation_id="c_1", ledger=ledger, clock=clock) is None
    send_sms_code("07700900123", key="s3", ledger=ledger, clock=clock, **args)  # type: ignore[arg-type]
    code = json.loads(sms.calls[1].request.content)["code"]
    assert (
        check_sms_code("000000" if code != "000000" else "111111", conversation_id="c_1", ledger=ledger, clock=clock)
        is None
    )
    verified = check_sms_code(code, conversation_id="c_1", ledger=ledger, clock=clock)
    assert verified is not None and verified.account_id == "line-7001"
    # Not consumed by the check itself: the Toolbox consumes it as it records the result.
    ledger.finish("chk", "c_1", "verify_identity", "line-7001", {}, ok=True, consume_code=True)
    assert check_sms_code(code, conversation_id="c_1", ledger=ledger, clock=clock) is None


POLICY_BAD = """verification:
  knowledge: {lookup: find_line, fields: [phone, date_of_birth]}
  otp_sms: {lookup: lookup_line, send: lookup_line}
"""


def test_lint_checks_the_verification_section_against_the_declared_tools(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "---\nid: a\ntitle: No data\ncategory: c\ntier: 2\nexamples: [no data]\n---\nx\n", encoding="utf-8"
    )
    (tmp_path / "tools.yaml").write_text(json.dumps(DECLARED.model_dump(exclude_defaults=True)), encoding="utf-8")
    (tmp_path / "policy.yaml").write_text(POLICY_BAD, encoding="utf-8")
    pack, found = lint_pack(tmp_path)
    assert pack is None
    assert [str(p) for p in found] == [
        "policy.yaml: verification.otp_sms.send: 'lookup_line' takes no 'code' argument",
        "policy.yaml: verification.otp_sms.send: 'lookup_line' sends a text: declare it `changes: true`, so one is"
        " sent once per key",
        "policy.yaml: verification.knowledge.lookup: 'find_line' is not a tool of tools.yaml"
        " (declared: lookup_line, send_sms)",
    ]
