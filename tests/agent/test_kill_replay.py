"""A client that got no answer sends its message again (same client_message_id): answered, never played twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from app.runtime import Runtime, open_runtime
from core.errors import MessageRejected
from core.settings import BUNDLED_RUNBOOKS, Settings
from tests.conftest import Clock, latest_code
from vectorstore.index import RunbookIndex


def actions(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT account_id, action FROM directory_actions")]


def customer_lines(runtime: Runtime, cid: str) -> list[str]:
    return [line["text"] for line in runtime.resolver.view(cid)["transcript"] if line["role"] == "customer"]


class CrashAfterAction:
    """A directory that performs the action, then the process dies before the result is recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def unlock(self, account_id: str, *, key: str) -> dict[str, Any]:
        self.inner.unlock(account_id, key=key)
        raise SystemExit("killed mid-tool-call")


def to_code_stage(runtime: Runtime) -> tuple[str, str]:
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my account is locked", client_message_id="m1")
    runtime.resolver.send(cid, "bob.smith@example.com", client_message_id="m2")
    return cid, latest_code(runtime, cid)


def test_the_same_message_twice_is_answered_twice_but_played_once(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    first = runtime.resolver.send(cid, "my account is locked", client_message_id="a-1")
    again = runtime.resolver.send(cid, "my account is locked", client_message_id="a-1")
    assert again.replies == first.replies and again.stage == first.stage == "identity"
    assert customer_lines(runtime, cid) == ["my account is locked"]
    # Without an id every post is a new message, as before.
    runtime.resolver.send(cid, "bob.smith@example.com")
    runtime.resolver.send(cid, "bob.smith@example.com")
    assert len(customer_lines(runtime, cid)) == 3


def test_an_id_reused_for_another_text_is_refused_and_changes_nothing(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my account is locked", client_message_id="a-1")
    before = runtime.resolver.view(cid)
    with pytest.raises(MessageRejected, match="client_message_id 'a-1' was already used for a different message"):
        runtime.resolver.send(cid, "I forgot my password", client_message_id="a-1")
    assert runtime.resolver.view(cid) == before
    # Ids are per conversation: another conversation may use the same one.
    other = runtime.resolver.start()
    assert runtime.resolver.send(other, "I forgot my password", client_message_id="a-1").runbook_id == "password-reset"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 101, "semi;colon", "ünï"])
def test_a_malformed_id_is_refused_naming_the_field(runtime: Runtime, bad: str) -> None:
    cid = runtime.resolver.start()
    with pytest.raises(MessageRejected, match="client_message_id must be 1 to 100 characters"):
        runtime.resolver.send(cid, "hello", client_message_id=bad)
    assert runtime.resolver.view(cid) == {}


def test_killed_during_a_tool_call_the_resent_message_gets_the_finished_answer(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    first = make_runtime(tmp_path / "data")
    first.resolver.deps.toolbox.directory = CrashAfterAction(first.resolver.deps.toolbox.directory)
    cid, code = to_code_stage(first)
    with pytest.raises(SystemExit):
        first.resolver.send(cid, code, client_message_id="m3")
    del first  # the process is gone; the client saw no answer

    second = make_runtime(tmp_path / "data")
    assert second.resolver.recover() == [cid]
    answer = second.resolver.send(cid, code, client_message_id="m3")
    assert answer.stage == "confirm" and "unlock" in " ".join(answer.replies).lower()
    assert actions(second.settings.desk_db) == [("acc-1002", "unlock")]
    assert len(customer_lines(second, cid)) == 3
    tools = [a["tool"] for a in second.resolver.view(cid)["attempts"] if a["kind"] == "tool"]
    assert tools == ["send_code", "verify_identity", "unlock_account"]


def test_killed_before_the_graph_took_the_message_it_is_played_on_resend(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    first = make_runtime(tmp_path / "data")
    cid, code = to_code_stage(first)
    # The id was noted, then the process died before the graph saw the message.
    assert first.resolver.client_messages.take(cid, "m3", code) is None
    del first

    second = make_runtime(tmp_path / "data")
    second.resolver.recover()
    answer = second.resolver.send(cid, code, client_message_id="m3")
    assert answer.stage == "confirm"
    assert actions(second.settings.desk_db) == [("acc-1002", "unlock")]
    assert len(customer_lines(second, cid)) == 3


def test_killed_after_the_turn_before_the_answer_was_stored(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    first = make_runtime(tmp_path / "data")
    cid, code = to_code_stage(first)

    def die(conversation_id: str, values: dict[str, Any]) -> None:
        raise SystemExit("killed after the last checkpoint")

    first.resolver.after_turn.insert(0, die)
    with pytest.raises(SystemExit):
        first.resolver.send(cid, code, client_message_id="m3")
    del first

    second = make_runtime(tmp_path / "data")
    second.resolver.recover()
    answer = second.resolver.send(cid, code, client_message_id="m3")
    assert answer.stage == "confirm" and answer.replies
    assert actions(second.settings.desk_db) == [("acc-1002", "unlock")]
    assert len(customer_lines(second, cid)) == 3
    # The next message goes on from there.
    assert second.resolver.send(cid, "yes, it works", client_message_id="m4").stage == "resolved"


def test_a_resend_after_a_later_message_still_gets_its_own_answer(runtime: Runtime) -> None:
    cid, code = to_code_stage(runtime)
    step = runtime.resolver.send(cid, code, client_message_id="m3")
    runtime.resolver.send(cid, "yes, it works", client_message_id="m4")
    late = runtime.resolver.send(cid, code, client_message_id="m3")
    assert late.replies == step.replies and late.stage == "confirm"
    assert actions(runtime.settings.desk_db) == [("acc-1002", "unlock")]
    assert len(customer_lines(runtime, cid)) == 4


class CutBeforeCheckpoint(SqliteSaver):
    """A checkpointer whose process dies after a step's writes are saved, before the step's checkpoint."""

    def __init__(self, conn: sqlite3.Connection, step: int) -> None:
        super().__init__(conn)
        self.step = step

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        if metadata.get("step") == self.step:
            self.step = -99
            raise SystemExit("killed between the writes and the checkpoint")
        return super().put(config, checkpoint, metadata, new_versions)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_killed_between_a_steps_writes_and_its_checkpoint_the_turn_is_finished(
    tmp_path: Path, bundled_index: RunbookIndex, clock: Clock, step: int
) -> None:
    # Found by bench/kill.py: LangGraph then reports no `next` node, only the step's finished tasks.
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS)
    settings.data_dir.mkdir(parents=True)
    conn = sqlite3.connect(settings.conversations_db, check_same_thread=False)
    first = open_runtime(settings, clock=clock, index=bundled_index, checkpointer=CutBeforeCheckpoint(conn, step))
    cid = first.resolver.start()
    with pytest.raises(SystemExit):
        first.resolver.send(cid, "I forgot my password", client_message_id="m1")
    del first

    second = open_runtime(settings, clock=clock, index=bundled_index)
    assert second.resolver.recover() == [cid]
    answer = second.resolver.send(cid, "I forgot my password", client_message_id="m1")
    assert answer.stage == "identity" and answer.runbook_id == "password-reset" and answer.replies
    assert customer_lines(second, cid) == ["I forgot my password"]
    assert second.resolver.send(cid, "jane.doe@example.com", client_message_id="m2").stage == "code"


class DiesOnLookup:
    """A directory whose process dies while it looks an account up by id (as check_code does)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, account_id: str) -> Any:
        raise SystemExit("killed during the identity lookup")


def test_killed_while_checking_the_code_the_right_code_still_verifies(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    first = make_runtime(tmp_path / "data")
    cid, code = to_code_stage(first)
    first.resolver.deps.toolbox.directory = DiesOnLookup(first.resolver.deps.toolbox.directory)
    with pytest.raises(SystemExit):
        first.resolver.send(cid, code, client_message_id="m3")
    del first

    second = make_runtime(tmp_path / "data")
    second.resolver.recover()
    answer = second.resolver.send(cid, code, client_message_id="m3")
    assert answer.stage == "confirm", answer.replies
    assert actions(second.settings.desk_db) == [("acc-1002", "unlock")]
