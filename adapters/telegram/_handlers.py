"""What the bot does with each kind of update: messages, commands, buttons, reactions.

Private chats are always answered; groups when the bot is mentioned, replied to, or
given a command. Every feedback gesture ends in ``Feedback`` on the bot message it
targets: ``/fix`` (or ``correction: …``) in reply to an answer, the ✏️ button or a 👎
reaction followed by a reply to the ForceReply prompt, 👍/👎 buttons and reactions.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from engine import FeedbackKind, InputError, NotFound

from ..policy import parse_correction
from ._core import TelegramCore, author_of, chat_key, command_text, emoji_of, is_topic_header, where_in, where_of
from ._texts import GROUP_HINT, HELP, NOT_TEXT, START, learned_list

__all__ = ["Handlers", "BUTTONS", "THUMBS"]

log = logging.getLogger("adapters.telegram")

BUTTONS = {"hf:up": FeedbackKind.UP, "hf:down": FeedbackKind.DOWN, "hf:fix": FeedbackKind.CORRECTION}
THUMBS = {"👍": FeedbackKind.UP, "👎": FeedbackKind.DOWN}

Context = ContextTypes.DEFAULT_TYPE


class Handlers(TelegramCore):
    """The python-telegram-bot callbacks (registered in ``_adapter.py``)."""

    # -- messages --------------------------------------------------------------------------

    async def on_message(self, update: Update, context: Context) -> None:
        message = update.message
        if message is None or message.is_automatic_forward:
            return
        where, author = where_of(message), author_of(message)
        if author is None:
            return  # no sender at all: nothing to answer to
        text = message.text or message.caption or ""
        if await self.answer_prompt(message, where, text):
            return
        to_me = self.replies_to_me(message)
        if not (where.private or to_me or self.mentions_me(message)):
            return
        if not text.strip():
            if message.effective_attachment is not None:  # stickers, photos, voice notes, ...
                await self.say(where, NOT_TEXT, reply_to=message.message_id)
            return
        better = parse_correction(text)
        if better is not None and (to_me or where.private):
            target = message.reply_to_message.message_id if to_me and message.reply_to_message else None
            await self.correct(message, where, target, better)
            return
        question = self.strip_mention(text)
        if not question:
            await self.say(where, "Yes? Ask me something, or send /help.", reply_to=message.message_id)
            return
        await self.ask(message, where, question)

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
        if kind is FeedbackKind.CORRECTION:
            if not await self.may_teach(where, str(user.id)):
                await _answer_query(query, self.policy_in(where).refusal, alert=True)
                return
            await _answer_query(query, "Reply to my message with the better answer.")
            await self.prompt_for_correction(where, user, message.message_id)
            return
        receipt = await self.feedback(where, kind, str(user.id), target=message.message_id)
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
        receipt = await self.feedback(where, kinds[0], author, target=reaction.message_id)
        if not receipt.accepted:
            log.debug("reaction on message %d ignored: %s", reaction.message_id, receipt.message)
            return
        if kinds[0] is FeedbackKind.DOWN and self.settings.ask_after_thumbs_down and user is not None:
            if await self.may_teach(where, author):
                await self.prompt_for_correction(where, user, reaction.message_id)

    # -- commands --------------------------------------------------------------------------

    async def cmd_start(self, update: Update, context: Context) -> None:
        if (message := update.message) is not None:
            where = where_of(message)
            await self.say(where, START.format(where="" if where.private else GROUP_HINT), reply_to=message.message_id)

    async def cmd_help(self, update: Update, context: Context) -> None:
        if (message := update.message) is not None:
            await self.say(where_of(message), HELP, reply_to=message.message_id)

    async def cmd_ask(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or author_of(message) is None:
            return
        question = command_text(message)
        if not question:
            await self.say(where_of(message), "Usage: /ask <your question>", reply_to=message.message_id)
            return
        await self.ask(message, where_of(message), question)

    async def cmd_fix(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or author_of(message) is None:
            return
        where = where_of(message)
        replied = message.reply_to_message if not is_topic_header(message) else None
        if replied is not None and not self.replies_to_me(message):
            await self.say(where, "Reply to one of my answers with /fix <the better answer>.",
                           reply_to=message.message_id)
            return
        await self.correct(message, where, replied.message_id if replied else None, command_text(message))

    async def cmd_why(self, update: Update, context: Context) -> None:
        if (message := update.message) is None:
            return
        where = where_of(message)
        replied = message.reply_to_message
        target = str(replied.message_id) if replied is not None and self.replies_to_me(message) else ""
        try:
            text = (await self.engine.explain(where.key, message_id=target)).summary()
        except NotFound as err:
            text = f"{err}."
        await self.say(where, text, reply_to=message.message_id)

    async def cmd_learned(self, update: Update, context: Context) -> None:
        if (message := update.message) is None:
            return
        where = where_of(message)
        learned = await self.engine.learned(where.key)
        text = learned_list([(c.correction_id, c.question, c.answer) for c in learned])
        await self.say(where, text, reply_to=message.message_id)

    async def cmd_forget(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or (author := author_of(message)) is None:
            return
        where = where_of(message)
        if not await self.is_admin(where, author[0], message):
            await self.say(where, "Only the chat's admins can make me forget what this chat taught me.",
                           reply_to=message.message_id)
            return
        if self.replies_to_me(message):  # just the corrections behind that answer
            assert message.reply_to_message is not None
            receipt = await self.teach(where.key, kind=FeedbackKind.FORGET, author_id=author[0], is_admin=True,
                                       message_id=str(message.reply_to_message.message_id))
            text = receipt.message
        else:
            count = await self.engine.forget(where.key)
            text = f"Forgot {count} correction(s) this chat taught me."
        await self.say(where, text, reply_to=message.message_id)

    async def cmd_persona(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or (author := author_of(message)) is None:
            return
        where = where_of(message)
        wanted = command_text(message)
        if not wanted:
            current = (await self.engine.channel_settings(where.key)).persona or "(the default)"
            text = (f"My persona here: {current}\nPresets: {', '.join(self.engine.personas())}. "
                    "Admins change it with /persona <preset or text>.")
        elif not await self.is_admin(where, author[0], message):
            text = "Only the chat's admins can change my persona."
        else:
            try:
                await self.engine.set_persona(where.key, wanted)
                text = f"Persona set to {wanted!r}." if wanted in self.engine.personas() else "Persona set."
            except InputError as err:
                text = str(err)
        await self.say(where, text, reply_to=message.message_id)

    async def cmd_cancel(self, update: Update, context: Context) -> None:
        if (message := update.message) is None or message.from_user is None:
            return
        where = where_of(message)
        cancelled = self.cancel_prompts(where.chat_id, message.from_user.id)
        await self.say(where, "Okay, no correction." if cancelled else "There is nothing to cancel.",
                       reply_to=message.message_id)

    async def on_unknown_command(self, update: Update, context: Context) -> None:
        message = update.message
        if message is None or not message.text or author_of(message) is None:
            return
        where = where_of(message)
        name, _, addressee = message.text.split(maxsplit=1)[0][1:].partition("@")
        assert self.me is not None
        if addressee and addressee.lower() != (self.me.username or "").lower():
            return  # meant for another bot
        if not (where.private or addressee or self.replies_to_me(message)):
            return  # a bare command in a group may be another bot's
        await self.say(where, f"I don't know the command /{name}. /help lists what I understand.",
                       reply_to=message.message_id)


async def _answer_query(query: object, text: str, *, alert: bool = False) -> None:
    try:
        await query.answer(text[:200], show_alert=alert)  # type: ignore[attr-defined]
    except TelegramError as err:  # too old to answer, or answered already: the feedback itself counted
        log.debug("could not answer a button press: %s", err)
