"""The runtime every platform adapter shares, written once.

A platform adapter (Discord, Slack, Telegram) translates: its events become
``Turn``/``Feedback``, the engine's answers become platform calls. What every one of
them needs besides is here, in ``BaseAdapter``:

- **tasks** (``TaskGroup``, ``spawn``/``idle``/``stop``): every event is handled in a
  task of its own, at most ``concurrency`` at once (``HEEDFUL_<PLATFORM>_CONCURRENCY``,
  default 32), later ones waiting their turn; past ``backlog`` unfinished events new ones
  are dropped (and logged). A handler's error never reaches the platform library: it is
  logged here (``expected_failure`` names the platform failures worth one line rather than
  a traceback). ``idle()`` waits until every event so far is handled; stopping drains:
  no new events, ``shutdown_grace`` seconds for the running ones, then they are cancelled.
- **intake**: ``fresh(key)`` recognises a re-delivered event (platforms retry, resume and
  replay); ``from_self(author, bot=...)`` is the own-message filter (nothing the bot wrote,
  and no other bot, is ever answered: no loops).
- **who may do what**, one rule for every platform, the platform adapter supplying only
  the facts (``policy_for``, ``is_manager``, ``groups_of``): ``may_teach`` (the teach
  policy; admins and groups looked up only when the policy depends on them) and
  ``may_manage`` (forget, set the persona).
- **replies**: ``respond`` streams the engine's reply through the platform's calls;
  ``answering``/``withdraw`` take an answer back when its question is deleted.
- **feedback**: ``feedback`` applies a correction, a thumb or a forget under those rules.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar

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
from .settings import PlatformSettings
from .streaming import AppendCalls, AppendStreamer, EditFn, PreviewFn, ReplyStreamer, SendFn, StreamResult
from .texts import Texts

__all__ = ["Actor", "BaseAdapter", "Recent", "Seen", "TaskGroup"]

K = TypeVar("K")
V = TypeVar("V")

SORRY = "Sorry, something went wrong while answering. Please try again."


@dataclass(frozen=True)
class Actor:
    """Who did something (asked, corrected, pressed a button), as the rules need them.

    Platform adapters extend it with what their ``is_manager`` and ``groups_of`` read
    (Discord: the member's permissions and roles; Telegram: the chat and the message).
    """

    user_id: str


A = TypeVar("A", bound=Actor)


class Seen(Protocol):
    """Remembers which events were handled: ``first(key)`` is True once per key."""

    def first(self, key: Any, /) -> bool: ...


class Recent(OrderedDict[K, V]):
    """A bounded map that forgets its oldest entries: memory of recent facts that may be lost."""

    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class TaskGroup:
    """The tasks in which a platform adapter handles its events: tracked, bounded, guarded.

    ``spawn`` runs work in a new task once one of ``concurrency`` slots is free; ``track``
    adopts a task a platform library started itself. Every error of spawned work goes
    to ``on_error`` (never to the event loop's "exception was never retrieved").
    """

    def __init__(self, *, concurrency: int, backlog: int, label: str, log: logging.Logger,
                 on_error: Callable[[Exception], None]) -> None:
        self.backlog, self.label, self.log, self.on_error = backlog, label, log, on_error
        self.closed = True
        """No work is taken: not opened yet, or closing (``close``) or closed."""
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def open(self) -> None:
        """Take work (at first, and again after ``close``)."""
        self.closed = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        """Handle ``work`` in a tracked task; False (``work`` closed, never run) when closed or over the backlog."""
        if self.closed:
            work.close()
            self.log.info("ignored a %s event: shutting down", self.label)
            return False
        if len(self._tasks) >= self.backlog:
            work.close()
            self.log.warning("dropped a %s event: %d in progress already", self.label, len(self._tasks))
            return False
        self.track(asyncio.create_task(self._guarded(work)))
        return True

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` among this group's: ``idle`` and ``close`` wait for it too."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._slots:
                await work
        except Exception as err:
            self.on_error(err)

    async def idle(self) -> None:
        """Wait until every task tracked so far (and any it spawns) is done; cancelling the wait is safe."""
        while pending := self._others():
            await asyncio.wait(pending)

    async def close(self, grace: float) -> None:
        """Take no more work; give the running tasks ``grace`` seconds, then cancel them (and wait as long again)."""
        self.closed = True
        pending = self._others()
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()  # cancelling an answer stops its generation; what was posted so far stays
        if late:
            await asyncio.wait(late, timeout=grace)

    def _others(self) -> set[asyncio.Task[Any]]:
        """The unfinished tasks, except the one asking (a handler may stop the adapter)."""
        current = asyncio.current_task()
        return {task for task in self._tasks if task is not current and not task.done()}


class BaseAdapter(ABC, Generic[A]):
    """One platform connection serving many channels through one engine.

    Subclasses set ``platform`` and ``texts``, implement ``connect``, ``stop`` (which
    calls ``drain``) and ``is_manager``, and hand every event to ``spawn``.
    """

    platform: ClassVar[str] = ""
    texts: ClassVar[Texts]
    backlog: ClassVar[int] = 1000
    """Events accepted but not yet finished beyond which new ones are dropped (and logged)."""
    shutdown_grace: ClassVar[float] = 10.0
    """Seconds stopping lets running handlers (replies) finish before cancelling them."""
    manage_rule: ClassVar[Literal["managers", "teachers"]] = "managers"
    """Who besides the place's managers may manage the bot there; see ``may_manage``."""

    def __init__(self, engine: Engine, settings: PlatformSettings) -> None:
        self.engine = engine
        self.policy = TeachPolicy(settings.teach, frozenset(settings.teachers))
        self.seen: Seen = Deduplicator()
        self.own_id = ""
        """The bot's own user id on the platform, once connected (``from_self``)."""
        self.log = logging.getLogger(f"adapters.{self.platform}")
        self.tasks = TaskGroup(concurrency=settings.concurrency, backlog=self.backlog,
                               label=self.platform.capitalize(), log=self.log, on_error=self.handler_failed)
        self._answering: dict[str, asyncio.Task[Any]] = {}  # question -> the task answering it
        self._withdrawn: set[str] = set()

    # -- lifecycle and tasks ----------------------------------------------------------

    async def start(self) -> None:
        """Connect (``connect``) and begin serving; returns once serving runs in the background.

        Does nothing when started already. When connecting fails, everything opened so
        far is closed again (``stop``) and the error raised: the platform's start error
        names the setting to fix. Cancelling is safe (it stops too).
        """
        if not self.tasks.closed:
            return
        self.tasks.open()
        try:
            await self.connect()
        except BaseException:
            await self.stop()
            raise

    @abstractmethod
    async def connect(self) -> None:
        """Open the platform connection and begin receiving events in the background (``start``)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving, ``drain``, disconnect; safe to call twice or after a failed start."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Handle an event's ``work`` in a tracked task of its own (``TaskGroup.spawn``)."""
        self.tasks.spawn(work)

    async def idle(self) -> None:
        """Wait until every event received so far is fully handled (replies posted, feedback applied)."""
        await self.tasks.idle()

    async def drain(self) -> None:
        """Take no more events; let running handlers finish (up to ``shutdown_grace`` s), then cancel them.

        For ``stop``; a later ``start`` calls ``tasks.open()`` again.
        """
        await self.tasks.close(self.shutdown_grace)

    @property
    def closing(self) -> bool:
        """Whether the adapter takes no events: not started, stopping or stopped."""
        return self.tasks.closed

    def handler_failed(self, err: Exception) -> None:
        """Where every handler's error ends: one line for expected platform failures, else the traceback."""
        note = self.expected_failure(err)
        if note:
            self.log.warning("%s", note)
        else:
            self.log.error("handling a %s event failed", self.tasks.label, exc_info=err)

    def expected_failure(self, err: Exception) -> str | None:
        """One line about ``err`` if it is a platform failure to expect (a refused request, a rate
        limit given up on, a chat that is gone), else None. Platform adapters override it."""
        return None

    # -- intake -----------------------------------------------------------------------

    def fresh(self, key: Any) -> bool:
        """True the first time the event ``key`` arrives: platforms re-deliver (retries, resumes, restarts)."""
        return self.seen.first(key)

    def from_self(self, author_id: str, *, bot: bool = False) -> bool:
        """The own-message filter: True for what this bot wrote, and for any bot when ``bot`` (the
        platform marks the author as one): the bot never answers itself or another bot, so never loops."""
        return bot or (bool(self.own_id) and author_id == self.own_id)

    # -- who may do what --------------------------------------------------------------

    def policy_for(self, actor: A) -> TeachPolicy:
        """The teach policy where ``actor`` is (per guild or per chat overrides); else the adapter's."""
        return self.policy

    @abstractmethod
    async def is_manager(self, actor: A) -> bool:
        """Whether ``actor`` manages the place they act in (Manage Server on Discord, a chat admin on
        Telegram, a workspace admin on Slack; in a direct conversation, its person)."""

    async def groups_of(self, actor: A, candidates: Iterable[str]) -> tuple[str, ...]:
        """Which of the group (or role) ids in ``candidates`` ``actor`` belongs to; asked only for ``listed``."""
        return ()

    async def may_teach(self, actor: A) -> bool:
        """Whether ``actor`` may correct the bot where they are (``policy_for``): everyone, managers,
        or managers and the listed users and groups. Managers and groups are looked up only when
        the answer depends on them."""
        policy = self.policy_for(actor)
        if policy.may_teach(actor.user_id, is_admin=False):
            return True
        if await self.is_manager(actor):
            return True
        return policy.mode == "listed" and policy.may_teach(
            actor.user_id, is_admin=False, groups=await self.groups_of(actor, policy.allowed))

    async def may_manage(self, actor: A) -> bool:
        """Whether ``actor`` may make the bot forget, or set its persona, where they are.

        The one rule every command that does either asks: the place's managers may
        (``is_manager``); where ``manage_rule`` is ``"teachers"`` (Slack), so may everyone
        the teach policy lets teach.
        """
        if self.manage_rule == "teachers":
            return await self.may_teach(actor)
        return await self.is_manager(actor)

    # -- replies ----------------------------------------------------------------------

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
        preview: PreviewFn | None = None,
    ) -> StreamResult | None:
        """Answer ``turn`` by streaming the engine's reply through ``send``/``edit``.

        With ``native`` the reply streams through the platform's own streaming instead,
        falling back to ``send``/``edit`` when the platform refuses (``AppendStreamer``);
        with ``preview`` the unfinished part shows as a draft (``ReplyStreamer``).
        Input errors and overload are answered with their clear message (through
        ``fail`` when given, e.g. to post it without feedback buttons; else ``send``);
        every platform message of the reply is linked to it so later feedback finds it.
        Raises what the platform calls raise beyond that (the task's guard logs it);
        cancelling stops the generation.
        """
        fail = fail or send
        reply = self.engine.reply(turn)

        async def link(message_id: str) -> None:
            await self.engine.link_message(turn.channel, reply.reply_id, message_id)

        streamer: ReplyStreamer | AppendStreamer
        streamer = ReplyStreamer(send, edit, limit=limit, interval=interval, on_message=link, preview=preview)
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
            self.log.warning("reply failed in %s: %s", turn.channel, err)
            await fail(SORRY)
            return None

    def native_refused(self, why: str) -> None:
        """The platform refused native streaming (``respond(native=...)``); this reply went by
        edits. Adapters override this to stop asking."""

    @asynccontextmanager
    async def answering(self, question: str, take_back: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
        """Answer ``question`` (a platform id of the asking message) inside this block, so that
        ``withdraw(question)`` cancels the answer and awaits ``take_back`` (delete what was posted)."""
        current = asyncio.current_task()
        if current is not None:
            self._answering[question] = current
        try:
            yield
        except asyncio.CancelledError:
            if question in self._withdrawn:  # the question was deleted: take the half answer back
                await asyncio.shield(take_back())
            raise
        finally:
            self._answering.pop(question, None)
            self._withdrawn.discard(question)

    def withdraw(self, question: str) -> None:
        """``question`` was deleted: stop its answer, if one is being written (cancelling frees the model slot)."""
        task = self._answering.get(question)
        if task is not None and not task.done():
            self._withdrawn.add(question)
            task.cancel()

    # -- feedback ---------------------------------------------------------------------

    async def feedback(self, channel: ChannelKey, actor: A, kind: FeedbackKind, *, message_id: str = "",
                       text: str = "") -> FeedbackReceipt:
        """Apply ``actor``'s feedback on the bot message ``message_id`` (empty: the last answer in ``channel``).

        Thumbs are open to everyone; a correction needs ``may_teach``, forgetting
        ``may_manage``. Returns a refused receipt (never raises) for those rules and for
        input problems.
        """
        if kind is FeedbackKind.CORRECTION and not await self.may_teach(actor):
            return FeedbackReceipt(False, self.policy.refusal)
        if kind is FeedbackKind.FORGET and not await self.may_manage(actor):
            return FeedbackReceipt(False, self.texts.managers_only.format(what="make me forget"))
        try:
            return await self.engine.feedback(
                Feedback(channel=channel, kind=kind, author_id=actor.user_id, message_id=message_id, text=text)
            )
        except HeedfulError as err:
            return FeedbackReceipt(False, str(err))
