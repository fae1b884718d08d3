"""Tools on the embedded backends: idempotency keys, codes, expiry, the status page."""

from __future__ import annotations

import re

import pytest

from app.runtime import Runtime
from tests.conftest import Clock
from tools.base import ServiceStatus, make_verified


def code_of(runtime: Runtime, cid: str) -> str:
    match = re.search(r"\d{6}", runtime.outbox.messages(cid)[-1]["body"])
    assert match
    return match.group(0)


def test_same_key_acts_once(runtime: Runtime) -> None:
    toolbox = runtime.resolver.deps.toolbox
    account = make_verified("acc-1001", "jane.doe@example.com", toolbox.clock(), "c_1")
    first = toolbox.run("reset_password", key="c_1:t3:s0", conversation_id="c_1", account=account)
    again = toolbox.run("reset_password", key="c_1:t3:s0", conversation_id="c_1", account=account)
    assert first.ok and not first.replayed
    assert again.replayed and again.data == first.data
    other = toolbox.run("reset_password", key="c_1:t9:s0", conversation_id="c_1", account=account)
    assert other.data["link_id"] != first.data["link_id"]
    assert [row["key"] for row in runtime.ledger.audit("c_1")] == ["c_1:t3:s0", "c_1:t9:s0"]


def test_send_code_replay_sends_no_second_mail(runtime: Runtime) -> None:
    toolbox = runtime.resolver.deps.toolbox
    toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="k")
    toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="k")
    assert len(runtime.outbox.messages("c_1")) == 1


def test_a_send_cut_off_after_the_mail_is_replayed_with_the_same_code(
    runtime: Runtime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    toolbox = runtime.resolver.deps.toolbox

    class Killed(BaseException):
        """The process dying between the mail and the ledger's record of it."""

    real_finish = runtime.ledger.finish

    def die(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(runtime.ledger, "finish", die)
    with pytest.raises(Killed):
        toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="c_1:t2:send_code")
    monkeypatch.setattr(runtime.ledger, "finish", real_finish)
    toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="c_1:t2:send_code")  # the replay
    mailed = [re.findall(r"\d{6}", m["body"]) for m in runtime.outbox.messages("c_1")]
    assert len(mailed) == 2 and mailed[0] == mailed[1]  # the mail went twice, with one code
    assert toolbox.check_code(mailed[0][0], conversation_id="c_1", key="c_1:t3:check_code") is not None
    # A later send (another key, past the resend cooldown) makes another code.
    clock.advance(minutes=2)
    toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="c_1:t4:send_code")
    assert code_of(runtime, "c_1") != mailed[0][0]


def test_code_goes_to_the_address_on_file_not_the_typed_one(runtime: Runtime) -> None:
    toolbox = runtime.resolver.deps.toolbox
    toolbox.send_code("JANE.DOE@example.com ", conversation_id="c_1", key="k")
    assert [m["to"] for m in runtime.outbox.messages("c_1")] == ["jane.doe@example.com"]


def test_check_code_replay_gives_the_same_answer(runtime: Runtime) -> None:
    toolbox = runtime.resolver.deps.toolbox
    toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="send")
    code = code_of(runtime, "c_1")
    first = toolbox.check_code(code, conversation_id="c_1", key="check")
    again = toolbox.check_code(code, conversation_id="c_1", key="check")
    assert first is not None and again is not None and first.account_id == again.account_id == "acc-1001"
    # The code is single-use: a new check (new key) fails.
    assert toolbox.check_code(code, conversation_id="c_1", key="check-2") is None


def test_expired_code_fails(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    toolbox.send_code("jane.doe@example.com", conversation_id="c_1", key="send")
    clock.advance(minutes=11)
    assert toolbox.check_code(code_of(runtime, "c_1"), conversation_id="c_1", key="check") is None


def test_verification_expires(runtime: Runtime, clock: Clock) -> None:
    toolbox = runtime.resolver.deps.toolbox
    at = clock()
    assert toolbox.verified("acc-1001", "jane.doe@example.com", at, "c_1") is not None
    clock.advance(minutes=31)
    assert toolbox.verified("acc-1001", "jane.doe@example.com", at, "c_1") is None


def test_disabled_account_cannot_be_unlocked_and_the_failure_is_audited(runtime: Runtime) -> None:
    account = runtime.directory.get("acc-1002")
    assert account is not None
    runtime.directory.add(account.model_copy(update={"status": "disabled"}))
    toolbox = runtime.resolver.deps.toolbox
    verified = make_verified("acc-1002", account.email, toolbox.clock(), "c_1")
    result = toolbox.run("unlock_account", key="k", conversation_id="c_1", account=verified)
    assert not result.ok and "disabled by an administrator" in (result.error or "")
    assert runtime.ledger.audit("c_1")[-1]["outcome"] == "failed"


def test_unlocking_an_account_that_was_not_locked_says_so_without_contradicting_the_step(runtime: Runtime) -> None:
    toolbox = runtime.resolver.deps.toolbox
    verified = make_verified("acc-1001", "jane.doe@example.com", toolbox.clock(), "c_1")  # active, not locked
    result = toolbox.run("unlock_account", key="k", conversation_id="c_1", account=verified)
    assert result.ok and result.data["status_before"] == "active"
    runbook = runtime.resolver.deps.pack.runbooks["account-lockout"]
    said = f"{runbook.steps[0].text} {result.message}"
    # The step says the unlock was done; the result says what it found, and does not deny the step.
    assert "I've unlocked your account." in said and "the unlock changed nothing" in said
    assert "not locked;" not in said


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("is outlook down?", ["email"]),
        ("payments failing at checkout", ["payments"]),
        ("is anything down?", None),
    ],
)
def test_status_page_answers_about_the_named_service(runtime: Runtime, text: str, expected: list[str] | None) -> None:
    toolbox = runtime.resolver.deps.toolbox
    result = toolbox.run("check_service_status", key=text, conversation_id="c_1", args={"text": text})
    names = [s["name"] for s in result.data["services"]]
    assert names == (expected or [s.name for s in runtime.directory.services()])


def test_outage_is_reported_first(runtime: Runtime) -> None:
    runtime.directory.set_service(ServiceStatus(name="vpn", state="outage", note="Gateway down in EU-West."))
    toolbox = runtime.resolver.deps.toolbox
    result = toolbox.run("check_service_status", key="k", conversation_id="c_1", args={"text": "vpn down?"})
    assert result.message.startswith("Known issue: vpn is down.")
    assert "Gateway down in EU-West." in result.message
