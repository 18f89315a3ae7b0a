"""Logging set-up with secret redaction.

Client libraries log URLs (httpx logs Telegram's, which contain the bot token) and
tracebacks can carry tokens; a filter on the root handler scrubs every configured
secret from every record before it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

__all__ = ["RedactingFilter", "setup_logging"]

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


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    """Log to stderr at ``level``, scrubbing ``secrets``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
