"""Logging set-up with secret redaction.

Client libraries log URLs (httpx logs Telegram's, which contain the bot token) and
tracebacks can carry tokens; a filter on the root handler scrubs every configured
secret from every record before it is written.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

__all__ = ["RedactingFilter", "JsonFormatter", "setup_logging"]

REDACTED = "**********"


class RedactingFilter(logging.Filter):
    """Replaces each secret in a record's final message (and traceback) with ``**********``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            if record.exc_info:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the traceback as text)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str, secrets: Iterable[str], *, json_lines: bool = False) -> None:
    """Log to stderr at ``level``, scrubbing ``secrets``; ``json_lines``: one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
