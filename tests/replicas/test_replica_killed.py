"""A replica SIGKILLed in the middle of work: the other finishes it, and nothing is done twice."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.servers import Pair, open_conversation, say, transcript, wait_for

pytestmark = [
    pytest.mark.replicas,
    pytest.mark.model,
    pytest.mark.postgres,
    pytest.mark.chroma_server,
    pytest.mark.slow,
]


def latest_code(pair: Pair, email: str) -> str:
    def find() -> str | None:
        outbox = pair.data_dir / "outbox" / "mail.jsonl"
        if not outbox.exists():
            return None
        mails = [json.loads(line) for line in outbox.read_text().splitlines()]
        bodies = [m["body"] for m in mails if m.get("to") == email and "code is " in m["body"]]
        return bodies[-1].split("code is ")[1][:6] if bodies else None

    code: str = wait_for(find, f"a code mailed to {email}")
    return code


def test_a_turn_cut_by_sigkill_is_finished_by_the_other_replica_and_its_tool_runs_once(replica_pair: Pair) -> None:
    a, b, directory = replica_pair.a, replica_pair.b, replica_pair.directory
    customer = open_conversation(a)
    assert say(a, customer, "my account is locked").status_code == 200
    assert say(b, customer, "ada.locked@example.com").status_code == 200
    code = latest_code(replica_pair, "ada.locked@example.com")

    # The unlock waits in the directory until the test lets it go: replica A is mid-turn.
    directory.hold()
    cut: dict[str, object] = {}

    def send_on_a() -> None:
        try:
            cut["answer"] = say(a, customer, code, client_message_id="code-1")
        except httpx.TransportError as exc:
            cut["error"] = exc

    sender = threading.Thread(target=send_on_a)
    sender.start()
    wait_for(
        lambda: any(path.endswith("/unlock") for _, path in directory.requests), "A's unlock to reach the directory"
    )
    a.kill()
    sender.join(timeout=60)
    assert "error" in cut, f"the killed replica answered: {cut}"
    # The directory performs the request A sent (A never hears back): the account is unlocked.
    directory.release()
    wait_for(lambda: directory.actions, "the directory to perform A's unlock")

    # The customer's client got no answer and sends the same message again, this time to B.
    retry = say(b, customer, code, client_message_id="code-1")
    assert retry.status_code == 200, retry.text
    assert retry.json()["stage"] == "confirm", retry.text

    unlocks = [(key, path) for key, path in directory.requests if path.endswith("/unlock")]
    assert len(directory.actions) == 1 and directory.actions[0][1:] == ("acc-2001", "unlock")
    # B sent the directory the same idempotency key as A: the replay got A's result, not a second unlock.
    assert len({key for key, _ in unlocks}) == 1, unlocks
    rows = replica_pair.query(
        "SELECT tool, status FROM tool_runs WHERE conversation_id = %s AND account_id = %s",
        customer.conversation_id,
        "acc-2001",
    )
    assert [r for r in rows if "unlock" in r[0]] == [("unlock_account", "done")], rows
    # The message is in the transcript once, answered once.
    lines = transcript(b, customer)
    customer_lines = [x for x in lines if x["role"] == "customer"]
    assert len(customer_lines) == 3, lines


def test_a_webhook_delivery_owned_by_a_killed_replica_is_made_once_by_the_other(replica_pair: Pair) -> None:
    a, webhook = replica_pair.a, replica_pair.webhook
    if a.proc is None or a.proc.poll() is not None:  # the test above killed it
        a.start()
    webhook.hold_first()
    customer = open_conversation(a)
    answer = say(a, customer, "I want to talk to a human please")
    assert answer.status_code == 200, answer.text
    packet_id = answer.json()["handoff"]["packet_id"]
    # A's notifier took the delivery and is waiting on the webhook: kill it there.
    wait_for(lambda: packet_id in webhook.received, "A's delivery to reach the webhook")
    owner = replica_pair.query("SELECT claimed_by FROM handoff_deliveries WHERE packet_id = %s", packet_id)
    assert owner[0][0] is not None, owner
    a.kill()
    webhook.drop.set()

    # B takes the delivery over once A's lease has run out, and the webhook gets the packet once.
    wait_for(lambda: [k for k, _ in webhook.answered if k == packet_id], "B to deliver the packet", limit_s=120)
    state = wait_for(
        lambda: replica_pair.query(
            "SELECT status, claimed_by FROM handoff_deliveries WHERE packet_id = %s AND status = 'delivered'",
            packet_id,
        ),
        "the delivery to be recorded as delivered",
    )
    assert state == [("delivered", None)]
    assert [k for k, _ in webhook.answered].count(packet_id) == 1
    assert webhook.received.count(packet_id) == 2  # A's unanswered attempt, then B's
