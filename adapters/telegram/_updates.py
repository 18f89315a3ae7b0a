"""Receiving updates exactly once: a persistent record of handled ids, and a parse guard.

- ``UpdateLog`` remembers the ids of recently handled updates in a small JSON file, so
  an update re-delivered after a restart (a crash before polling confirmed it, a
  webhook retry) is not answered twice, and polling resumes right after the last one.
- ``UpdatesRequest`` guards ``getUpdates``: an update python-telegram-bot cannot parse
  would otherwise fail the whole batch, which is then fetched again forever.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.request import BaseRequest, HTTPXRequest, RequestData

__all__ = ["UpdateLog", "UpdatesRequest"]

log = logging.getLogger(__name__)

# Telegram numbers updates sequentially, but picks a random next id after a week without
# updates: an older high-water mark must not be used to skip anything.
_RESUME_MAX_AGE = 6 * 24 * 3600.0


class UpdateLog:
    """The last ``keep`` handled update ids, in memory and (when ``path`` is set) on disk."""

    def __init__(self, path: Path | None, keep: int = 1000) -> None:
        self.path, self.keep = path, keep
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._saved_at = 0.0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            ids = [int(i) for i in data["ids"]][-self.keep :]
            self._saved_at = float(data["saved_at"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring an unreadable update log %s (%s)", path, err)
            return
        self._order.extend(ids)
        self._ids.update(ids)

    @property
    def resume_offset(self) -> int | None:
        """The ``getUpdates`` offset right after the last handled update, when it is still valid."""
        if not self._ids or time.time() - self._saved_at > _RESUME_MAX_AGE:
            return None
        return max(self._ids) + 1

    def first(self, update_id: int) -> bool:
        """True the first time ``update_id`` is seen (and records it durably), False after."""
        if update_id in self._ids:
            return False
        self._ids.add(update_id)
        self._order.append(update_id)
        while len(self._order) > self.keep:
            self._ids.discard(self._order.popleft())
        self._save()
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        self._saved_at = time.time()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"saved_at": self._saved_at, "ids": list(self._order)}))
            os.replace(temporary, self.path)  # atomic: a crash leaves the old file or the new one
        except OSError as err:
            log.warning("could not record handled updates in %s (%s)", self.path, err)


class UpdatesRequest(HTTPXRequest):
    """The ``getUpdates`` connection, with unparseable updates replaced by empty ones.

    An empty ``Update`` keeps its id, so polling confirms it and moves on; handlers see
    an update with nothing in it and ignore it.
    """

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        code, payload = await super().do_request(
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )
        if code == 200 and url.endswith("/getUpdates"):
            payload = sanitize_updates(payload)
        return code, payload


def sanitize_updates(payload: bytes) -> bytes:
    """``payload`` with every update that does not parse reduced to its ``update_id``."""
    try:
        data = json.loads(payload)
        updates = data["result"]
        assert isinstance(updates, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        return payload  # not a getUpdates answer we understand: let the library report it
    kept: list[dict[str, Any]] = []
    changed = False
    for item in updates:
        update_id = item.get("update_id") if isinstance(item, dict) else None
        if not isinstance(update_id, int):
            log.warning("dropped an update without an update_id")
            changed = True
            continue
        try:
            Update.de_json(item, None)
        except Exception as err:  # whatever the parser trips on, this update is unusable
            log.warning("update %d is malformed (%s: %s); skipping it", update_id, type(err).__name__, err)
            item, changed = {"update_id": update_id}, True
        kept.append(item)
    if not changed:
        return payload
    data["result"] = kept
    return json.dumps(data).encode()
