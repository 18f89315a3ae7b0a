"""What the engine does to text at its edges: clean input, defuse mass mentions.

Input may be anything a platform delivers: invalid UTF-8, NULs, terminal escape
codes, megabytes. Output must never ping a whole server, whatever the model or a
(possibly hostile) correction says.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import InputError

__all__ = ["clean_text", "MentionGuard", "defuse_mentions"]

# C0/C1 controls except tab and newline; ANSI escape sequences go with their ESC.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MASS_MENTION = re.compile(r"@(everyone|here|channel)\b", re.IGNORECASE)
_ZWSP = "\u200b"


def clean_text(raw: str | bytes, *, limit: int, what: str = "message") -> str:
    """Return ``raw`` as clean text, or raise ``InputError`` saying why it can't be used.

    Bytes are decoded as UTF-8 with invalid sequences replaced; control characters
    and escape codes are removed; the result must be non-blank and at most ``limit``
    characters.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", _ANSI.sub("", text))
    text = "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)  # lone surrogates
    text = text.strip()
    if not text:
        raise InputError(f"The {what} is empty; there is nothing to answer.")
    if len(text) > limit:
        raise InputError(f"The {what} is too long ({len(text):,} characters; the limit is {limit:,}).")
    return text


def defuse_mentions(text: str) -> str:
    """Break ``@everyone``, ``@here`` and ``@channel`` with a zero-width space."""
    return _MASS_MENTION.sub(lambda m: "@" + _ZWSP + m.group(1), text)


class MentionGuard:
    """Streaming ``defuse_mentions``: holds back a trailing ``@…`` until it is decided."""

    _HOLD = re.compile(r"@[A-Za-z]{0,7}$")

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk
        held = self._HOLD.search(text)
        cut = held.start() if held else len(text)
        self._pending = text[cut:]
        return defuse_mentions(text[:cut])

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return defuse_mentions(text)
