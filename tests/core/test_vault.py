"""The vault, and the promise it serves: no customer value in clear in any SQLite file at rest."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet

from app.runtime import Runtime, open_runtime
from core.db import DatabaseTarget, DatabaseUrl
from core.settings import BUNDLED_RUNBOOKS, Settings
from core.vault import REVEALED_KINDS, Vault, VaultKeyError, hold, load_key, reveal
from tests.conftest import Clock, latest_code
from vectorstore.index import RunbookIndex


@pytest.fixture
def key() -> str:
    return Fernet.generate_key().decode()


def test_values_round_trip_and_are_encrypted_on_disk(tmp_path: Path, key: str, clock: Clock) -> None:
    vault = Vault(tmp_path / "v.sqlite", key, clock)
    ref = vault.put("c_1", "email", "jdoe@corp.example")
    assert ref.startswith("vault:") and "jdoe" not in ref
    assert vault.get(ref) == "jdoe@corp.example"
    vault.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"jdoe@corp.example" not in raw and b"corp.example" not in raw


def test_entries_expire_and_are_purged(db_target: DatabaseTarget, key: str, clock: Clock) -> None:
    vault = Vault(db_target, key, clock, retention=timedelta(hours=2))
    ref = vault.put("c_1", "code", "123456")
    clock.advance(hours=1)
    assert vault.get(ref) == "123456"
    clock.advance(hours=1, seconds=1)
    assert vault.get(ref) is None
    assert vault.purge() == 1
    assert vault.purge() == 0


def test_a_value_under_another_key_reads_as_gone(db_target: DatabaseTarget, key: str, clock: Clock) -> None:
    ref = Vault(db_target, key, clock).put("c_1", "email", "a@b.example")
    other = Vault(db_target, Fernet.generate_key().decode(), clock)
    assert other.get(ref) is None


def test_keys_rotate_new_first_old_still_reads(db_target: DatabaseTarget, key: str, clock: Clock) -> None:
    old = Vault(db_target, key, clock)
    ref = old.put("c_1", "email", "a@b.example")
    new_key = Fernet.generate_key().decode()
    rotated = Vault(db_target, f"{new_key},{key}", clock)
    assert rotated.get(ref) == "a@b.example"
    fresh = rotated.put("c_1", "email", "c@d.example")
    assert Vault(db_target, new_key, clock).get(fresh) == "c@d.example"


@pytest.mark.parametrize("bad", ["not-a-key", "abc,def", " , "])
def test_a_malformed_key_is_refused_with_a_clear_error(tmp_path: Path, clock: Clock, bad: str) -> None:
    with pytest.raises(VaultKeyError, match="TIERONE_VAULT_KEY"):
        Vault(tmp_path / "v.sqlite", bad, clock)
    with pytest.raises(VaultKeyError):
        load_key(bad, tmp_path)


def test_without_a_key_a_dev_key_is_made_once_and_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tierone"):
        first = load_key(None, tmp_path)
    assert "TIERONE_VAULT_KEY IS NOT SET" in caplog.text
    assert (tmp_path / "vault.key").stat().st_mode & 0o077 == 0
    assert load_key(None, tmp_path) == first


def test_hold_keeps_addresses_codes_and_phone_numbers_and_the_brain_sees_no_number(
    tmp_path: Path, key: str, clock: Clock
) -> None:
    vault = Vault(tmp_path / "v.sqlite", key, clock)
    text = "I'm jdoe@corp.example, pw is hunter2, code 123 456, call +44 20 7946 0958"
    redacted, held = hold(vault, "c_1", text)
    assert redacted == "I'm [email], pw is [secret], code [code], call [phone]"
    # The number is held for a code texted to the line (verify: otp_sms), never shown to the brain.
    assert [h["kind"] for h in held] == ["email", "code", "phone"]
    assert vault.get(str(held[2]["ref"])) == "+44 20 7946 0958"
    for_brain = [h for h in held if h["kind"] in REVEALED_KINDS]
    assert reveal(vault, redacted, for_brain) == "I'm jdoe@corp.example, pw is [secret], code 123 456, call [phone]"
    assert vault.forget("c_1") == 3
    assert reveal(vault, redacted, held) == redacted


def test_hold_keeps_a_birth_date_asked_for_and_the_brain_sees_a_placeholder(
    tmp_path: Path, key: str, clock: Clock
) -> None:
    vault = Vault(tmp_path / "v.sqlite", key, clock)
    redacted, held = hold(vault, "c_1", "+44 7700 900123 and 3 April 1990", dates=True)
    assert redacted == "[phone] and [dob]"
    assert [h["kind"] for h in held] == ["phone", "dob"]
    assert vault.get(str(held[1]["ref"])) == "3 April 1990"
    for_brain = [h for h in held if h["kind"] in REVEALED_KINDS]
    assert reveal(vault, redacted, for_brain) == "[phone] and [dob]"
    # Not asked for: a date with no birth words is left as written.
    assert hold(vault, "c_1", "down since 3 April 2026")[0] == "down since 3 April 2026"


def test_subjects_are_found_by_address_without_keeping_it(tmp_path: Path, key: str, clock: Clock) -> None:
    vault = Vault(tmp_path / "v.sqlite", key, clock)
    vault.link_subject("c_1", "Jane.Doe@example.com ")
    vault.link_subject("c_2", "jane.doe@example.com")
    vault.link_subject("c_3", "bob@example.com")
    assert vault.conversations_of("JANE.DOE@example.com") == ["c_1", "c_2"]
    vault.close()
    assert b"jane" not in (tmp_path / "v.sqlite").read_bytes().lower()


@pytest.mark.postgres
def test_on_postgresql_values_and_addresses_are_stored_sealed_and_hashed(pg_url: str, key: str, clock: Clock) -> None:
    vault = Vault(DatabaseUrl(pg_url), key, clock)
    ref = vault.put("c_1", "email", "jdoe@corp.example")
    vault.link_subject("c_1", "jdoe@corp.example")
    assert vault.get(ref) == "jdoe@corp.example" and vault.conversations_of("JDOE@corp.example") == ["c_1"]
    vault.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT ref, conversation_id, kind, secret::text, created_at, expires_at FROM entries")
        stored = repr(rows.fetchall()) + repr(conn.execute("SELECT * FROM subjects").fetchall())
    assert "c_1" in stored and "jdoe" not in stored and "corp.example" not in stored
    assert "6a646f65" not in stored  # nor its bytes ("jdoe" in hex)


def _files(data_dir: Path, name: str) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob(name + "*") if p.is_file())


def _rows(path: Path, skip: tuple[str, ...] = ()) -> str:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = []
        for table in tables:
            if table in skip:
                continue
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                dump.append(" ".join(str(v) if not isinstance(v, bytes) else v.decode("latin-1") for v in row))
    return "\n".join(dump)


def test_no_customer_value_sits_in_clear_in_any_sqlite_file(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = make_runtime()
    password, phone, email = "Tr0ub4dor&3", "+44 20 7946 0958", "jane.doe@example.com"
    resolver = runtime.resolver
    cid = resolver.start()
    resolver.send(cid, f"I forgot my password, my old one was {password}. Call me on {phone} if needed")
    resolver.send(cid, f"my email is {email}")
    code = latest_code(runtime, cid)
    result = resolver.send(cid, f"the code is {code}")
    assert result.stage == "confirm"  # verified, the reset link went out
    resolver.send(cid, "no, I want a human")
    handoff = resolver.view(cid)["handoff"]
    assert handoff is not None  # a packet was written too
    data = tmp_path / "data"
    secrets = [password, phone, phone.replace(" ", ""), code]
    for name in ("conversations.sqlite", "tierone.sqlite", "vault.sqlite"):
        raw = _files(data, name)
        assert raw, name
        for value in secrets:
            assert value.encode() not in raw, f"{value!r} in {name}"
    # The address is on file in the embedded directory (the account system itself); nowhere else.
    assert email.encode() not in _files(data, "conversations.sqlite")
    assert email.encode() not in _files(data, "vault.sqlite")
    assert email not in _rows(data / "tierone.sqlite", skip=("accounts",))
    # What people read still says what happened, with placeholders and a masked address.
    packet = resolver.deps.handoffs.get(handoff["packet_id"])
    assert packet.customer.email == "j***@example.com" and packet.customer.verified
    said = " ".join(line.text for line in packet.transcript)
    assert "[secret]" in said and "[phone]" in said and "[code]" in said


def test_a_malformed_configured_key_stops_startup(tmp_path: Path, clock: Clock, bundled_index: RunbookIndex) -> None:
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, vault_key="short")  # type: ignore[arg-type]
    with pytest.raises(VaultKeyError, match="32 url-safe base64"):
        open_runtime(settings, clock=clock, index=bundled_index)
    assert not (tmp_path / "data" / "vault.key").exists()
