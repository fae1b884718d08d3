"""Client message ids: the text is kept as a keyed hash, replays still work, old tables upgrade."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from agent.resolver import ClientMessages, TurnResult
from app.runtime import Runtime
from core.db import DatabaseTarget
from core.errors import MessageRejected
from tests.conftest import latest_code


def answer(cid: str, reply: str) -> TurnResult:
    return TurnResult(cid, [reply], "confirm", "password-reset", 0.9, ["runbook_matched"], None, 1.0)


def test_a_six_digit_code_is_not_recovered_by_trying_every_code(tmp_path: Path) -> None:
    store = ClientMessages(tmp_path / "d.sqlite", secrets.token_bytes(32))
    store.take("c1", "m1", "482913")
    with sqlite3.connect(tmp_path / "d.sqlite") as conn:
        (stored,) = conn.execute("SELECT text_hmac FROM client_messages").fetchone()
    # Without the key, a million guesses find nothing: every unkeyed SHA-256 of a six-digit code differs.
    hexes = stored.split(":", 1)[1]
    guesses = (hashlib.sha256(f"{n:06d}".encode()).hexdigest() for n in range(1_000_000))
    assert not any(g == hexes for g in guesses)
    # With the key, the same text gives the same hash; another key gives another.
    assert store.digest("482913") == stored
    assert ClientMessages(tmp_path / "e.sqlite", secrets.token_bytes(32)).digest("482913") != stored


def test_a_named_message_sent_again_gets_its_first_answer_and_a_changed_one_is_refused(
    db_target: DatabaseTarget,
) -> None:
    store = ClientMessages(db_target, b"k" * 32)
    assert store.take("c1", "m1", "my account is locked") is None
    assert store.unanswered("c1", "m1")
    store.answer("c1", "m1", answer("c1", "What is the address on the account?"))
    again = store.take("c1", "m1", "my account is locked")
    assert again is not None and again.replies == ["What is the address on the account?"]
    with pytest.raises(MessageRejected, match="already used for a different message"):
        store.take("c1", "m1", "my account is NOT locked")
    # The same id in another conversation is another message.
    assert store.take("c2", "m1", "something else") is None
    # Reopened under the same key (a restart): the replay still matches.
    reopened = ClientMessages(db_target, b"k" * 32)
    assert reopened.take("c1", "m1", "my account is locked") == again
    with pytest.raises(MessageRejected):
        reopened.take("c1", "m1", "my account is NOT locked")


def test_an_old_table_with_plain_hashes_upgrades_and_forgets_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old_hash = hashlib.sha256(b"482913").hexdigest()
    result = answer("c1", "Thanks, that code matches.")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE client_messages (conversation_id TEXT NOT NULL, client_message_id TEXT NOT NULL,"
            " text_sha256 TEXT NOT NULL, result TEXT, PRIMARY KEY (conversation_id, client_message_id))"
        )
        conn.execute("INSERT INTO client_messages VALUES ('c1', 'm1', ?, ?)", (old_hash, json.dumps(asdict(result))))
        conn.execute("INSERT INTO client_messages VALUES ('c1', 'm2', ?, NULL)", (old_hash,))
    store = ClientMessages(path, b"k" * 32)  # start-up does not break
    # The old hashes are unknown now: an answered row gives its answer, an unanswered one is played.
    assert store.take("c1", "m1", "482913") == result
    assert store.take("c1", "m1", "anything at all") == result
    assert store.take("c1", "m2", "482913") is None
    # New rows are keyed and checked as usual.
    assert store.take("c1", "m3", "482913") is None
    with pytest.raises(MessageRejected):
        store.take("c1", "m3", "999999")
    store._db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("old.sqlite*"))
    assert old_hash.encode() not in raw
    with sqlite3.connect(path) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(client_messages)")}
    assert "text_hmac" in columns and "text_sha256" not in columns
    # Opening the upgraded table again changes nothing.
    again = ClientMessages(path, b"k" * 32)
    with pytest.raises(MessageRejected):
        again.take("c1", "m3", "999999")


def test_a_row_hashed_under_another_key_counts_as_unknown(db_target: DatabaseTarget) -> None:
    path = db_target
    ClientMessages(path, b"a" * 32).take("c1", "m1", "hello")
    rotated = ClientMessages(path, b"b" * 32)
    # The text cannot be compared any more: the id is taken as the same message, not refused.
    assert rotated.take("c1", "m1", "hello") is None
    assert rotated.take("c1", "m1", "something else") is None


def test_the_service_keys_the_hash_from_the_vault_and_no_code_is_stored_plainly(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    resolver = runtime.resolver
    cid = resolver.start()
    resolver.send(cid, "I forgot my password", client_message_id="m1")
    resolver.send(cid, "jane.doe@example.com", client_message_id="m2")
    code = latest_code(runtime, cid)
    first = resolver.send(cid, code, client_message_id="m3")
    # The same id and code again: the first answer, no second turn.
    assert resolver.send(cid, code, client_message_id="m3").replies == first.replies
    with sqlite3.connect(runtime.settings.desk_db) as conn:
        stored = [r[0] for r in conn.execute("SELECT text_hmac FROM client_messages WHERE conversation_id = ?", (cid,))]
    assert len(stored) == 3
    assert hashlib.sha256(code.encode()).hexdigest() not in "".join(stored)
    # The key comes from the vault's key: a runtime on the same data (a restart) makes the same hash.
    assert resolver.client_messages.digest(code) in stored
    assert make_runtime(runtime.settings.data_dir).resolver.client_messages.digest(code) in stored
