"""Keep the bot token (and the webhook secret) out of every log line.

The Bot API puts the token in the URL path, httpx logs each URL at INFO, and
python-telegram-bot logs request parameters (the webhook secret among them) at
DEBUG. A filter on the loggers that can carry them scrubs each record before any
handler sees it, whatever logging set-up the host process uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["REDACTED", "SecretFilter"]

REDACTED = "**********"
_LOGGERS = ("httpx", "httpcore", "telegram", "tornado", "asyncio", "adapters.telegram")


class SecretFilter(logging.Filter):
    """Replaces each secret in a record's message and traceback with ``**********``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._attached: list[logging.Logger] = []

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the emitter's problem, not ours to hide
            message = str(record.msg)
        if any(s in message for s in self.secrets):
            record.msg, record.args = self.scrub(message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in self.secrets):
                record.exc_text, record.exc_info = self.scrub(text), None
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True

    def attach(self) -> None:
        """Filter the loggers that can carry the secrets (and every child logger that exists now)."""
        names = set(_LOGGERS)
        names.update(
            name for name in logging.Logger.manager.loggerDict
            if any(name.startswith(prefix + ".") for prefix in _LOGGERS)
        )
        for name in sorted(names):
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self._attached.append(logger)

    def detach(self) -> None:
        for logger in self._attached:
            logger.removeFilter(self)
        self._attached.clear()
