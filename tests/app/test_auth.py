"""API keys, customer tokens, rate limits, and the `tierone keys` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.auth import ApiKeyRejected, ApiKeys, CustomerTokens, Principal, RateLimiter, SharedRateLimiter
from cli import app
from core.db import DatabaseTarget, DatabaseUrl
from tests.pg import table_rows


def test_keys_are_stored_hashed_and_verify(db_target: DatabaseTarget) -> None:
    keys = ApiKeys(db_target)
    key = keys.create("Alex", "l2")
    assert keys.verify(key) == Principal("Alex", "l2")
    assert keys.verify(key + "x") is None
    assert keys.verify("") is None
    stored = table_rows(db_target, "api_keys")
    assert stored and all(key not in str(row) for row in stored)


def test_revoked_keys_stop_working(db_target: DatabaseTarget) -> None:
    keys = ApiKeys(db_target)
    first, second = keys.create("Alex", "l2"), keys.create("Alex", "admin")
    other = keys.create("Sam", "l2")
    assert keys.revoke("Alex") == 2
    assert keys.verify(first) is None and keys.verify(second) is None
    assert keys.verify(other) == Principal("Sam", "l2")
    assert [k.revoked_at is not None for k in keys.list()] == [True, True, False]
    with pytest.raises(ApiKeyRejected, match="no live API key"):
        keys.revoke("Alex")


@pytest.mark.parametrize(
    ("name", "role", "words"),
    [("Alex", "root", "unknown role 'root'"), ("", "l2", "not usable"), ("<script>", "l2", "not usable")],
)
def test_bad_key_requests_say_why(db_target: DatabaseTarget, name: str, role: str, words: str) -> None:
    keys = ApiKeys(db_target)
    with pytest.raises(ApiKeyRejected, match=words):
        keys.create(name, role)
    assert keys.list() == []


def test_customer_tokens_open_only_their_conversation(db_target: DatabaseTarget) -> None:
    tokens = CustomerTokens(db_target)
    a, b = tokens.issue("c_a"), tokens.issue("c_b")
    assert a != b
    assert tokens.verify("c_a", a) and tokens.verify("c_b", b)
    assert not tokens.verify("c_a", b) and not tokens.verify("c_missing", a)
    assert tokens.known(a) and not tokens.known("guess")
    stored = table_rows(db_target, "conversation_tokens")
    assert all(a not in str(row) and b not in str(row) for row in stored)


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    ticks = Ticks()
    limiter = RateLimiter(rate_per_minute=60, burst=3, clock=ticks)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(1.0)
    assert limiter.take("other") == 0.0  # buckets are per key
    ticks.now = 0.5
    assert limiter.take("k") == pytest.approx(0.5)
    ticks.now = 1.0
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0


def test_a_rate_of_zero_turns_the_limit_off() -> None:
    limiter = RateLimiter(rate_per_minute=0, burst=1)
    assert not limiter.enabled
    assert all(limiter.take("k") == 0.0 for _ in range(100))


def test_full_buckets_are_forgotten() -> None:
    ticks = Ticks()
    limiter = RateLimiter(rate_per_minute=60, burst=1, clock=ticks)
    for i in range(10_001):
        limiter.take(f"k{i}")
    ticks.now = 10.0
    limiter.take("late")  # over 10,000 buckets: the refilled ones go
    assert limiter.take("k1") == 0.0
    assert len(limiter._buckets) < 10


def test_keys_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "Alex Doe", "--role", "admin"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert ApiKeys(tmp_path / "data" / "tierone.sqlite").verify(key) == Principal("Alex Doe", "admin")
    listed = runner.invoke(app, ["keys", "list"])
    assert "Alex Doe\tadmin" in listed.stdout and key not in listed.stdout and "live" in listed.stdout
    bad = runner.invoke(app, ["keys", "create", "Eve", "--role", "boss"])
    assert bad.exit_code == 2 and "unknown role 'boss'" in bad.output
    revoked = runner.invoke(app, ["keys", "revoke", "Alex Doe"])
    assert revoked.exit_code == 0 and "revoked 1 key(s)" in revoked.stdout
    assert ApiKeys(tmp_path / "data" / "tierone.sqlite").verify(key) is None


@pytest.mark.postgres
def test_replicas_spend_from_one_shared_bucket(pg_url: str) -> None:
    # 1 token a minute: nothing refills within the test; a burst of 3 across two replicas.
    replica_a = SharedRateLimiter(DatabaseUrl(pg_url), "conversation", 1.0, 3)
    replica_b = SharedRateLimiter(DatabaseUrl(pg_url), "conversation", 1.0, 3)
    other_scope = SharedRateLimiter(DatabaseUrl(pg_url), "ip", 1.0, 1)
    try:
        assert [replica_a.take("c_1"), replica_b.take("c_1"), replica_a.take("c_1")] == [0.0, 0.0, 0.0]
        wait = replica_b.take("c_1")
        assert 50 < wait <= 60  # the fourth waits for a token: about a minute at this rate
        assert replica_a.take("c_2") == 0.0  # another conversation has its own bucket
        assert other_scope.take("c_1") == 0.0 and other_scope.take("c_1") > 0
        assert all("c_1" not in str(row) for row in table_rows(DatabaseUrl(pg_url), "rate_buckets"))
        assert not SharedRateLimiter(DatabaseUrl(pg_url), "x", 0.0, 1).enabled
    finally:
        for limiter in (replica_a, replica_b, other_scope):
            limiter.close()


@pytest.mark.postgres
def test_the_server_shares_its_buckets_only_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from api.deps import RateLimits
    from core.settings import Settings

    shared = RateLimits.from_settings(Settings(data_dir=tmp_path, database_url=pg_url))  # type: ignore[arg-type]
    assert isinstance(shared.conversation, SharedRateLimiter) and isinstance(shared.ip, SharedRateLimiter)
    assert (shared.conversation.scope, shared.ip.scope) == ("conversation", "ip")
    local = RateLimits.from_settings(Settings(data_dir=tmp_path))
    assert isinstance(local.conversation, RateLimiter) and isinstance(local.ip, RateLimiter)
