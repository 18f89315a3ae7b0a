"""Receiving updates: each handled at least once, answered at most once, and a parse guard.

- ``UpdateLog`` journals every update received before Telegram is told it arrived (the
  next ``getUpdates`` confirms it; a webhook delivery is confirmed by its answer), and
  marks it handled only once its handling is over. After a crash (kill -9 in the middle
  of a ``/fix``), the updates received but not handled are handled again on restart;
  feedback carries the update's id as its event id, so the engine applies it once. The
  ids of recently handled updates let a redelivered update (a webhook retry, a restart
  before polling confirmed it) be skipped, and polling resume right after the last one.
- ``JournalQueue`` is the application's update queue: what is put in it is journalled
  first, so no update reaches a handler, or is confirmed to Telegram, unrecorded.
- ``UpdatesRequest`` guards ``getUpdates``: an update python-telegram-bot cannot parse
  would otherwise fail the whole batch, which is then fetched again forever.
- ``well_formed`` says whether the fields heedful reads have the types the Bot API
  promises (python-telegram-bot does not check): an update that fails it is handled as
  an empty one, so nothing malformed reaches a handler, or the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.request import BaseRequest, HTTPXRequest, RequestData

__all__ = ["JournalQueue", "UpdateLog", "UpdatesRequest", "sanitize_updates", "well_formed"]

log = logging.getLogger(__name__)

# Telegram numbers updates sequentially, but picks a random next id after a week without
# updates: an older high-water mark must not be used to skip anything.
_RESUME_MAX_AGE = 6 * 24 * 3600.0


class UpdateLog:
    """Updates received and not yet handled (kept whole), and the last ``keep`` handled ids.

    In memory and, when ``path`` is set, in an append-only journal there (one JSON object a
    line: ``{"r": update}`` received, ``{"d": id}`` handled; compacted now and then into a
    snapshot). Appending a line is atomic enough for a crash: a torn last line is ignored.
    """

    def __init__(self, path: Path | None, keep: int = 1000) -> None:
        self.path, self.keep = path, keep
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._pending: dict[int, dict[str, Any]] = {}
        self._busy: set[int] = set()
        self._saved_at = 0.0
        self._lines = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return
        except OSError as err:
            log.warning("ignoring an unreadable update log %s (%s)", path, err)
            return
        for line in text.splitlines():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                if "ids" in record:  # a snapshot (and the format before the journal)
                    for update_id in record["ids"]:
                        self._handled(int(update_id))
                if "r" in record:
                    update_id = int(record["r"]["update_id"])
                    if update_id not in self._ids:
                        self._pending[update_id] = dict(record["r"])
                if "d" in record:
                    self._handled(int(record["d"]))
                    self._pending.pop(int(record["d"]), None)
                self._saved_at = max(self._saved_at, float(record.get("at") or record.get("saved_at") or 0.0))
            except (ValueError, KeyError, TypeError) as err:
                log.warning("ignoring an unreadable line of the update log %s (%s)", path, err)
                continue
            self._lines += 1

    def _handled(self, update_id: int) -> None:
        if update_id in self._ids:
            return
        self._ids.add(update_id)
        self._order.append(update_id)
        while len(self._order) > self.keep:
            self._ids.discard(self._order.popleft())

    @property
    def resume_offset(self) -> int | None:
        """The ``getUpdates`` offset right after the last update received (every one before it
        is handled, or journalled to be), when it is still valid."""
        known = self._ids | self._pending.keys()
        if not known or time.time() - self._saved_at > _RESUME_MAX_AGE:
            return None
        return max(known) + 1

    def received(self, update_id: int, data: dict[str, Any]) -> None:
        """Journal ``update`` (its JSON form), unless it is handled or journalled already."""
        if update_id in self._ids or update_id in self._pending:
            return
        self._pending[update_id] = data
        self._append({"r": data})

    def first(self, update_id: int) -> bool:
        """True when ``update_id`` is neither handled nor being handled: it is being handled from now
        (``done`` or ``abandoned`` says when that ends). False for a redelivery."""
        if update_id in self._ids or update_id in self._busy:
            return False
        self._busy.add(update_id)
        return True

    def done(self, update_id: int) -> None:
        """``update_id`` was handled: it is never handled again."""
        self._busy.discard(update_id)
        self._pending.pop(update_id, None)
        self._handled(update_id)
        self._append({"d": update_id})

    def abandoned(self, update_id: int) -> None:
        """Handling ``update_id`` stopped half way (a shutdown): it stays journalled, to be handled again."""
        self._busy.discard(update_id)

    def pending(self) -> list[dict[str, Any]]:
        """The updates received but not handled (before a crash, say), oldest first."""
        return [self._pending[i] for i in sorted(self._pending) if i not in self._busy]

    def _append(self, record: dict[str, Any]) -> None:
        self._saved_at = time.time()
        if self.path is None:
            return
        try:
            if self._lines > 4 * (len(self._pending) + self.keep) + 100:
                self._compact(self.path)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as journal:
                journal.write(json.dumps(record | {"at": self._saved_at}) + "\n")
            self._lines += 1
        except OSError as err:
            log.warning("could not record an update in %s (%s)", self.path, err)

    def _compact(self, path: Path) -> None:
        lines = [{"saved_at": self._saved_at, "ids": list(self._order)}]
        lines += [{"r": self._pending[i]} for i in sorted(self._pending)]
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(line) + "\n" for line in lines))
        os.replace(temporary, path)  # atomic: a crash leaves the old journal or the new one
        self._lines = len(lines)


class JournalQueue(asyncio.Queue[object]):
    """The application's update queue; every ``Update`` put in it is journalled first
    (``UpdateLog.received`` on the log ``journal()`` returns)."""

    def __init__(self, journal: Callable[[], UpdateLog]) -> None:
        super().__init__()
        self._journal = journal

    def _record(self, item: object) -> None:
        if isinstance(item, Update):
            self._journal().received(item.update_id, item.to_dict())

    async def put(self, item: object) -> None:
        self._record(item)
        await super().put(item)

    def put_nowait(self, item: object) -> None:
        self._record(item)
        super().put_nowait(item)


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


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(value: object, check: Any) -> bool:
    return value is None or bool(check(value))


def _chat_ok(chat: object) -> bool:
    return isinstance(chat, dict) and _int(chat.get("id")) and isinstance(chat.get("type"), str)


def _user_ok(user: object) -> bool:
    return isinstance(user, dict) and _int(user.get("id")) and isinstance(user.get("is_bot", False), bool)


def _entities_ok(entities: object) -> bool:
    return isinstance(entities, list) and all(
        isinstance(e, dict) and isinstance(e.get("type"), str) and _int(e.get("offset")) and _int(e.get("length"))
        for e in entities)


def _message_ok(message: object, depth: int = 0) -> bool:
    if not isinstance(message, dict) or depth > 2:
        return False
    return (_int(message.get("message_id")) and _int(message.get("date")) and _chat_ok(message.get("chat"))
            and _optional(message.get("from"), _user_ok) and _optional(message.get("sender_chat"), _chat_ok)
            and _optional(message.get("text"), lambda t: isinstance(t, str))
            and _optional(message.get("caption"), lambda t: isinstance(t, str))
            and _optional(message.get("message_thread_id"), _int)
            and _optional(message.get("entities"), _entities_ok)
            and _optional(message.get("caption_entities"), _entities_ok)
            and _optional(message.get("reply_to_message"), lambda m: _message_ok(m, depth + 1))
            and all(_optional(message.get(k), _int) for k in ("migrate_to_chat_id", "migrate_from_chat_id")))


def _reactions_ok(reactions: object) -> bool:
    return isinstance(reactions, list) and all(isinstance(r, dict) and isinstance(r.get("type"), str)
                                               for r in reactions)


def well_formed(update: dict[str, Any]) -> bool:
    """Whether the parts of ``update`` (its JSON form) that heedful reads have the Bot API's types.

    The Bot API promises them; python-telegram-bot takes whatever comes. A message needs an
    integer id and date and a chat with an integer id; texts are strings; a button press has
    a string id and a sender; a reaction, its chat, message id and lists of reactions.
    """
    for kind in ("message", "edited_message"):
        if kind in update and not _message_ok(update[kind]):
            return False
    query = update.get("callback_query")
    if "callback_query" in update and not (
            isinstance(query, dict) and isinstance(query.get("id"), str) and query["id"] != ""
            and _user_ok(query.get("from"))
            and _optional(query.get("data"), lambda d: isinstance(d, str))
            and _optional(query.get("message"), _message_ok)):
        return False
    reaction = update.get("message_reaction")
    return "message_reaction" not in update or (
        isinstance(reaction, dict) and _chat_ok(reaction.get("chat")) and _int(reaction.get("message_id"))
        and _reactions_ok(reaction.get("new_reaction")) and _reactions_ok(reaction.get("old_reaction", []))
        and _optional(reaction.get("user"), _user_ok) and _optional(reaction.get("actor_chat"), _chat_ok))


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
            if not well_formed(item):
                raise ValueError("a field has the wrong type")
        except Exception as err:  # whatever the parser trips on, this update is unusable
            log.warning("update %d is malformed (%s: %s); skipping it", update_id, type(err).__name__, err)
            item, changed = {"update_id": update_id}, True
        kept.append(item)
    if not changed:
        return payload
    data["result"] = kept
    return json.dumps(data).encode()
