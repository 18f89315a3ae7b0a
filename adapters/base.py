"""The runtime every platform adapter shares, written once.

A platform adapter (Discord, Slack, Telegram) translates: its events become
``Turn``/``Feedback``, the engine's answers become platform calls. What every one of
them needs besides is here, in ``BaseAdapter``:

- **tasks** (``TaskGroup``, ``spawn``/``idle``/``stop``): every event is handled in a
  task of its own. A handler's error never reaches the platform library: it is logged
  here (``expected_failure`` names the platform failures worth one line rather than a
  traceback). ``idle()`` waits until every event so far is handled; stopping drains: no
  new events, ``shutdown_grace`` seconds for the running ones, then they are cancelled.
- **queues** (``Lanes``, ``serve``): an answer waits in its channel's queue first, then
  for one of ``concurrency`` shared slots (``HEEDFUL_<PLATFORM>_CONCURRENCY``, default
  32); one channel holds at most ``channel_concurrency`` slots, so a flood in one channel
  never starves the others. Past ``channel_backlog`` questions waiting in one channel (or
  ``backlog`` in all), a question gets a short "busy" reply: never silence.
- **intake**: ``fresh(key)`` recognises a re-delivered event (platforms retry, resume and
  replay); ``from_self(author, bot=...)`` is the own-message filter (nothing the bot wrote,
  and no other bot, is ever answered: no loops).
- **who may do what**, one rule for every platform, the platform adapter supplying only
  the facts (``policy_for``, ``is_manager``, ``groups_of``): ``may_teach`` (the teach
  policy; admins and groups looked up only when the policy depends on them) and
  ``may_manage`` (forget, set the persona: managers, or with ``manage = "teachers"``
  whoever may teach).
- **replies**: ``respond`` streams the engine's reply through the platform's calls; the
  reply is read apart from the platform calls (``decoupled``), so the engine's channel
  lock is never held while a platform makes the bot wait, and a reply waits at most
  ``rate_limit_cap`` seconds in all on rate limits: it ends with its full text or with a
  short notice. ``answering``/``withdraw`` take an answer back when its question is deleted.
- **feedback**: ``feedback`` applies a correction, a thumb or a forget under those rules,
  with the platform's event id, so a redelivered event is applied once.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

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
from .streaming import (
    AppendCalls,
    AppendStreamer,
    EditFn,
    PreviewFn,
    RateLimited,
    ReplyStreamer,
    SendFn,
    StreamResult,
    WaitBudget,
    decoupled,
)
from .texts import Texts

__all__ = ["Actor", "BaseAdapter", "Lanes", "Recent", "Seen", "TaskGroup"]

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
    """The tasks in which a platform adapter handles its events: tracked and guarded.

    ``spawn`` runs work in a new task; ``track`` adopts a task a platform library started
    itself. Every error of spawned work goes to ``on_error`` (never to the event loop's
    "exception was never retrieved"). Handling an event is cheap until it asks for an
    answer, which waits its turn in ``Lanes``; so nothing is dropped here.
    """

    def __init__(self, *, label: str, log: logging.Logger, on_error: Callable[[Exception], None]) -> None:
        self.label, self.log, self.on_error = label, log, on_error
        self.closed = True
        """No work is taken: not opened yet, or closing (``close``) or closed."""
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def open(self) -> None:
        """Take work (at first, and again after ``close``)."""
        self.closed = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        """Handle ``work`` in a tracked task; False (``work`` closed, never run) when closed."""
        if self.closed:
            work.close()
            self.log.info("ignored a %s event: shutting down", self.label)
            return False
        self.track(asyncio.create_task(self._guarded(work)))
        return True

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` among this group's: ``idle`` and ``close`` wait for it too."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
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


class _Slots:
    """A semaphore that serves its waiters strictly in the order they came."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def available(self) -> bool:
        """Whether ``acquire`` would not wait."""
        return self.free > 0 and not self._waiters

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the slot just as the wait was cancelled: pass it on
            elif turn in self._waiters:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


class _Lane:
    def __init__(self, slots: int) -> None:
        self.slots = _Slots(slots)
        self.waiting = 0
        self.users = 0


class Lanes:
    """Where answers wait: first in their channel's queue, then for one of the shared slots.

    ``run(channel, work)`` runs ``work`` once the channel has one of its
    ``per_channel`` slots (its earlier questions first) and then one of the
    ``concurrency`` shared ones (first come, first served across channels). A channel
    thus never holds more than ``per_channel`` shared slots, whatever it sends. When
    ``work`` would have to wait and ``channel_backlog`` questions of that channel wait
    already, or ``backlog`` in all, ``run`` returns False at once and ``work`` never runs.
    """

    def __init__(self, *, concurrency: int, per_channel: int, channel_backlog: int, backlog: int) -> None:
        self.per_channel, self.channel_backlog, self.backlog = per_channel, channel_backlog, backlog
        self._shared = _Slots(concurrency)
        self._lanes: dict[Hashable, _Lane] = {}
        self.waiting = 0
        """Questions waiting, across channels."""
        self.running = 0
        self.refused = 0

    def waiting_in(self, channel: Hashable) -> int:
        lane = self._lanes.get(channel)
        return lane.waiting if lane is not None else 0

    async def run(self, channel: Hashable, work: Callable[[], Awaitable[None]]) -> bool:
        lane = self._lanes.get(channel)
        if lane is None:
            lane = self._lanes[channel] = _Lane(self.per_channel)
        at_once = lane.slots.available and self._shared.available  # served now: waits in no queue
        if not at_once and (lane.waiting >= self.channel_backlog or self.waiting >= self.backlog):
            if lane.users == 0:
                del self._lanes[channel]
            self.refused += 1
            return False
        lane.waiting += 1
        lane.users += 1
        self.waiting += 1
        queued = True
        try:
            await lane.slots.acquire()
            try:
                await self._shared.acquire()
                lane.waiting -= 1
                self.waiting -= 1
                queued = False
                self.running += 1
                try:
                    await work()
                finally:
                    self.running -= 1
                    self._shared.release()
            finally:
                lane.slots.release()
        finally:
            if queued:
                lane.waiting -= 1
                self.waiting -= 1
            lane.users -= 1
            if lane.users == 0 and self._lanes.get(channel) is lane:
                del self._lanes[channel]
        return True


class BaseAdapter(ABC, Generic[A]):
    """One platform connection serving many channels through one engine.

    Subclasses set ``platform`` and ``texts``, implement ``connect``, ``stop`` (which
    calls ``drain``) and ``is_manager``, and hand every event to ``spawn``.
    """

    platform: ClassVar[str] = ""
    texts: ClassVar[Texts]
    backlog: ClassVar[int] = 1000
    """Questions waiting for an answer, across channels, beyond which new ones get a busy reply."""
    shutdown_grace: ClassVar[float] = 10.0
    """Seconds stopping lets running handlers (replies) finish before cancelling them."""

    def __init__(self, engine: Engine, settings: PlatformSettings) -> None:
        self.engine = engine
        self.policy = TeachPolicy(settings.teach, frozenset(settings.teachers))
        self.manage_rule = settings.manage
        """Who may make the bot forget or set its persona: ``admins`` (the place's managers) or ``teachers``."""
        self.rate_limit_cap = settings.rate_limit_cap
        self.seen: Seen = Deduplicator()
        self.own_id = ""
        """The bot's own user id on the platform, once connected (``from_self``)."""
        self.log = logging.getLogger(f"adapters.{self.platform}")
        self.tasks = TaskGroup(label=self.platform.capitalize(), log=self.log, on_error=self.handler_failed)
        self.lanes = Lanes(concurrency=settings.concurrency, per_channel=settings.channel_concurrency,
                           channel_backlog=settings.channel_backlog, backlog=self.backlog)
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

    async def may_correct(self, actor: A) -> bool:
        """Whether ``actor`` may offer a correction here: they may teach, or (``teach = "review"``)
        it will wait for a manager. What opens a correction form or prompt asks this."""
        return self.policy_for(actor).reviewed or await self.may_teach(actor)

    async def may_manage(self, actor: A) -> bool:
        """Whether ``actor`` may make the bot forget, or set its persona, where they are.

        The one rule every command that does either asks, on every platform: the place's
        managers may (``is_manager``); with ``manage = "teachers"``, so may everyone the
        teach policy lets teach.
        """
        if self.manage_rule == "teachers":
            return await self.may_teach(actor)
        return await self.is_manager(actor)

    def manage_refusal(self, what: str) -> str:
        """What someone who may not manage the bot is told when they try ``what`` ("make me forget")."""
        template = self.texts.teachers_only if self.manage_rule == "teachers" else self.texts.managers_only
        return template.format(what=what)

    # -- queues -------------------------------------------------------------------------

    async def serve(self, channel: ChannelKey, answer: Callable[[], Awaitable[None]],
                    busy: Callable[[str], Awaitable[Any]]) -> bool:
        """Run ``answer`` in ``channel``'s queue (``Lanes``): after that channel's earlier
        questions, with one of the shared slots. When the queue is full, ``busy`` is awaited
        instead with a polite text to post in answer to the question; returns False then."""
        if await self.lanes.run(channel.scope, answer):
            return True
        self.log.info("%s is busy (%d waiting there, %d in all): asked to try again", channel.scope,
                      self.lanes.waiting_in(channel.scope), self.lanes.waiting)
        await busy(self.texts.busy)
        return False

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
        The reply is read as fast as the engine writes it (``decoupled``): waiting on the
        platform never holds the engine's channel lock. Rate limits are waited out for at
        most ``rate_limit_cap`` seconds in all; past that the reply ends with a short notice
        (``texts.gave_up``) instead of its text. Input errors and overload are answered
        with their clear message (through ``fail`` when given, e.g. to post it without
        feedback buttons; else ``send``); every platform message of the reply is linked to
        it so later feedback finds it. Raises what the platform calls raise beyond rate
        limits (the task's guard logs it); cancelling stops the generation.
        """
        fail = fail or send
        reply = self.engine.reply(turn)

        async def link(message_id: str) -> None:
            await self.engine.link_message(turn.channel, reply.reply_id, message_id)

        budget = WaitBudget(self.rate_limit_cap)
        streamer: ReplyStreamer | AppendStreamer
        streamer = ReplyStreamer(send, edit, limit=limit, interval=interval, on_message=link, preview=preview,
                                 budget=budget)
        if native is not None:
            streamer = AppendStreamer(native, limit=limit, interval=interval, fallback=streamer, on_message=link,
                                      budget=budget)
        chunks = decoupled(reply)
        try:
            result = await streamer.stream(chunks)
            if isinstance(streamer, AppendStreamer) and streamer.unavailable is not None:
                self.native_refused(streamer.unavailable)
            return result
        except RateLimited as limited:
            self.log.warning("gave up on a reply in %s after %.1f s of rate limits (%s)", turn.channel,
                             budget.waited, limited)
            await chunks.aclose()  # stop the generation: nothing more can be shown
            await streamer.give_up(self.texts.gave_up, fail)
            return None
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
        finally:
            await chunks.aclose()

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
                       text: str = "", event_id: str = "", personal: bool = False) -> FeedbackReceipt:
        """Apply ``actor``'s feedback on the bot message ``message_id`` (empty: the last answer in ``channel``).

        Thumbs are open to everyone (a 👍 teaches a confirmed paraphrase only from someone who
        may teach); a correction needs ``may_teach``, forgetting
        ``may_manage``. A correction ``personal`` ("just for me", ``Feedback.personal``) is open to
        everyone and waits for no review: it shapes only the replies to ``actor``. ``event_id`` is
        the platform's stable id of the event that carried it (``event_key``): delivered again, it
        is applied once (the engine answers with the first receipt). Returns a refused receipt
        (never raises) for those rules and for input problems.
        """
        review = False
        if kind is FeedbackKind.CORRECTION and not personal and not await self.may_teach(actor):
            if not self.policy_for(actor).reviewed:
                return FeedbackReceipt(False, self.policy_for(actor).refusal)
            review = True  # ``teach = "review"``: it waits for a manager (``heedful review``, the admin console)
        if kind is FeedbackKind.UP and not await self.may_teach(actor):
            review = True  # counted as a thumb, but it cannot confirm a paraphrase (that would teach)
        if kind is FeedbackKind.FORGET and not await self.may_manage(actor):
            return FeedbackReceipt(False, self.manage_refusal("make me forget"))
        try:
            return await self.engine.feedback(
                Feedback(channel=channel, kind=kind, author_id=actor.user_id, message_id=message_id, text=text,
                         event_id=event_id, needs_review=review, personal=personal)
            )
        except HeedfulError as err:
            return FeedbackReceipt(False, str(err))

    def event_key(self, *parts: object) -> str:
        """A stable id for a platform event (``feedback``'s ``event_id``): the platform and ``parts``."""
        return ":".join([self.platform, *(str(p) for p in parts)])

    async def forget_all(self, channel: ChannelKey, correction_ids: list[int] | None = None, *,
                         author_id: str = "", event_id: str = "") -> int:
        """``Engine.forget`` of ``channel`` (all, or ``correction_ids``) by ``author_id`` (the audit log),
        applied once per ``event_id``; how many were forgotten (by the first delivery, when the event
        came again)."""
        return await self.engine.forget(channel, correction_ids, author_id=author_id, event_id=event_id)
