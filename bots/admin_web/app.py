"""The admin console's routes: sign-in, overview, a channel, the audit log, people.

Every page but the sign-in form needs a session; every change is a POST carrying the
session's CSRF token, goes through the engine, and is written to the audit log with the
manager (``admin:NAME``) as author. A manager limited to one space gets the same 404 for
another space's channel as for a channel that does not exist.
"""

from __future__ import annotations

import datetime
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine import ChannelKey, Engine, HeedfulError

from .auth import SESSION_SECONDS, Manager, check_token, end_session, session_manager, start_session
from .charts import bar_chart

__all__ = ["console_app", "SESSION_COOKIE"]

HERE = Path(__file__).parent
SESSION_COOKIE = "heedful_session"
LOGIN_COOKIE = "heedful_login"
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_DONE = {  # what a change did, named in the redirect so no free text is reflected into the page
    "forgot": "Forgotten.", "approved": "Approved.", "rejected": "Rejected.", "persona": "Persona saved.",
    "rollback": "Rolled back.", "promoted": "Promoted.", "deleted": "Deleted.", "missing": "Nothing to change.",
}

Handler = Callable[[Request, Manager], Awaitable[Response]]


def console_app(engine: Engine, ready: Callable[[], bool] = lambda: True, *,
                secure_cookies: bool | None = None) -> Starlette:
    """The console as an ASGI app, to mount under ``/admin``.

    ``ready()``: are the platforms connected? ``secure_cookies``: mark cookies ``Secure``
    (None: when the request came over https, as a TLS-terminating proxy on this host tells uvicorn)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=1, ensure_ascii=False, sort_keys=True)
    store = engine.store

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" if secure_cookies is None else secure_cookies

    def page(request: Request, name: str, manager: Manager | None, status: int = 200, **context: Any) -> Response:
        done = _DONE.get(request.query_params.get("done", ""))
        response = templates.TemplateResponse(request, name, {"manager": manager, "done": done, **context},
                                              status_code=status)
        response.headers.update(_HEADERS)
        return response

    def not_found(request: Request, manager: Manager) -> Response:
        return page(request, "error.html", manager, 404, title="Not found",
                    message="There is no such page, or it is not yours to see.")

    def signed_in(handler: Handler, *, change: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            manager = await session_manager(store, request.cookies.get(SESSION_COOKIE))
            if manager is None:
                if request.method == "GET":
                    return _redirect(request.url_for("login").path)
                return Response("sign in first", status_code=401, headers=_HEADERS)
            if change:
                form = await _form(request)
                if not hmac.compare_digest(form.get("csrf", ""), manager.csrf):
                    return Response("missing or wrong CSRF token", status_code=403, headers=_HEADERS)
                request.state.form = form
            try:
                return await handler(request, manager)
            except ValueError:
                return not_found(request, manager)
        return endpoint

    async def channel_of(request: Request, manager: Manager, value: str) -> ChannelKey | None:
        """The channel ``value`` names, if it exists and this manager may see it."""
        key = ChannelKey.parse(value).scope
        if not manager.sees(key):
            return None
        known = {c["channel"] for c in await engine.channels(manager.spaces)}
        return key if str(key) in known else None

    async def login(request: Request) -> Response:
        if request.method == "GET":
            nonce = secrets.token_urlsafe(24)
            response = page(request, "login.html", None, nonce=nonce, error=None)
            response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict",
                                secure=secure(request), path=request.url_for("login").path)
            return response
        form = await _form(request)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(form.get("csrf", ""), cookie):
            return Response("missing or wrong CSRF token; reload the sign-in page", status_code=403, headers=_HEADERS)
        token = await check_token(store, form.get("token", ""))
        if token is None:
            nonce = secrets.token_urlsafe(24)
            response = page(request, "login.html", None, 401, nonce=nonce, error="That token is not valid.")
            response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict",
                                secure=secure(request), path=request.url_for("login").path)
            return response
        session_id = await start_session(store, token)
        response = _redirect(request.url_for("overview").path)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                            secure=secure(request), path=_root(request))
        response.delete_cookie(LOGIN_COOKIE, path=request.url_for("login").path)
        return response

    async def logout(request: Request, manager: Manager) -> Response:
        await end_session(store, request.cookies.get(SESSION_COOKIE))
        response = _redirect(request.url_for("login").path)
        response.delete_cookie(SESSION_COOKIE, path=_root(request))
        return response

    async def overview(request: Request, manager: Manager) -> Response:
        channels = await engine.channels(manager.spaces)
        stats = await engine.stats(spaces=manager.spaces)
        days = [d["day"] for d in stats["daily"]]
        charts = [
            bar_chart("Corrections taught per day", days,
                      [("corrections", [d["corrections"] for d in stats["daily"]], "s-teach")]),
            bar_chart("Answers served from corrections per day", days,
                      [("answers", [d["from_corrections"] for d in stats["daily"]], "s-served")]),
        ]
        platforms: dict[str, int] = {}
        for c in channels:
            platforms[c["platform"]] = platforms.get(c["platform"], 0) + 1
        return page(request, "overview.html", manager, channels=channels, stats=stats, charts=charts,
                    platforms=platforms, ready=ready(), health=engine.health(), model=engine.model_name,
                    backend=engine.settings.model.backend, lora_note=engine.lora_note)

    async def channel(request: Request, manager: Manager) -> Response:
        key = await channel_of(request, manager, request.query_params.get("c", ""))
        if key is None:
            return not_found(request, manager)
        stats = await engine.stats(key)
        days = [d["day"] for d in stats["daily"]]
        charts = [
            bar_chart("Answers served from corrections, with thumbs up / down", days, [
                ("answers", [d["from_corrections"] for d in stats["daily"]], "s-served"),
                ("thumbs up", [d["up"] for d in stats["daily"]], "s-up"),
                ("thumbs down", [d["down"] for d in stats["daily"]], "s-down")]),
            bar_chart("Corrected mistakes that came back", days,
                      [("came back", [d["recurrences"] for d in stats["daily"]], "s-down")]),
        ]
        return page(request, "channel.html", manager, key=key, stats=stats, charts=charts,
                    corrections=await engine.correction_usage(key), pending=await engine.pending(key),
                    lora=await engine.lora_versions(key), persona=(await engine.channel_settings(key)).persona,
                    presets=sorted(engine.personas()))

    def channel_change(action: Callable[[ChannelKey, dict[str, str], Manager], Awaitable[str]]) -> Handler:
        async def handler(request: Request, manager: Manager) -> Response:
            form: dict[str, str] = request.state.form
            key = await channel_of(request, manager, form.get("c", ""))
            if key is None:
                return not_found(request, manager)
            try:
                done = await action(key, form, manager)
            except HeedfulError:
                done = "missing"
            return _redirect(f"{request.url_for('channel').path}?{urlencode({'c': str(key), 'done': done})}")
        return handler

    async def forget(key: ChannelKey, form: dict[str, str], manager: Manager) -> str:
        ids = [int(form["id"])] if form.get("id") else None
        count = await engine.forget(key, ids, author_id=manager.author_id)
        return "forgot" if count else "missing"

    async def review(key: ChannelKey, form: dict[str, str], manager: Manager) -> str:
        approve = form.get("decision") == "approve"
        await engine.review(key, int(form.get("id", "0")), approve=approve, author_id=manager.author_id)
        return "approved" if approve else "rejected"

    async def persona(key: ChannelKey, form: dict[str, str], manager: Manager) -> str:
        await engine.set_persona(key, form.get("persona", ""), author_id=manager.author_id)
        return "persona"

    async def lora(key: ChannelKey, form: dict[str, str], manager: Manager) -> str:
        if form.get("action") == "promote":
            await engine.promote_lora(key, int(form.get("version", "0")), author_id=manager.author_id)
            return "promoted"
        await engine.rollback_lora(key, author_id=manager.author_id)
        return "rollback"

    async def audit(request: Request, manager: Manager) -> Response:
        value, author = request.query_params.get("channel", ""), request.query_params.get("author", "")
        key = await channel_of(request, manager, value) if value else None
        entries = [] if value and key is None else await engine.audit(
            key, author_id=author or None, spaces=manager.spaces, limit=200)
        channels = await engine.channels(manager.spaces)
        return page(request, "audit.html", manager, entries=entries, channel=value, author=author,
                    channels=channels)

    async def users(request: Request, manager: Manager) -> Response:
        if manager.spaces is not None:  # one person's data spans every space of a platform
            return page(request, "error.html", manager, 403, title="Not allowed",
                        message="Per-user export and delete need an operator token (every space).")
        return page(request, "users.html", manager)

    async def export_user(request: Request, manager: Manager) -> Response:
        form: dict[str, str] = request.state.form
        platform, _, user_id = form.get("user", "").partition(":")
        if manager.spaces is not None or not platform or not user_id:
            return not_found(request, manager)
        data = await engine.export_user(platform, user_id)
        return Response(json.dumps(data, ensure_ascii=False, indent=1, default=str), media_type="application/json",
                        headers={**_HEADERS, "Content-Disposition": 'attachment; filename="heedful-user.json"'})

    async def delete_user(request: Request, manager: Manager) -> Response:
        form: dict[str, str] = request.state.form
        platform, _, user_id = form.get("user", "").partition(":")
        if manager.spaces is not None or not platform or not user_id:
            return not_found(request, manager)
        counts = await engine.delete_user(platform, user_id, author_id=manager.author_id)
        return page(request, "users.html", manager, deleted=counts, user=form.get("user", ""))

    routes = [
        Route("/", signed_in(overview), name="overview"),
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", signed_in(logout, change=True), methods=["POST"], name="logout"),
        Route("/channel", signed_in(channel), name="channel"),
        Route("/channel/forget", signed_in(channel_change(forget), change=True), methods=["POST"], name="forget"),
        Route("/channel/review", signed_in(channel_change(review), change=True), methods=["POST"], name="review"),
        Route("/channel/persona", signed_in(channel_change(persona), change=True), methods=["POST"],
              name="persona"),
        Route("/channel/lora", signed_in(channel_change(lora), change=True), methods=["POST"], name="lora"),
        Route("/audit", signed_in(audit), name="audit"),
        Route("/users", signed_in(users), name="users"),
        Route("/users/export", signed_in(export_user, change=True), methods=["POST"], name="export_user"),
        Route("/users/delete", signed_in(delete_user, change=True), methods=["POST"], name="delete_user"),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each); small forms only."""
    body = await request.body()
    if len(body) > 64_000:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


def _root(request: Request) -> str:
    return str(request.url_for("overview").path)


def _when(value: float | None) -> str:
    if not value:
        return "–"
    return datetime.datetime.fromtimestamp(value, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
