"""Write tests/data/release-0.1/: the desk and vault databases as release 0.1 (commit 34c27bb) leaves them.

tests/test_db.py upgrades these to the current schema. Run once, from an export of that commit, so
the schema and rows are the release's own and not rebuilt from memory:

    git archive 34c27bb | tar -x -C /tmp/release-0.1
    PYTHONPATH=/tmp/release-0.1 python tests/data/make_release_0_1.py tests/data/release-0.1
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.auth import ApiKeys, CustomerTokens
from app.erasure import Eraser
from app.mail.inbound import InboundEmail
from app.runtime import Runtime, open_runtime
from core.settings import BUNDLED_RUNBOOKS, Settings

# A key for this fixture only; the test needs it to read the vault and the sealed mail back.
VAULT_KEY = "Qeqb7VaeuBuIf_8eAB336d4-ntVR3LyPjk7y9joR3N8="


class Clock:
    """A clock that moves a minute at every reading, so rows keep their order."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def code_of(runtime: Runtime, cid: str) -> str:
    match = re.search(r"\b(\d{6})\b", runtime.outbox.messages(cid)[-1]["body"])
    assert match
    return match.group(1)


def converse(runtime: Runtime) -> dict[str, str]:
    resolver = runtime.resolver
    chat = resolver.start()
    resolver.send(chat, "I forgot my password", client_message_id="m1")
    resolver.send(chat, "jane.doe@example.com")
    resolver.send(chat, code_of(runtime, chat))
    resolver.send(chat, "no, get me a human")
    packet = resolver.view(chat)["handoff"]["packet_id"]
    runtime.desk.claim(packet, "Alex")
    runtime.desk.reply(packet, "Alex", "I am looking at your account now.")
    assert runtime.email is not None
    mail = InboundEmail(
        sender="pat.lee@example.org",
        sender_name="Pat Lee",
        subject="VPN",
        text="I clicked a link in a phishing email and typed my password",
        message_id="<1@client.example>",
    )
    by_mail = runtime.email.receive(mail).conversation_id
    assert by_mail is not None
    erased = resolver.start()
    resolver.send(erased, "my account is locked")
    resolver.send(erased, "bob.smith@example.com")
    Eraser(runtime).forget(conversation_id=erased)
    return {"chat": chat, "packet": packet, "by_mail": by_mail, "erased": erased}


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        settings = Settings(
            data_dir=data,
            runbooks=BUNDLED_RUNBOOKS,
            vault_key=VAULT_KEY,  # type: ignore[arg-type]
            handoff_webhook_url="https://helpdesk.example/hooks/tierone",
        )
        runtime = open_runtime(settings, clock=Clock())
        facts = converse(runtime)
        facts["api_key"] = ApiKeys(settings.desk_db).create("Alex", "l2")
        facts["token"] = CustomerTokens(settings.desk_db).issue(facts["chat"])
        facts["vault_key"] = VAULT_KEY
        out.mkdir(parents=True, exist_ok=True)
        for name in ("tierone", "vault"):
            with sqlite3.connect(data / f"{name}.sqlite") as conn:
                (out / f"{name}.sql").write_text("\n".join(conn.iterdump()) + "\n", encoding="utf-8")
        (out / "facts.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
