"""The terminal adapter: a conversation in a local channel, interactive or scripted.

Every line read is one message (or one command); every message gets exactly one
answer block on stdout, so ``printf 'q\\n/fix a\\nq\\n' | heedful chat`` is a script.
"""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO, TextIO

from engine import (
    ChannelKey,
    Engine,
    Feedback,
    FeedbackKind,
    HeedfulError,
    Turn,
)

from .texts import explanation_lines, personal_text, stats_text

__all__ = ["HELP", "ConsoleAdapter"]

HELP = """commands:
  /fix <better answer>   correct my last reply (I learn it for this channel)
  /fixme <better answer> correct my last reply just for you (only replies to you use it)
  /personal [text]       tell me something about yourself (only replies to you use it); alone: list it
  /good, /bad            rate my last reply
  /why                   what shaped my last reply
  /learned               what this channel taught me (and, just for you, what you taught me)
  /forget                forget everything this channel taught me
  /forget me             forget what you told me about yourself and your corrections just for you
  /persona [preset|text] show or set the persona (presets: {presets})
  /lora                  this channel's LoRA versions (also /adapters, its former name)
  /rollback              go back to the previous LoRA version
  /stats                 whether learning works here: this channel's numbers
  /help                  this list
  /quit                  leave"""


class ConsoleAdapter:
    """Reads messages from ``stdin`` and writes replies to ``stdout``."""

    def __init__(
        self,
        engine: Engine,
        channel: str = "default",
        *,
        user: str = "you",
        stdin: BinaryIO | None = None,
        stdout: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.engine = engine
        self.key = ChannelKey(platform="console", space="local", channel=channel)
        self.user = user
        self.stdin = stdin or sys.stdin.buffer
        self.stdout = stdout or sys.stdout
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.last_reply_id = ""

    def _write(self, text: str = "", end: str = "\n") -> None:
        self.stdout.write(text + end)
        self.stdout.flush()

    async def run(self) -> None:
        """Serve until end of input or ``/quit``."""
        if self.interactive:
            self._write(f"heedful · channel {self.key.channel!r} · model {self.engine.model_name}")
            self._write("Type a message; /fix <better answer> corrects my last reply; /help lists commands.")
        while True:
            if self.interactive:
                self._write("you> ", end="")
            raw = await asyncio.to_thread(self.stdin.readline)
            if not raw:
                return
            line = raw.rstrip(b"\r\n")
            if line.strip() in (b"/quit", b"/exit"):
                return
            await self.handle(line)

    async def handle(self, raw: bytes) -> None:
        """Answer one input line; errors become a clear one-line message."""
        text = raw.decode("utf-8", errors="replace")
        try:
            if text.startswith("/"):
                await self._command(text)
            else:
                await self._chat(text)
        except HeedfulError as err:
            self._write(f"[{type(err).__name__}] {err}")

    async def _chat(self, text: str) -> None:
        reply = self.engine.reply(Turn(channel=self.key, text=text, author_id=self.user, author_name=self.user))
        self.last_reply_id = reply.reply_id
        if self.interactive:
            self._write("bot> ", end="")
        async for chunk in reply:
            self._write(chunk, end="")
        self._write()

    async def _command(self, text: str) -> None:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in ("/fix", "/fixme"):
            await self._feedback(FeedbackKind.CORRECTION, arg, personal=name == "/fixme")
        elif name == "/personal":
            if arg:
                fact = await self.engine.remember(self.key, self.user, arg)
                self._write(f"Noted, just for you (#{fact.fact_id}): {fact.text!r}. /forget me removes it.")
            else:
                self._write(personal_text(await self.engine.personal(self.key, self.user)))
        elif name in ("/good", "/bad"):
            await self._feedback(FeedbackKind.UP if name == "/good" else FeedbackKind.DOWN, "")
        elif name == "/why":
            explanation = await self.engine.explain(self.key, reply_id=self.last_reply_id, viewer=self.user)
            self._write(explanation_lines(explanation))
        elif name == "/learned":
            learned = await self.engine.learned(self.key)
            if not learned:
                self._write("Nothing learned in this channel yet.")
            for c in learned:
                self._write(f"#{c.correction_id}: {c.question!r} -> {c.answer!r}")
            mine = await self.engine.personal(self.key, self.user)
            if len(mine):  # the console is one person's terminal: their own items are theirs to see
                self._write(personal_text(mine))
        elif name == "/forget" and arg == "me":
            counts = await self.engine.forget_person(self.key, self.user)
            self._write(f"Forgot {counts['facts']} thing(s) you told me about yourself and {counts['corrections']} "
                        "correction(s) just for you in this channel.")
        elif name == "/forget":
            count = await self.engine.forget(self.key, author_id=self.user)
            self._write(f"Forgot {count} correction(s) in this channel.")
        elif name == "/persona":
            if arg:
                await self.engine.set_persona(self.key, arg, author_id=self.user)
                self._write(f"Persona set to {arg!r}.")
            else:
                current = (await self.engine.channel_settings(self.key)).persona or "(default)"
                self._write(f"Persona: {current}. Presets: {', '.join(self.engine.personas())}.")
        elif name in ("/lora", "/adapters"):
            versions = await self.engine.lora_versions(self.key)
            if not versions:
                self._write("No LoRA version yet: this channel is served by the base model.")
            for v in versions:
                self._write(f"v{v.version} {v.status}: {v.metrics.get('decision', '')}")
        elif name == "/rollback":
            version = await self.engine.rollback_lora(self.key, author_id=self.user)
            self._write(f"Now serving LoRA version {version}." if version else "Now serving the base model.")
        elif name == "/stats":
            self._write(stats_text(await self.engine.stats(self.key)))
        elif name == "/help":
            self._write(HELP.format(presets=", ".join(self.engine.personas())))
        else:
            self._write(f"Unknown command {name!r}; /help lists the commands.")

    async def _feedback(self, kind: FeedbackKind, text: str, *, personal: bool = False) -> None:
        if kind is FeedbackKind.CORRECTION and not text:
            self._write(f"Usage: /{'fixme' if personal else 'fix'} <the better answer>")
            return
        receipt = await self.engine.feedback(
            Feedback(channel=self.key, kind=kind, author_id=self.user, reply_id=self.last_reply_id, text=text,
                     personal=personal)
        )
        self._write(receipt.message)
