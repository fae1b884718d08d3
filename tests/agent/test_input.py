"""Bad input gets a clear error naming the problem, and nothing stored is touched."""

from __future__ import annotations

import re

import pytest

from agent.resolver import validate_message
from app.runtime import Runtime
from core.errors import ConversationNotFound, MessageRejected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 1_000_000, "1,000,000 characters"),
        ("hello\x00world", "control character (U+0000) at position 5"),
        ("ring \x07 bell", "U+0007"),
        ("bad \udcff bytes", "not valid UTF-8"),
        (None, "must be text"),
        (42, "must be text"),
    ],
)
def test_rejected_messages_say_why(text: object, words: str) -> None:
    with pytest.raises(MessageRejected, match=re.escape(words)):
        validate_message(text, 8000)


def test_ordinary_text_passes() -> None:
    assert validate_message("  Ünïcödé and emoji 🙂\nsecond line\t ok  ", 8000).startswith("Ünïcödé")


def test_rejected_message_leaves_the_conversation_untouched(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my laptop is really slow")
    before = runtime.resolver.view(cid)
    for bad in ("", "x" * 1_000_000, "a\x00b"):
        with pytest.raises(MessageRejected):
            runtime.resolver.send(cid, bad)
    assert runtime.resolver.view(cid) == before
    assert runtime.resolver.send(cid, "yes").stage == "resolved"


def test_unknown_conversation(runtime: Runtime) -> None:
    with pytest.raises(ConversationNotFound, match="no conversation has the id 'c_nope'"):
        runtime.resolver.send("c_nope", "hello")
    with pytest.raises(ConversationNotFound):
        runtime.resolver.view("c_nope")


def test_unknown_channel(runtime: Runtime) -> None:
    with pytest.raises(MessageRejected, match="unknown channel 'fax'"):
        runtime.resolver.start("fax")
