"""What the bot does with each kind of update: messages, commands, buttons, reactions.

Private chats are always answered; groups when the bot is mentioned, replied to, or
given a command. Every feedback gesture ends in ``Feedback`` on the bot message it
targets: ``/fix`` (or ``correction: …``) in reply to an answer, the ✏️ button or a 👎
reaction followed by a reply to the ForceReply prompt, 👍/👎 buttons and reactions. The
feedback's event id is the update's, so an update handled twice (after a crash) is
applied once. Every gesture acts on the chat it was used in: a reply to a message of
another chat (Telegram's "reply in another chat") is refused, never taken for the last
answer here.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import Message, MessageEntity, ReactionTypeEmoji, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from engine import FeedbackKind, InputError, NotFound

from ..policy import parse_correction
from ..texts import personal_text, stats_text
from ._core import Author, TelegramCore, Where, author_of, chat_key, is_topic_header, where_in, where_of
from ._texts import GROUP_HINT, NOT_TEXT, START, TEXTS

__all__ = ["BUTTONS", "THUMBS", "Handlers"]

log = logging.getLogger("adapters.telegram")

BUTTONS = {"hf:up": FeedbackKind.UP, "hf:down": FeedbackKind.DOWN, "hf:fix": FeedbackKind.CORRECTION}
THUMBS = {"👍": FeedbackKind.UP, "👎": FeedbackKind.DOWN}

Context = ContextTypes.DEFAULT_TYPE


class Handlers:
    """The python-telegram-bot callbacks (registered in ``_adapter.py``), on the adapter's ``core``."""

    def __init__(self, core: TelegramCore) -> None:
        self.core = core
        self.runtime = core.runtime
        self.engine = core.engine
        self.settings = core.settings

    def event_id(self, update: Update) -> str:
        """The stable id of ``update`` for ``Feedback.event_id``: this bot's, and the update's."""
        me = self.core.me
        return self.runtime.event_key(me.id if me is not None else "", update.update_id)

    async def elsewhere(self, message: Message, where: Where) -> bool:
        """Refuse (True) a gesture in reply to a message of another chat or topic: it acts on this chat only."""
        if message.external_reply is None or message.reply_to_message is not None:
            return False
        await self.core.say(where, TEXTS.elsewhere_text(), reply_to=message.message_id)
        return True

    # -- messages --------------------------------------------------------------------------

    async def on_message(self, update: Update, context: Context) -> None:
        message = update.message
        if message is None or message.is_automatic_forward:
            return
        where, author = where_of(message), author_of(message)
        if author is None:
            return  # no sender at all: nothing to answer to
        text = message.text or message.caption or ""
        if await self.core.answer_prompt(message, where, text, event_id=self.event_id(update)):
            return
        to_me = self.core.replies_to_me(message)
        if not (where.private or to_me or self.core.mentions_me(message)):
            return
        if not text.strip():
            if message.effective_attachment is not None:  # stickers, photos, voice notes, ...
                await self.core.say(where, NOT_TEXT, reply_to=message.message_id)
            return
        better = parse_correction(text)
        if better is not None and (to_me or where.private):
            if await self.elsewhere(message, where):
                return
            target = message.reply_to_message.message_id if to_me and message.reply_to_message else None
            await self.core.correct(message, where, target, better, event_id=self.event_id(update))
            return
        question = self.core.strip_mention(text)
        if not question:
            await self.core.say(where, "Yes? Ask me something, or send /help.", reply_to=message.message_id)
            return
        await self.core.ask(message, where, question)

    async def on_migrate(self, update: Update, context: Context) -> None:
        """A group became a supergroup and so got a new chat id: what it taught moves along.

        Telegram says so in both chats (``migrate_to_chat_id`` in the old one,
        ``migrate_from_chat_id`` in the new one); whichever arrives first moves it, the
        other finds nothing left to move.
        """
        message = update.message
        if message is None:
            return
        if message.migrate_to_chat_id:
            old, new = message.chat.id, message.migrate_to_chat_id
        elif message.migrate_from_chat_id:
            old, new = message.migrate_from_chat_id, message.chat.id
        else:
            return
        moved = await self.engine.move_channel(chat_key(old), chat_key(new))
        log.info("chat %d is now %d: moved %d correction(s)", old, new, moved)

    async def on_edited(self, update: Update, context: Context) -> None:
        log.debug("ignoring an edited message (update %d): answers are not redone", update.update_id)

    # -- buttons and reactions -------------------------------------------------------------

    async def on_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None:
            return
        kind = BUTTONS.get(query.data or "")
        message = query.message
        if kind is None or message is None:
            await _answer_query(query, "This button no longer works.")
            return
        where, user = where_of(message), query.from_user
        author = Author(str(user.id), where)
        if kind is FeedbackKind.CORRECTION:
            if not await self.runtime.may_correct(author):
                await _answer_query(query, self.runtime.policy.refusal, alert=True)
                return
            await _answer_query(query, "Reply to my message with the better answer.")
            await self.core.prompt_for_correction(where, user, message.message_id)
            return
        receipt = await self.runtime.feedback(where.key, author, kind, message_id=str(message.message_id),
                                              event_id=self.event_id(update))
        await _answer_query(query, receipt.message, alert=not receipt.accepted)

    async def on_reaction(self, update: Update, context: Context) -> None:
        reaction = update.message_reaction
        if reaction is None:
            return
        added = emoji_of(reaction.new_reaction) - emoji_of(reaction.old_reaction)
        kinds = [kind for emoji, kind in THUMBS.items() if emoji in added]
        user = reaction.user
        author = str(user.id) if user else f"chat:{reaction.actor_chat.id}" if reaction.actor_chat else ""
        if len(kinds) != 1 or not author or (user is not None and user.is_bot):
            return  # no thumb (or both at once), or nobody to credit
        where = where_in(reaction.chat)
        actor = Author(author, where)
        receipt = await self.runtime.feedback(where.key, actor, kinds[0], message_id=str(reaction.message_id),
                                              event_id=self.event_id(update))
        if not receipt.accepted:
            log.debug("reaction on message %d ignored: %s", reaction.message_id, receipt.message)
            return
        wants_better = kinds[0] is FeedbackKind.DOWN and self.settings.ask_after_thumbs_down
        if wants_better and user is not None and await self.runtime.may_correct(actor):
            await self.core.prompt_for_correction(where, user, reaction.message_id)

    # -- commands --------------------------------------------------------------------------

    async def cmd_start(self, update: Update, context: Context) -> None:
        if (message := update.message) is not None:
            where = where_of(message)
            start = START.format(where="" if where.private else GROUP_HINT)
            await self.core.say(where, start, reply_to=message.message_id)

    async def cmd_help(self, update: Update, context: Context) -> None:
        if (message := update.message) is not None:
            await self.core.say(where_of(message), TEXTS.help_text(self.engine.personas()), reply_to=message.message_id)

    async def cmd_ask(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or author_of(message) is None:
            return
        question = command_text(message)
        if not question:
            await self.core.say(where_of(message), "Usage: /ask <your question>", reply_to=message.message_id)
            return
        await self.core.ask(message, where_of(message), question)

    async def cmd_fix(self, update: Update, context: Context, *, personal: bool = False) -> None:
        if (message := update.message) is None or author_of(message) is None:
            return
        where = where_of(message)
        replied = message.reply_to_message if not is_topic_header(message) else None
        if replied is not None and not self.core.replies_to_me(message):
            command = "/fixme" if personal else "/fix"
            await self.core.say(where, f"Reply to one of my answers with {command} <the better answer>.",
                           reply_to=message.message_id)
            return
        if await self.elsewhere(message, where):
            return
        await self.core.correct(message, where, replied.message_id if replied else None, command_text(message),
                                event_id=self.event_id(update), personal=personal)

    async def cmd_fixme(self, update: Update, context: Context) -> None:
        """``/fixme <better answer>``: a correction just for its author (``Feedback.personal``)."""
        await self.cmd_fix(update, context, personal=True)

    async def cmd_personal(self, update: Update, context: Context) -> None:
        """``/personal <text>``: remember something about its author, for the replies to them in this chat
        only; alone, what they told (listed in a private chat; in a group only counted, as the group
        would see the list)."""
        if (message := update.message) is None or (author := author_of(message)) is None:
            return
        where = where_of(message)
        told = command_text(message)
        if told:
            try:
                await self.engine.remember(where.key, author[0], told)
                text = "Noted, just for you: only my replies to you use it. /forget me removes what you told me."
            except InputError as err:
                text = str(err)
        else:
            profile = await self.engine.personal(where.key, author[0])
            text = personal_text(profile) if where.private or not len(profile) else (
                f"You have told me {len(profile.facts)} thing(s) about yourself here and taught me "
                f"{len(profile.corrections)} correction(s) just for you; in a group I don't list them. "
                "/forget me removes them.")
        await self.core.say(where, text, reply_to=message.message_id)

    async def cmd_why(self, update: Update, context: Context) -> None:
        if (message := update.message) is None:
            return
        where = where_of(message)
        if await self.elsewhere(message, where):
            return
        replied = message.reply_to_message
        target = str(replied.message_id) if replied is not None and self.core.replies_to_me(message) else ""
        asker, _ = author_of(message) or ("", "")
        try:
            text = TEXTS.explanation_text(await self.engine.explain(where.key, message_id=target, viewer=asker))
        except NotFound as err:
            text = f"{err}."
        await self.core.say(where, text, reply_to=message.message_id)

    async def cmd_learned(self, update: Update, context: Context) -> None:
        if (message := update.message) is None:
            return
        where = where_of(message)
        text = TEXTS.learned_text(await self.engine.learned(where.key))
        await self.core.say(where, text, reply_to=message.message_id)

    async def cmd_stats(self, update: Update, context: Context) -> None:
        """``/stats``: whether learning works in this chat (``Engine.stats``)."""
        if (message := update.message) is None:
            return
        where = where_of(message)
        await self.core.say(where, stats_text(await self.engine.stats(where.key)), reply_to=message.message_id)

    async def cmd_forget(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or (author := author_of(message)) is None:
            return
        where = where_of(message)
        if await self.elsewhere(message, where):
            return
        actor = Author(author[0], where, message)
        if command_text(message).lower() == "me":  # their own personal scope: theirs to forget
            counts = await self.engine.forget_person(where.key, author[0])
            await self.core.say(where, f"Forgot {counts['facts']} thing(s) you told me about yourself and "
                                       f"{counts['corrections']} correction(s) just for you in this chat.",
                                reply_to=message.message_id)
            return
        if not await self.runtime.may_manage(actor):
            await self.core.say(where, self.runtime.manage_refusal("make me forget what this chat taught me"),
                           reply_to=message.message_id)
            return
        if self.core.replies_to_me(message):  # just the corrections behind that answer
            assert message.reply_to_message is not None
            receipt = await self.runtime.feedback(where.key, actor, FeedbackKind.FORGET,
                                                  message_id=str(message.reply_to_message.message_id),
                                                  event_id=self.event_id(update))
            text = receipt.message
        else:
            count = await self.runtime.forget_all(where.key, author_id=author[0], event_id=self.event_id(update))
            text = f"Forgot {count} correction(s) this chat taught me."
        await self.core.say(where, text, reply_to=message.message_id)

    async def cmd_persona(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or (author := author_of(message)) is None:
            return
        where = where_of(message)
        wanted = command_text(message)
        if not wanted:
            current = (await self.engine.channel_settings(where.key)).persona or "(the default)"
            text = (f"My persona here: {current}\nPresets: {', '.join(self.engine.personas())}. "
                    "Admins change it with /persona <preset or text>.")
        elif not await self.runtime.may_manage(Author(author[0], where, message)):
            text = self.runtime.manage_refusal("change my persona")
        else:
            try:
                await self.engine.set_persona(where.key, wanted, author_id=author[0])
                text = f"Persona set to {wanted!r}." if wanted in self.engine.personas() else "Persona set."
            except InputError as err:
                text = str(err)
        await self.core.say(where, text, reply_to=message.message_id)

    async def cmd_cancel(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or message.from_user is None:
            return
        where = where_of(message)
        cancelled = self.core.cancel_prompts(where.chat_id, message.from_user.id)
        await self.core.say(where, "Okay, no correction." if cancelled else "There is nothing to cancel.",
                       reply_to=message.message_id)

    async def on_unknown_command(self, update: Update, context: Context) -> None:
        message = update.message
        if message is None or not message.text or author_of(message) is None:
            return
        where = where_of(message)
        name, _, addressee = message.text.split(maxsplit=1)[0][1:].partition("@")
        me = self.core.me
        assert me is not None
        if addressee and addressee.lower() != (me.username or "").lower():
            return  # meant for another bot
        if not (where.private or addressee or self.core.replies_to_me(message)):
            return  # a bare command in a group may be another bot's
        await self.core.say(where, f"I don't know the command /{name}. /help lists what I understand.",
                       reply_to=message.message_id)


async def _answer_query(query: object, text: str, *, alert: bool = False) -> None:
    try:
        await query.answer(text[:200], show_alert=alert)  # type: ignore[attr-defined]
    except TelegramError as err:  # too old to answer, or answered already: the feedback itself counted
        log.debug("could not answer a button press: %s", err)


def command_text(message: Message) -> str:
    """What follows the command (``/fix@bot  text`` -> ``text``), line breaks kept."""
    text = message.text or ""
    for entity in message.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return text[entity.length :].strip()
    return text.partition(" ")[2].strip()


def emoji_of(reactions: Any) -> set[str]:
    """The plain emoji among a message's reactions (custom and paid ones aside)."""
    return {r.emoji for r in reactions if isinstance(r, ReactionTypeEmoji)}
