"""heedful's application commands in Discord: slash commands, context menus, the correction modal.

- ``/why [message]``, ``/learned``, ``/help``: anyone, answered ephemerally.
- ``/personal [about_you]``, ``/forget corrections:me``, "Correct just for me": the person's own
  personal scope (DESIGN.md, "Scopes"), open to everyone, answered ephemerally.
- ``/forget [corrections]``, ``/persona [persona]``: reading the persona is open; forgetting
  and setting it need Manage Server (or Administrator, or a ``manager_roles`` role), and
  are announced in the channel (without pinging anyone).
- "Correct this answer" (message context menu) opens a modal for the better answer;
  its submission is handled from the raw interaction (the channel and the target message
  id travel in the modal's ``custom_id``), so a form opened before a restart still
  counts; a submission from another channel than the form's is refused.
- "Why this answer?" (message context menu): ``/why`` for that message.

An interaction whose work takes longer than ``defer_after`` seconds is deferred first
(Discord drops an interaction not answered within 3 s) and edited when done.

``Commands`` is held by the adapter and sees it only as a ``Host``: where a channel
belongs, who a member is, the runtime's rules and feedback step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

import discord
from discord import app_commands

from engine import ChannelKey, Engine, FeedbackKind, FeedbackReceipt, HeedfulError, InputError, NotFound

from ..policy import TeachPolicy
from ..texts import clip, personal_text, stats_text
from .members import NO_PINGS, Member
from .texts import CORRECT_ME_PREFIX, CORRECT_PREFIX, MESSAGE_LIMIT, MODAL_INPUT_LIMIT, TEXTS, message_link, parse_ids

__all__ = ["CORRECT_MENU", "CORRECT_ME_MENU", "WHY_MENU", "Commands", "Host"]

log = logging.getLogger(__name__)

CORRECT_MENU = "Correct this answer"
CORRECT_ME_MENU = "Correct just for me"
WHY_MENU = "Why this answer?"
_NOT_MINE = "I can only learn from corrections to my own answers: use this on one of my messages."
_NO_RECORD = ("I have no record of that answer (or I am still writing it), so there is nothing to correct. "
              "Ask me again and correct the new answer.")


class Host(Protocol):
    """What the commands need from the adapter that holds them (``DiscordAdapter``)."""

    engine: Engine
    own_id: str
    defer_after: float

    async def key_for(self, channel: Any, guild_id: int | None) -> ChannelKey: ...

    async def key_for_ids(self, channel_id: int, guild_id: int | None) -> ChannelKey: ...

    def member(self, user: discord.abc.User, permissions: discord.Permissions | None,
               guild_id: int | None) -> Member: ...

    async def may_teach(self, actor: Member) -> bool: ...

    async def may_correct(self, actor: Member) -> bool: ...

    async def may_manage(self, actor: Member) -> bool: ...

    def manage_refusal(self, what: str) -> str: ...

    def event_key(self, *parts: object) -> str: ...

    async def forget_all(self, channel: ChannelKey, correction_ids: list[int] | None = None, *,
                         author_id: str = "", event_id: str = "") -> int: ...

    async def feedback(self, channel: ChannelKey, actor: Member, kind: FeedbackKind, *, message_id: str = "",
                       text: str = "", event_id: str = "", personal: bool = False) -> FeedbackReceipt: ...


def _well_formed_command(data: object) -> bool:
    """Whether an application command's data has the shape Discord sends (what the tree reads)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return False
    options, resolved = data.get("options", []), data.get("resolved", {})
    return (isinstance(data.get("type", 1), int) and isinstance(resolved, dict)
            and isinstance(options, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in options)
            and all(isinstance(v, dict) for v in resolved.values())
            and isinstance(data.get("target_id", ""), str | int))


class _Tree(app_commands.CommandTree):
    """Unknown or outdated commands get a polite ephemeral answer instead of "This interaction failed";
    a command whose payload is not shaped as Discord's are is ignored before the tree reads it."""

    async def _call(self, interaction: discord.Interaction) -> None:
        if not _well_formed_command(interaction.data):
            log.info("ignored a malformed application command")
            return
        await super()._call(interaction)

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            log.info("an unknown or outdated command was used: %s", error)
            text = "I don't know this command (any more). Discord may still show an old list; try again shortly."
        else:
            log.error("a Discord command failed", exc_info=error)
            text = "Sorry, something went wrong. Please try again."
        if not interaction.response.is_done():
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


class _CorrectionModal(discord.ui.Modal):
    """The "Correct this answer" form; its submission is read from the raw interaction."""

    def __init__(self, channel_id: int, target_id: int, answer: str, *, personal: bool = False) -> None:
        prefix, title = (CORRECT_ME_PREFIX, CORRECT_ME_MENU) if personal else (CORRECT_PREFIX, CORRECT_MENU)
        super().__init__(title=title, custom_id=f"{prefix}{channel_id}:{target_id}", timeout=900)
        quoted = "\n".join("> " + line for line in clip(answer or "…", 1500).splitlines())
        self.add_item(discord.ui.TextDisplay("**My answer**\n" + quoted))
        self.add_item(discord.ui.Label(
            text="The better answer",
            description=("I will give it to you for this question and its paraphrases, in this channel only."
                         if personal else
                         "I will give it to this question and its paraphrases, in this channel only."),
            component=discord.ui.TextInput(style=discord.TextStyle.paragraph, custom_id="answer",
                                           placeholder="What I should have said", max_length=MODAL_INPUT_LIMIT),
        ))


def _submitted_text(data: Any) -> str:
    """The value of the (first) text input in a modal submission."""
    stack = list(data.get("components", [])) if isinstance(data, dict) else []
    while stack:
        component = stack.pop(0)
        if not isinstance(component, dict):
            continue
        if component.get("type") == 4 and isinstance(component.get("value"), str):
            return str(component["value"])
        stack[:0] = list(component.get("components", []))
        if isinstance(component.get("component"), dict):
            stack.insert(0, component["component"])
    return ""


class Commands:
    """Builds the command tree for a client and answers its interactions."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.tree: _Tree | None = None

    @property
    def engine(self) -> Engine:
        return self.host.engine

    # -- the tree ---------------------------------------------------------------------

    def attach(self, client: discord.Client) -> None:
        tree = _Tree(client, allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True),
                     allowed_installs=app_commands.AppInstallationType(guild=True))

        @tree.command(name="why", description="What shaped my last answer here (or the one you link)")
        @app_commands.describe(message="A link to one of my answers in this channel (default: my last answer)")
        async def why(interaction: discord.Interaction, message: str | None = None) -> None:
            await self._reply(interaction, self._why(interaction, message or ""))

        @tree.command(name="learned", description="What this channel taught me")
        async def learned(interaction: discord.Interaction) -> None:
            await self._reply(interaction, self._learned(interaction))

        @tree.command(name="stats", description="Whether learning works in this channel: its numbers")
        async def stats(interaction: discord.Interaction) -> None:
            await self._reply(interaction, self._stats(interaction))

        @tree.command(name="personal", description="Tell me something about you; only my answers to you use it")
        @app_commands.describe(about_you="e.g. 'my plan is Pro'; leave out to see what you told me here")
        async def personal(interaction: discord.Interaction, about_you: str | None = None) -> None:
            await self._reply(interaction, self._personal(interaction, about_you or ""))

        @tree.command(name="forget", description="Forget what this channel taught me (managers)")
        @app_commands.describe(corrections="Only these corrections, e.g. #12 #15 (see /learned); 'me': what you "
                                           "told me about yourself; default: all")
        async def forget(interaction: discord.Interaction, corrections: str | None = None) -> None:
            await self._reply(interaction, self._forget(interaction, corrections or ""))

        @tree.command(name="persona", description="Show my persona here, or set it (managers)")
        @app_commands.describe(persona="A preset name or your own description; leave out to see the current one")
        async def persona(interaction: discord.Interaction, persona: str | None = None) -> None:
            await self._reply(interaction, self._persona(interaction, persona or ""))

        @persona.autocomplete("persona")
        async def persona_presets(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            names = [n for n in self.engine.personas() if current.lower() in n.lower()]
            return [app_commands.Choice(name=n, value=n) for n in names[:25]]

        @tree.command(name="help", description="How to talk to me and teach me")
        async def help_command(interaction: discord.Interaction) -> None:
            await self._reply(interaction, TEXTS.help_text(self.engine.personas()))

        @tree.context_menu(name=CORRECT_MENU)
        async def correct(interaction: discord.Interaction, message: discord.Message) -> None:
            await self._open_correction(interaction, message)

        @tree.context_menu(name=CORRECT_ME_MENU)
        async def correct_me(interaction: discord.Interaction, message: discord.Message) -> None:
            await self._open_correction(interaction, message, personal=True)

        @tree.context_menu(name=WHY_MENU)
        async def why_this(interaction: discord.Interaction, message: discord.Message) -> None:
            await self._reply(interaction, self._why(interaction, "", message))

        self.tree = tree

    def detach(self) -> None:
        self.tree = None

    async def sync(self, guild_id: int | None) -> None:
        """Register the commands globally (``None``) or in one guild; a refusal is logged, not raised."""
        assert self.tree is not None
        guild = discord.Object(guild_id) if guild_id is not None else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.Forbidden as err:
            log.warning("Discord refused to register the commands %s (%s): invite the bot with the "
                        "applications.commands scope", f"in guild {guild_id}" if guild else "globally", err.text)
        except discord.HTTPException as err:
            log.warning("could not register the commands %s: %s %s",
                        f"in guild {guild_id}" if guild else "globally", err.status, err.text)
        else:
            log.info("registered %d commands %s", len(synced), f"in guild {guild_id}" if guild else "globally")

    # -- helpers ----------------------------------------------------------------------

    async def _key(self, interaction: discord.Interaction) -> ChannelKey:
        """The channel the interaction was used in; ``InputError`` when Discord did not say (never another)."""
        if interaction.channel is None and not interaction.channel_id:
            raise InputError("I can't tell which channel this was used in, so I did nothing.")
        channel = interaction.channel or discord.Object(interaction.channel_id or 0)
        return await self.host.key_for(channel, interaction.guild_id)

    def _member(self, interaction: discord.Interaction) -> Member:
        guild_id = interaction.guild_id
        return self.host.member(interaction.user, interaction.permissions if guild_id is not None else None, guild_id)

    async def _reply(self, interaction: discord.Interaction, work: Awaitable[str | tuple[str, bool]] | str) -> None:
        """Answer with ``work``'s text (ephemeral unless it says ``(text, True)``), deferring if it is slow."""
        if isinstance(work, str):
            result: str | tuple[str, bool] = work
        else:
            task = asyncio.ensure_future(work)
            done, _ = await asyncio.wait({task}, timeout=self.host.defer_after)
            if not done:
                # The visibility of a deferred answer is fixed now: slow work is answered privately.
                await interaction.response.defer(ephemeral=True, thinking=True)
                text, public = self._unpack(await self._outcome(task))
                await interaction.edit_original_response(content=clip(text, MESSAGE_LIMIT), allowed_mentions=NO_PINGS)
                if public:  # announce it too, as a quick answer would have
                    await interaction.followup.send(clip(text, MESSAGE_LIMIT), allowed_mentions=NO_PINGS)
                return
            result = await self._outcome(task)
        text, public = self._unpack(result)
        await interaction.response.send_message(clip(text, MESSAGE_LIMIT), ephemeral=not public,
                                                allowed_mentions=NO_PINGS)

    @staticmethod
    async def _outcome(task: asyncio.Future[Any]) -> str | tuple[str, bool]:
        try:
            return await task  # type: ignore[no-any-return]
        except HeedfulError as err:
            return str(err)
        except Exception:
            log.exception("a Discord command failed")
            return "Sorry, something went wrong. Please try again."

    @staticmethod
    def _unpack(result: str | tuple[str, bool]) -> tuple[str, bool]:
        return (result, False) if isinstance(result, str) else result

    # -- commands ---------------------------------------------------------------------

    async def _why(self, interaction: discord.Interaction, link: str, message: discord.Message | None = None) -> str:
        key = await self._key(interaction)
        message_id = str(message.id) if message is not None else ""
        if link:
            found = message_link(link)
            if found is None and link.strip().isdigit():
                message_id = link.strip()
            elif found is None:
                return "Give me a message link (right-click one of my answers → Copy Message Link)."
            else:
                space, channel_id, linked = found
                guild_id = int(space) if space.isdigit() else None
                other = await self.host.key_for_ids(channel_id, guild_id)
                if guild_id != interaction.guild_id or other.scope != key.scope:
                    return "Use /why in the channel of that answer."
                key, message_id = other, str(linked)
        if message is not None and self.host.own_id and \
                str(getattr(getattr(message, "author", None), "id", "")) != self.host.own_id:
            return "That is not one of my answers."
        try:
            explanation = await self.engine.explain(key, message_id=message_id, viewer=str(interaction.user.id))
        except NotFound:
            return "I have not answered anything here yet (or that is not one of my answers)."
        return TEXTS.explanation_text(explanation)

    async def _stats(self, interaction: discord.Interaction) -> str:
        return stats_text(await self.engine.stats(await self._key(interaction)))

    async def _learned(self, interaction: discord.Interaction) -> str:
        return TEXTS.learned_text(await self.engine.learned(await self._key(interaction)))

    async def _personal(self, interaction: discord.Interaction, about_you: str) -> str:
        key, person = await self._key(interaction), str(interaction.user.id)
        if not about_you.strip():
            return personal_text(await self.engine.personal(key, person), TEXTS.inline)
        await self.engine.remember(key, person, about_you)
        return "Noted, just for you: only my answers to you use it. `/forget corrections:me` removes it."

    async def _forget(self, interaction: discord.Interaction, corrections: str) -> str | tuple[str, bool]:
        if corrections.strip().lower() == "me":  # their own personal scope: theirs to forget
            counts = await self.engine.forget_person(await self._key(interaction), str(interaction.user.id))
            return (f"Forgot {counts['facts']} thing(s) you told me about yourself and {counts['corrections']} "
                    "correction(s) just for you in this channel.")
        if not await self.host.may_manage(self._member(interaction)):
            return self.host.manage_refusal("make me forget")
        ids = parse_ids(corrections) if corrections else None
        if corrections and ids is None:
            return "Usage: `/forget` (everything) or `/forget corrections:#12 #15` (those, see `/learned`)."
        count = await self.host.forget_all(await self._key(interaction), ids, author_id=str(interaction.user.id),
                                           event_id=self.host.event_key("interaction", interaction.id))
        what = "the listed corrections" if ids else "everything this channel taught me"
        return f"{interaction.user.mention} made me forget {what}: {count} correction(s).", True

    async def _persona(self, interaction: discord.Interaction, persona: str) -> str | tuple[str, bool]:
        key = await self._key(interaction)
        presets = ", ".join(f"`{name}`" for name in self.engine.personas()) or "none"
        if not persona.strip():
            current = (await self.engine.channel_settings(key)).persona or "the default"
            return f"My persona here: {clip(current, 1500)}\nPresets: {presets}."
        if not await self.host.may_manage(self._member(interaction)):
            return self.host.manage_refusal("change my persona")
        await self.engine.set_persona(key, persona.strip(), author_id=str(interaction.user.id))
        return f"{interaction.user.mention} set my persona here to: {clip(persona.strip(), 1500)}", True

    # -- correcting -------------------------------------------------------------------

    async def _open_correction(self, interaction: discord.Interaction, message: discord.Message, *,
                               personal: bool = False) -> None:
        """The correction form for ``message``; ``personal``: just for the one correcting (open to everyone)."""
        if str(getattr(getattr(message, "author", None), "id", "")) != self.host.own_id:
            await self._reply(interaction, _NOT_MINE)
            return
        if not personal and not await self.host.may_correct(self._member(interaction)):
            await self._reply(interaction, TeachPolicy.refusal)
            return
        try:
            await self.engine.explain(await self._key(interaction), message_id=str(message.id))
        except NotFound:
            await self._reply(interaction, _NO_RECORD)
            return
        except HeedfulError as err:
            await self._reply(interaction, str(err))
            return
        await interaction.response.send_modal(_CorrectionModal(interaction.channel_id or 0, message.id,
                                                               message.content, personal=personal))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Modal submissions and component presses (the command tree answers commands)."""
        data: dict[str, Any] = dict(interaction.data) if isinstance(interaction.data, dict) else {}
        custom_id = str(data.get("custom_id", ""))
        prefix = next((p for p in (CORRECT_PREFIX, CORRECT_ME_PREFIX) if custom_id.startswith(p)), None)
        if interaction.type is discord.InteractionType.modal_submit and prefix is not None:
            channel, _, target = custom_id[len(prefix):].rpartition(":")  # channel: empty in older forms
            if target.isdigit() and (channel == "" or channel.isdigit()):
                if channel and int(channel) != interaction.channel_id:
                    await self._reply(interaction, TEXTS.elsewhere_text())  # the form was opened elsewhere
                    return
                await self._reply(interaction, self._correction_submitted(interaction, target, _submitted_text(data),
                                                                          personal=prefix == CORRECT_ME_PREFIX))
                return
        log.info("an interaction heedful did not expect (%s %r)", interaction.type, custom_id[:100])
        await self._reply(interaction, "That form or button is no longer active.")

    async def _correction_submitted(self, interaction: discord.Interaction, target: str, better: str, *,
                                    personal: bool = False) -> str:
        if not better.strip():
            return "Write the better answer in the form."
        receipt = await self.host.feedback(await self._key(interaction), self._member(interaction),
                                           FeedbackKind.CORRECTION, message_id=target, text=better.strip(),
                                           event_id=self.host.event_key("interaction", interaction.id),
                                           personal=personal)
        return receipt.message
