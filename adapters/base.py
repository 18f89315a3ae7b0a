"""The base every platform adapter builds on: reply streaming and teaching, done once.

A platform adapter turns its events into ``Turn``/``Feedback`` and calls
``respond``/``teach`` here; it supplies only the platform calls (send, edit) and
the platform facts (is this user an admin?).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

from engine import (
    ChannelKey,
    Engine,
    Feedback,
    FeedbackKind,
    FeedbackReceipt,
    HeedfulError,
    InputError,
    Overloaded,
    Turn,
)

from .policy import Deduplicator, TeachPolicy
from .settings import TeachSettings
from .streaming import AppendCalls, AppendStreamer, EditFn, ReplyStreamer, SendFn, StreamResult

__all__ = ["BaseAdapter"]

log = logging.getLogger(__name__)


class BaseAdapter(ABC):
    """One platform connection serving many channels through one engine."""

    platform: str = ""

    def __init__(self, engine: Engine, teach: TeachSettings) -> None:
        self.engine = engine
        self.policy = TeachPolicy(teach.teach, frozenset(teach.teachers))
        self.seen = Deduplicator()

    @abstractmethod
    async def start(self) -> None:
        """Connect and begin serving; returns once serving runs in the background."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect; safe to call twice or after a failed start."""

    async def respond(
        self,
        turn: Turn,
        *,
        send: SendFn,
        edit: EditFn,
        limit: int,
        interval: float,
        fail: SendFn | None = None,
        native: AppendCalls | None = None,
    ) -> StreamResult | None:
        """Answer ``turn`` by streaming the engine's reply through ``send``/``edit``.

        With ``native`` the reply streams through the platform's own streaming instead,
        falling back to ``send``/``edit`` when the platform refuses (``AppendStreamer``).
        Input errors and overload are answered with their clear message (through
        ``fail`` when given, e.g. to post it without feedback buttons; else ``send``);
        every platform message of the reply is linked to it so later feedback finds it.
        """
        fail = fail or send
        reply = self.engine.reply(turn)

        async def link(message_id: str) -> None:
            await self.engine.link_message(turn.channel, reply.reply_id, message_id)

        streamer: ReplyStreamer | AppendStreamer
        streamer = ReplyStreamer(send, edit, limit=limit, interval=interval, on_message=link)
        if native is not None:
            streamer = AppendStreamer(native, limit=limit, interval=interval, fallback=streamer, on_message=link)
        try:
            result = await streamer.stream(reply)
            if isinstance(streamer, AppendStreamer) and streamer.unavailable is not None:
                self.native_refused(streamer.unavailable)
            return result
        except (InputError, Overloaded) as err:
            if streamer.result.message_ids:
                await edit(streamer.result.message_ids[-1], str(err))
            else:
                await fail(str(err))
            return None
        except HeedfulError as err:
            log.warning("reply failed in %s: %s", turn.channel, err)
            await fail("Sorry, something went wrong while answering. Please try again.")
            return None

    def native_refused(self, why: str) -> None:
        """The platform refused native streaming (``respond(native=...)``); this reply went by
        edits. Adapters override this to stop asking."""

    async def teach(
        self,
        channel: ChannelKey,
        *,
        kind: FeedbackKind,
        author_id: str,
        is_admin: bool,
        groups: tuple[str, ...] = (),
        message_id: str = "",
        text: str = "",
        policy: TeachPolicy | None = None,
    ) -> FeedbackReceipt:
        """Apply feedback on the bot message ``message_id``, honouring who may teach.

        Thumbs are open to everyone; corrections and forgetting follow the policy
        (``policy`` when given, e.g. a per-guild one; else the adapter's).
        Returns a refused receipt (never raises) for policy and input problems.
        """
        policy = policy or self.policy
        if kind in (FeedbackKind.CORRECTION, FeedbackKind.FORGET) and not policy.may_teach(
            author_id, is_admin=is_admin, groups=groups
        ):
            return FeedbackReceipt(False, policy.refusal)
        try:
            return await self.engine.feedback(
                Feedback(channel=channel, kind=kind, author_id=author_id, message_id=message_id, text=text)
            )
        except HeedfulError as err:
            return FeedbackReceipt(False, str(err))
