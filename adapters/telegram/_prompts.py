"""✏️ prompts waiting for a better answer, kept across restarts.

Pressing ✏️ (or 👎) under an answer sends a ForceReply prompt; the user's reply to
that prompt is the correction. Which prompt waits for whom, and for which answer, is
kept in a small JSON file beside the update log, so a reply that arrives after the
bot restarted is still taken. Prompts expire after ``ttl`` seconds (wall clock).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Prompt", "PromptBook"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt waiting for ``user_id``'s better answer to the bot message ``target``."""

    user_id: int
    target: int
    expires: float  # time.time()


class PromptBook:
    """Prompts by (chat id, prompt message id), in memory and (when ``path`` is set) on disk."""

    def __init__(self, path: Path | None, ttl: float) -> None:
        self.path, self.ttl = path, ttl
        self._prompts: dict[tuple[int, int], Prompt] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            rows = json.loads(path.read_text())["prompts"]
            for chat_id, message_id, user_id, target, expires in rows:
                self._prompts[(int(chat_id), int(message_id))] = Prompt(int(user_id), int(target), float(expires))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring an unreadable prompt file %s (%s)", path, err)
            self._prompts.clear()

    def add(self, chat_id: int, message_id: int, user_id: int, target: int) -> None:
        self._prune()
        self._prompts[(chat_id, message_id)] = Prompt(user_id, target, time.time() + self.ttl)
        self._save()

    def waiting(self, chat_id: int, message_id: int, user_id: int) -> Prompt | None:
        """The live prompt ``message_id`` if it waits for ``user_id``, else None."""
        prompt = self._prompts.get((chat_id, message_id))
        if prompt is None or prompt.user_id != user_id or prompt.expires < time.time():
            return None
        return prompt

    def take(self, chat_id: int, message_id: int) -> None:
        """The prompt was answered."""
        if self._prompts.pop((chat_id, message_id), None) is not None:
            self._save()

    def cancel(self, chat_id: int, user_id: int) -> int:
        """Drop ``user_id``'s prompts in ``chat_id``; returns how many."""
        mine = [k for k, p in self._prompts.items() if k[0] == chat_id and p.user_id == user_id]
        for key in mine:
            del self._prompts[key]
        if mine:
            self._save()
        return len(mine)

    def __len__(self) -> int:
        return len(self._prompts)

    def _prune(self) -> None:
        now = time.time()
        for key in [k for k, p in self._prompts.items() if p.expires < now]:
            del self._prompts[key]

    def _save(self) -> None:
        if self.path is None:
            return
        rows = [[c, m, p.user_id, p.target, p.expires] for (c, m), p in self._prompts.items()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"prompts": rows}))
            os.replace(temporary, self.path)
        except OSError as err:  # the prompt still works until a restart
            log.warning("could not save the prompt file %s (%s)", self.path, err)
