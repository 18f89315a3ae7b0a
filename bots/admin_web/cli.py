"""``heedful admin``: the admin console's sign-in tokens (create one, list them, revoke one)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Annotated

import typer

from engine.store import Store

from ..cli_common import ConfigOption, JsonOption, emit, fail, with_store
from ..config import settings_or_exit
from .auth import new_token, parse_scope

__all__ = ["admin_cli"]

admin_cli = typer.Typer(help="Sign-in tokens of the admin console (served by `heedful run` under /admin).",
                        no_args_is_help=True)


@admin_cli.command()
def create(
    name: Annotated[str, typer.Argument(help="who the token is for (the audit log names them admin:NAME)")],
    space: Annotated[str, typer.Option("--space", help="limit it to one space: platform:space "
                                                       "(e.g. discord:123456); default: every space")] = "",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a manager's sign-in token and print it, once: only its salted hash is kept."""
    settings = settings_or_exit(config)
    try:
        scope = parse_scope(space)
    except ValueError as err:
        raise fail(str(err)) from None
    if not name.strip() or len(name) > 64:
        raise fail("give the token a name of 1 to 64 characters")
    token = asyncio.run(with_store(settings, lambda s: new_token(s, name.strip(), scope)))
    emit({"name": name.strip(), "space": scope or "*", "token": token}, as_json,
         f"token for {name.strip()} ({scope or 'every space'}); shown once, keep it safe:\n{token}")


@admin_cli.command("list")
def list_tokens(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the sign-in tokens (never their secrets)."""
    settings = settings_or_exit(config)

    async def action(store: Store) -> list[dict[str, object]]:
        return [{"id": t.id, "name": t.name, "space": t.scope or "*", "created_at": t.created_at,
                 "revoked": t.revoked_at is not None} for t in await store.admin_tokens()]

    rows = asyncio.run(with_store(settings, action))
    text = "\n".join(
        f"#{r['id']} {r['name']} space {r['space']} created "
        f"{datetime.datetime.fromtimestamp(float(str(r['created_at']))).isoformat(timespec='seconds')}"
        f"{' (revoked)' if r['revoked'] else ''}" for r in rows) or "no tokens"
    emit({"tokens": rows}, as_json, text)


@admin_cli.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (see `heedful admin list`)")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token; its sessions end at once."""
    settings = settings_or_exit(config)
    done = asyncio.run(with_store(settings, lambda s: s.revoke_admin_token(token_id)))
    if not done:
        raise fail(f"no live token #{token_id}")
    emit({"revoked": token_id}, as_json, f"revoked token #{token_id}")
