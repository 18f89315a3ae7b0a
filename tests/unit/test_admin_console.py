"""The admin console in process: sign-in, CSRF, scoping, the changes it makes, the learning report."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from bots.admin_web.auth import check_token, new_token, parse_scope
from bots.http_server import health_app
from engine import ChannelKey, Engine, Feedback, FeedbackKind, Turn

GUILD = ChannelKey("discord", "admin-c1", space="guild-1")
OTHER = ChannelKey("discord", "admin-c2", space="guild-2")


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@asynccontextmanager
async def _signed_in(engine: Engine, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the whole HTTP app, signed in to the console with ``token``."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=health_app(engine, lambda: True)),
                                 base_url="http://t/admin") as client:
        form = await client.get("/login")
        answer = await client.post("/login", data={"csrf": _csrf(form.text), "token": token})
        assert answer.status_code == 303, answer.text
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
        yield client


@pytest.fixture(scope="module")
async def tokens(tiny_engine: Engine) -> dict[str, str]:
    for key, question, answer in ((GUILD, "Where is the exit?", "Door B."), (OTHER, "Secret plans?", "Hidden.")):
        receipt = await tiny_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="u1", text=answer,
                                                      question=question))
        assert receipt.accepted
    return {"all": await new_token(tiny_engine.store, "ops", ""),
            "guild": await new_token(tiny_engine.store, "mod", parse_scope("discord:guild-1"))}


async def test_tokens_are_stored_hashed_and_checked(tiny_engine: Engine, tokens: dict[str, str]) -> None:
    stored = {t.name: t for t in await tiny_engine.store.admin_tokens()}
    secret = tokens["all"].rsplit(".", 1)[1]
    assert secret.encode() not in stored["ops"].digest and len(stored["ops"].salt) == 16
    assert (await check_token(tiny_engine.store, tokens["all"])) is not None
    assert (await check_token(tiny_engine.store, tokens["all"] + "x")) is None
    assert (await check_token(tiny_engine.store, "hfa.999.nope")) is None
    with pytest.raises(ValueError):
        parse_scope("guild-only")


async def test_nothing_is_readable_signed_out(tiny_engine: Engine, tokens: dict[str, str]) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=health_app(tiny_engine, lambda: True)),
                                 base_url="http://t/admin") as client:
        for path in ("/", f"/channel?c={GUILD}", "/audit", "/users"):
            answer = await client.get(path)
            assert answer.status_code == 303 and answer.headers["location"].endswith("/admin/login")
            assert "admin-c1" not in answer.text
        assert (await client.post("/channel/forget", data={"c": str(GUILD)})).status_code == 401
        assert (await client.get("http://t/metrics")).status_code == 200  # the operator's endpoints stay public
        form = await client.get("/login")
        assert "admin-c1" not in form.text and form.headers["content-security-policy"].startswith("default-src")
        assert (await client.post("/login", data={"token": tokens["all"]})).status_code == 403  # no CSRF
        bad = await client.post("/login", data={"csrf": _csrf(form.text), "token": "hfa.1.wrong"})
        assert bad.status_code == 401 and "not valid" in bad.text


async def test_an_operator_sees_and_steers_every_space(tiny_engine: Engine, tokens: dict[str, str]) -> None:
    async with _signed_in(tiny_engine, tokens["all"]) as client:
        overview = await client.get("/")
        assert "admin-c1" in overview.text and "admin-c2" in overview.text
        page = await client.get("/channel", params={"c": str(GUILD)})
        assert "Door B." in page.text
        correction_id = (await tiny_engine.learned(GUILD))[0].correction_id
        refused = await client.post("/channel/forget", data={"c": str(GUILD), "id": str(correction_id)})
        assert refused.status_code == 403 and await tiny_engine.learned(GUILD)
        done = await client.post("/channel/forget", data={"c": str(GUILD), "id": str(correction_id),
                                                           "csrf": _csrf(page.text)})
        assert done.status_code == 303 and not await tiny_engine.learned(GUILD)
        audit = await tiny_engine.audit(GUILD, author_id="admin:ops")
        assert [e.action for e in audit] == ["forget"]
        assert "admin:ops" in (await client.get("/audit", params={"author": "admin:ops"})).text
        assert (await client.get("/users")).status_code == 200


async def test_a_space_manager_sees_only_that_space(tiny_engine: Engine, tokens: dict[str, str]) -> None:
    async with _signed_in(tiny_engine, tokens["guild"]) as client:
        overview = await client.get("/")
        assert "admin-c1" in overview.text and "admin-c2" not in overview.text
        other = await client.get("/channel", params={"c": str(OTHER)})
        missing = await client.get("/channel", params={"c": "discord:guild-2:nope"})
        assert other.status_code == missing.status_code == 404 and "Secret" not in other.text
        csrf = _csrf(overview.text)
        assert (await client.post("/channel/forget", data={"c": str(OTHER), "csrf": csrf})).status_code == 404
        assert await tiny_engine.learned(OTHER)
        audit = await client.get("/audit")
        assert "admin-c2" not in audit.text
        assert "admin-c2" not in (await client.get("/audit", params={"channel": str(OTHER)})).text
        assert (await client.get("/users")).status_code == 403
        assert (await client.post("/users/export", data={"user": "discord:u1", "csrf": csrf})).status_code == 404
        signed_out = await client.post("/logout", data={"csrf": csrf})
        assert signed_out.status_code == 303
        assert (await client.get("/")).status_code == 303


async def test_the_learning_report_counts_answers_from_corrections(tiny_engine: Engine) -> None:
    key = ChannelKey("console", "admin-stats", space="local")
    await tiny_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="u1", text="Door B.",
                                        question="Where is the exit?"))
    reply = tiny_engine.reply(Turn(key, "Where is the exit?"))
    assert await reply.collect() == "Door B."
    await tiny_engine.feedback(Feedback(key, FeedbackKind.UP, author_id="u2", reply_id=reply.reply_id))
    stats = await tiny_engine.stats(key)
    assert (stats["corrections"], stats["from_corrections"], stats["up"], stats["asked_again"]) == (1, 1, 1, 1)
    assert stats["recurrences"] == 0 and stats["daily"][-1]["from_corrections"] == 1
    usage = await tiny_engine.correction_usage(key)
    assert usage[0]["uses"] == 1 and usage[0]["author_id"] == "u1"
