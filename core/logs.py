"""Structured logs: one JSON object per line, with conversation ids and never a customer's words.

Callers pass facts as ``extra={"fields": {...}}``; the formatter keeps only those fields and the
message, which is a fixed phrase (no user text is ever formatted into it).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

LOGGER = "tierone"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, event and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            # The exception's type and where it was raised; its message may quote input, so not that.
            exc_type = record.exc_info[0]
            entry["error"] = exc_type.__name__ if exc_type else "unknown"
            entry["traceback"] = self.formatStack(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Formats a record as a line for people, the record's fields as key=value after the event."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Send Tierone's and uvicorn's logs to stderr in the chosen format."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in (LOGGER, "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a fixed event name with fields (ids, counts, timings; never message text)."""
    logging.getLogger(LOGGER).log(level, event, extra={"fields": fields})
