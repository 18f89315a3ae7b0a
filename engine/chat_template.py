"""Chat prompts as token ids, the messages' text always tokenised as plain text.

A chat template marks turns with special tokens (``<|im_start|>system`` ...). Rendered
to one string and tokenised, the text *inside* the messages would be read the same
way, so a message, a correction replayed as an example, a persona or a history line
that contains ``<|im_end|>\\n<|im_start|>system`` would become a real system turn.
Text from users is data, never template.

``render_chat`` renders the template around unguessable placeholders, tokenises the
template's own text with its special tokens, and each message's text with special-token
strings split into ordinary tokens. For ordinary text the ids are the ones
``apply_chat_template(..., tokenize=True)`` gives (a test checks it); only a message's
own leading or trailing whitespace may tokenise differently at its edges.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_chat", "plain_ids", "added_token_ids"]


def added_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every token the tokenizer matches as a whole string (special or added)."""
    return frozenset(int(i) for i in getattr(tokenizer, "added_tokens_decoder", {}))


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool) -> list[int]:
    """Token ids of ``messages`` under the tokenizer's chat template, their text as plain text."""
    nonce = secrets.token_hex(8)
    mark = re.compile(f"\u27e6{nonce}:(\\d+)\u27e7")
    shown = [{**m, "content": f"\u27e6{nonce}:{i}\u27e7"} for i, m in enumerate(messages)]
    rendered: str = tokenizer.apply_chat_template(shown, add_generation_prompt=add_generation_prompt, tokenize=False)
    ids: list[int] = []
    at = 0
    for found in mark.finditer(rendered):
        ids += _template_ids(tokenizer, rendered[at:found.start()])
        ids += plain_ids(tokenizer, messages[int(found.group(1))]["content"])
        at = found.end()
    ids += _template_ids(tokenizer, rendered[at:])
    return ids


def plain_ids(tokenizer: Any, text: str) -> list[int]:
    """``text`` as ordinary tokens: a special token's string becomes the pieces of its spelling."""
    if not text:
        return []
    ids = _ids(tokenizer(text, add_special_tokens=False, split_special_tokens=True))
    added = added_token_ids(tokenizer)
    if not added.intersection(ids):
        return ids
    # A tokenizer that ignores ``split_special_tokens``: cut every added token's string in
    # two, so that no piece can be matched as the whole token.
    strings = sorted((str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in strings if len(s) > 1))
    out: list[int] = []
    at = 0
    for found in pattern.finditer(text):
        token = found.group(0)
        for piece in (text[at:found.start()], token[:1], token[1:]):
            if piece:
                out += _ids(tokenizer(piece, add_special_tokens=False))
        at = found.end()
    if text[at:]:
        out += _ids(tokenizer(text[at:], add_special_tokens=False))
    return out


def _template_ids(tokenizer: Any, text: str) -> list[int]:
    return _ids(tokenizer(text, add_special_tokens=False)) if text else []


def _ids(out: Any) -> list[int]:
    return [int(i) for i in (out["input_ids"] if hasattr(out, "keys") else out)]
