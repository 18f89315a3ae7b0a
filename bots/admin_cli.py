"""What an operator needs against poisoning and for privacy: the audit log, the review
queue, and per-user export and delete (``heedful audit``, ``heedful review``,
``heedful user export|delete``).

They work on the database directly (no model is loaded), so they run beside a running
bot, which follows the change from its next message.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Annotated, Any

import typer

from engine.store import Store, StoredAudit, StoredCorrection

from .cli_common import ChannelArgument, ConfigOption, JsonOption, channel_key, emit, fail, with_store
from .config import settings_or_exit

__all__ = ["audit", "review", "user_app"]

user_app = typer.Typer(help="Export or delete everything kept about one person.", no_args_is_help=True)

UserArgument = Annotated[str, typer.Argument(help="the person as platform:user-id (e.g. telegram:123456)")]


def audit(
    channel: Annotated[str | None, typer.Argument(help="console channel name or platform:space:channel "
                                                       "(all channels when left out)")] = None,
    author: Annotated[str | None, typer.Option("--author", help="only what this user id did")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="newest entries shown")] = 100,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Who taught, forgot, approved, changed the persona or rolled back what, and when (newest first)."""
    settings = settings_or_exit(config)
    key = channel_key(channel) if channel else None
    entries = asyncio.run(with_store(settings, lambda s: s.audit(key, author_id=author, limit=limit)))
    rows = [_audit_row(e) for e in entries]
    text = "\n".join(f"{_when(r['created_at'])}  {r['channel'] or '-'}  {r['author_id'] or '(bot)'}  "
                     f"{r['action']}  {_short(r['detail'])}" for r in rows) or "no entries"
    emit({"channel": str(key) if key else None, "entries": rows}, as_json, text)


def review(
    channel: ChannelArgument,
    approve: Annotated[int | None, typer.Option("--approve", help="approve this pending correction")] = None,
    reject: Annotated[int | None, typer.Option("--reject", help="reject this pending correction")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the corrections waiting for review in a channel (``teach = "review"``), or decide one."""
    if approve is not None and reject is not None:
        raise fail("give --approve or --reject, not both")
    settings = settings_or_exit(config)
    key = channel_key(channel)
    decided = approve if approve is not None else reject

    async def action(store: Store) -> tuple[StoredCorrection | None, list[StoredCorrection]]:
        done = None
        if decided is not None:
            done = await store.review(key, decided, approve=approve is not None, author_id="cli")
        return done, await store.pending(key)

    done, waiting = asyncio.run(with_store(settings, action))
    if decided is not None and done is None:
        raise fail(f"no correction #{decided} waits for review in {key}")
    rows = [c.public().to_dict() for c in waiting]
    data: dict[str, Any] = {"channel": str(key), "pending": rows}
    lines = [f"#{r['correction_id']} by {r['author_id'] or '?'}: {r['question']!r} -> {r['answer']!r}" for r in rows]
    if done is not None:
        data["decided"] = {"correction_id": done.id, "approved": approve is not None}
        lines.insert(0, f"{'approved' if approve is not None else 'rejected'} #{done.id}")
    emit(data, as_json, "\n".join(lines) or "nothing waits for review")


@user_app.command("export")
def export_user(user: UserArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Everything kept about one person: what they taught, said, rated and changed."""
    platform, user_id = _person(user)
    settings = settings_or_exit(config)
    data = asyncio.run(with_store(settings, lambda s: s.user_data(platform, user_id)))
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    emit(data, as_json, f"{user}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


@user_app.command("delete")
def delete_user(user: UserArgument, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Delete one person from the database file: their corrections, messages and the replies to
    them, thumbs and audit entries; LoRA versions trained on their corrections; then vacuum."""
    platform, user_id = _person(user)
    settings = settings_or_exit(config)
    counts = asyncio.run(with_store(settings, lambda s: s.delete_user(platform, user_id, author_id="cli")))
    emit({"user": user, "deleted": counts}, as_json,
         f"deleted {user}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def _person(user: str) -> tuple[str, str]:
    platform, _, user_id = user.partition(":")
    if not platform or not user_id:
        raise fail(f"USER must be platform:user-id (e.g. telegram:123456), not {user!r}")
    return platform, user_id


def _audit_row(entry: StoredAudit) -> dict[str, Any]:
    return {"entry_id": entry.id, "channel": str(entry.scope) if entry.scope else "", "author_id": entry.author_id,
            "action": entry.action, "detail": entry.detail, "created_at": entry.created_at}


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(detail: dict[str, Any], limit: int = 80) -> str:
    text = ", ".join(f"{k}={v}" for k, v in detail.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"
