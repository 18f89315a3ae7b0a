"""Slack Web API facts the adapter needs: who the bot is, who is an admin, posting a reply.

Reply messages go through a client without slack_sdk's rate-limit retries, so that
a 429 reaches ``ReplyStreamer`` as ``RateLimited`` (it skips an intermediate edit
and retries the final text); every other call uses a client that retries 429s and
server errors itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from ..streaming import AppendCalls, EditFn, RateLimited, SendFn, StreamingUnavailable
from .markup import escape, to_slack

__all__ = ["CappedRateLimitRetry", "Directory", "Identity", "Undeliverable", "api_error", "reply_calls",
           "stream_calls"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """The bot as ``auth.test`` describes it."""

    team_id: str
    user_id: str
    bot_id: str
    enterprise_id: str = ""

    @classmethod
    async def fetch(cls, client: AsyncWebClient) -> Identity:
        """Raises ``SlackApiError`` when Slack refuses the token."""
        data = (await client.auth_test()).data
        assert isinstance(data, dict)
        return cls(
            team_id=str(data.get("team_id") or ""),
            user_id=str(data.get("user_id") or ""),
            bot_id=str(data.get("bot_id") or ""),
            enterprise_id=str(data.get("enterprise_id") or ""),
        )

    def knows(self, team_id: str | None, enterprise_id: str | None) -> bool:
        """Whether an event from this team (or Enterprise Grid org) is for this installation."""
        return (bool(team_id) and team_id == self.team_id) or (
            bool(self.enterprise_id) and enterprise_id == self.enterprise_id
        )

    def wrote(self, message: dict[str, object]) -> bool:
        """Whether a message payload was posted by this bot."""
        return (bool(self.user_id) and message.get("user") == self.user_id) or (
            bool(self.bot_id) and message.get("bot_id") == self.bot_id
        )


class CappedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry, except that it never sleeps longer than ``cap`` seconds at a time
    (Slack's ``Retry-After`` may ask for minutes; ``rate_limit_cap`` bounds every wait)."""

    def __init__(self, *, max_retry_count: int, cap: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.cap = cap

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        if response is None:
            raise error or RuntimeError("no response to retry")
        state.next_attempt_requested = True
        await asyncio.sleep(min(_retry_after(response.headers), self.cap))
        state.increment_current_attempt()


def _retry_after(headers: object) -> float:
    """Seconds from a ``Retry-After`` header (1 when absent or unreadable)."""
    items = headers.items() if isinstance(headers, Mapping) else []  # a dict, or aiohttp's multidict
    for name, value in items:
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(value[0] if isinstance(value, list) else value))
            except (TypeError, ValueError, IndexError):
                return 1.0
    return 1.0


class Undeliverable(Exception):
    """Slack refused a reply for good (not in channel, archived, ...); the reply is abandoned."""


def api_error(err: SlackApiError) -> str:
    """Slack's error code (``channel_not_found``...), never anything from the request."""
    data = getattr(err.response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    return str(code or f"HTTP {getattr(err.response, 'status_code', '?')}")


def _transient(err: SlackApiError) -> RateLimited | None:
    status = getattr(err.response, "status_code", 0)
    if status == 429 or api_error(err) == "ratelimited":
        return RateLimited(_retry_after(getattr(err.response, "headers", {}) or {}))
    if status >= 500 or api_error(err) in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
        return RateLimited(1.0)  # Slack's own trouble: worth a retry, like a rate limit
    return None


def _failure(err: SlackApiError, method: str, channel: str) -> Exception:
    """What a refused reply call raises: ``RateLimited`` when worth retrying, else ``Undeliverable``."""
    return _transient(err) or Undeliverable(f"{method} in {channel}: {api_error(err)}")


async def _posted(call: Awaitable[AsyncSlackResponse], posted: list[str],
                  refused: Callable[[SlackApiError], Exception]) -> str:
    """The ts of the message ``call`` posts (appended to ``posted`` too); raises ``refused(err)`` when Slack says no."""
    try:
        response = await call
    except SlackApiError as err:
        raise refused(err) from None
    ts = str(response.get("ts") or "")
    posted.append(ts)
    return ts


def reply_calls(client: AsyncWebClient, channel: str, thread_ts: str, posted: list[str]) -> tuple[SendFn, EditFn]:
    """``send``/``edit`` for ``ReplyStreamer``: chat.postMessage / chat.update in ``channel``.

    Text is converted with ``to_slack``. ``posted`` receives each new message's ts.
    Raises ``RateLimited`` on 429 and server errors, ``Undeliverable`` on the rest.
    """

    async def send(text: str) -> str:
        return await _posted(client.chat_postMessage(channel=channel, text=to_slack(text), thread_ts=thread_ts or None,
                                                     unfurl_links=False, unfurl_media=False),
                             posted, lambda err: _failure(err, "chat.postMessage", channel))

    async def edit(ts: str, text: str) -> None:
        try:
            await client.chat_update(channel=channel, ts=ts, text=to_slack(text))
        except SlackApiError as err:
            raise _failure(err, "chat.update", channel) from None

    return send, edit


def stream_calls(client: AsyncWebClient, channel: str, thread_ts: str, posted: list[str], *, team_id: str,
                 user_id: str) -> AppendCalls:
    """``AppendCalls`` on Slack's native streaming: chat.startStream / appendStream / stopStream.

    The reply streams as a thread reply to the asker's message, addressed to the asker
    (Slack requires a recipient in channels). Text goes as ``markdown_text``: Slack
    renders Markdown itself, so only ``&``, ``<`` and ``>`` are escaped (Markdown shows
    the entities as the characters; nothing becomes a ping). A refusal to start (an unknown
    method on an older workspace, a missing scope, ...) raises ``StreamingUnavailable``.
    ``posted`` receives each new message's ts, as with ``reply_calls``.
    """

    async def start(text: str) -> str:
        return await _posted(client.chat_startStream(channel=channel, thread_ts=thread_ts, markdown_text=escape(text),
                                                     recipient_team_id=team_id or None,
                                                     recipient_user_id=user_id or None),
                             posted, lambda err: _transient(err) or StreamingUnavailable(api_error(err)))

    async def append(ts: str, text: str) -> None:
        try:
            await client.chat_appendStream(channel=channel, ts=ts, markdown_text=escape(text))
        except SlackApiError as err:
            raise _failure(err, "chat.appendStream", channel) from None

    async def stop(ts: str, text: str) -> None:
        try:
            await client.chat_stopStream(channel=channel, ts=ts, markdown_text=escape(text) or None)
        except SlackApiError as err:
            raise _failure(err, "chat.stopStream", channel) from None

    return AppendCalls(start, append, stop)


class Directory:
    """Admin flags and user-group membership, cached for ``ttl`` seconds.

    Looked up only when the teach policy needs them. A failed lookup (say, a
    missing ``users:read`` scope) counts as "not an admin / not a member".
    """

    def __init__(self, client: AsyncWebClient, ttl: float = 300.0) -> None:
        self.client, self.ttl = client, ttl
        self._admins: dict[str, tuple[bool, float]] = {}
        self._groups: dict[str, tuple[frozenset[str], float]] = {}

    async def is_admin(self, user_id: str) -> bool:
        cached = self._admins.get(user_id)
        if cached and time.monotonic() - cached[1] < self.ttl:
            return cached[0]
        admin = False
        try:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
            admin = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        except SlackApiError as err:
            log.warning("users.info failed (%s); treating %s as not an admin", api_error(err), user_id)
        if len(self._admins) > 10_000:
            self._admins.clear()
        self._admins[user_id] = (admin, time.monotonic())
        return admin

    async def groups_of(self, user_id: str, candidates: Iterable[str]) -> tuple[str, ...]:
        """Which of the user-group ids in ``candidates`` (``S…``) have ``user_id`` as a member."""
        found = []
        for group in candidates:
            if not group.startswith("S"):
                continue  # a user id, not a user group
            cached = self._groups.get(group)
            if cached is None or time.monotonic() - cached[1] >= self.ttl:
                members: frozenset[str] = frozenset()
                try:
                    listed = (await self.client.usergroups_users_list(usergroup=group)).get("users") or []
                    members = frozenset(str(u) for u in listed)
                except SlackApiError as err:
                    log.warning("usergroups.users.list %s failed (%s)", group, api_error(err))
                cached = self._groups[group] = (members, time.monotonic())
            if user_id in cached[0]:
                found.append(group)
        return tuple(found)
