"""The embedded mail backend: messages land in a local JSON Lines outbox instead of being sent."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any


class FileOutbox:
    """Appends each message to ``DIR/mail.jsonl``; the demo and the tests read it back."""

    def __init__(self, folder: Path, clock: Callable[[], datetime]) -> None:
        self.path = folder / "mail.jsonl"
        self._clock = clock
        self._lock = threading.Lock()

    def deliver(
        self,
        to: str,
        subject: str,
        body: str,
        *,
        conversation_id: str,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
    ) -> str:
        """Write the message to the outbox and return its id (``message_id`` when given).

        ``in_reply_to`` and ``references`` are the threading headers a mail client would see.
        """
        message_id = message_id or f"<{uuid.uuid4().hex}@tierone.local>"
        record: dict[str, Any] = {
            "id": message_id,
            "at": self._clock().isoformat(),
            "to": to,
            "subject": subject,
            "body": body,
            "conversation_id": conversation_id,
        }
        if in_reply_to:
            record["in_reply_to"] = in_reply_to
        if references:
            record["references"] = list(references)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        return message_id

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Delivered messages, oldest first, optionally only one conversation's."""
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        if conversation_id is None:
            return records
        return [r for r in records if r["conversation_id"] == conversation_id]
