"""A replica SIGKILLed in the middle of work: the other finishes it, and nothing is done twice."""

from __future__ import annotations

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


INBOUND_SECRET = "inbound-test-secret"
# Mail goes to the SMTP stub; a reply's send lease is 4 s (a live replica looks every 2 s).
REPLICA_ENV = {
    "TIERONE_SMTP_HOST": "127.0.0.1",
    "TIERONE_SMTP_PORT": "{smtp_port}",
    "TIERONE_SMTP_SECURITY": "none",
    "TIERONE_MAIL_SEND_LEASE_S": "4",
    "TIERONE_INBOUND_SECRET": INBOUND_SECRET,
}


def latest_code(pair: Pair, email: str) -> str:
    def find() -> str | None:
        parts = [m.get_body() for m in pair.smtp.accepted if m["To"] and email in m["To"]]
        bodies = [str(p.get_content()) for p in parts if p is not None]
        bodies = [b for b in bodies if "code is " in b]
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


def test_a_mail_reply_whose_replica_died_sending_it_is_sent_once_by_the_other(replica_pair: Pair) -> None:
    a, smtp = replica_pair.a, replica_pair.smtp
    if a.proc is None or a.proc.poll() is not None:  # a test above killed it
        a.start()
    smtp.hold_first()
    mail = {
        "from": "Cy Mail <cy.mail@example.com>",
        "subject": "VPN drops",
        "text": "my vpn keeps disconnecting every hour",
        "message_id": "<replica-kill-1@example.com>",
    }

    def post_on_a() -> None:
        try:
            httpx.post(f"{a.url}/inbound/email", json=mail, auth=("inbound", INBOUND_SECRET), timeout=120)
        except httpx.TransportError:
            pass  # A is killed while it sends the reply

    poster = threading.Thread(target=post_on_a)
    poster.start()
    # A played the mail, leased its reply and is in the middle of handing it to the relay: kill it there.
    wait_for(lambda: smtp.held, "A's reply to reach the relay")
    a.kill()
    smtp.drop.set()
    poster.join(timeout=60)

    # B sends it once A's lease has run out; the relay accepts the reply once.
    def accepted() -> list[str]:
        return [m["Message-ID"] for m in smtp.accepted if m["In-Reply-To"] == mail["message_id"]]

    wait_for(accepted, "B to send the reply")
    assert accepted() == [smtp.held[0]["Message-ID"]]  # the same reply, not a second one
    rows = wait_for(
        lambda: replica_pair.query(
            "SELECT status, claimed_by FROM mail_out WHERE message_id = %s AND status = 'sent'",
            smtp.held[0]["Message-ID"],
        ),
        "the reply to be recorded as sent",
    )
    assert rows == [("sent", None)]
    assert accepted() == [smtp.held[0]["Message-ID"]]
