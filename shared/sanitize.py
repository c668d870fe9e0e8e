"""Turning user text into plain text: no HTML, no banned words, no stray whitespace.

Why strip-then-unescape, repeated to a fixed point: clients render user text as *text*, so the
goal is the text a person meant, not HTML. ``nh3`` (the ammonia sanitiser, a real HTML parser)
removes every tag — and the content of ``script``/``style`` — and returns HTML-escaped text;
unescaping it keeps ``a < b & c`` readable instead of ``a &lt; b &amp; c``. Unescaping could
turn ``&lt;b&gt;`` into a tag, so the two steps repeat until the text no longer changes: the
result contains nothing an HTML parser would read as markup, and is therefore safe even for a
client that (wrongly) renders it as HTML. A pathological input that does not settle within
:data:`MAX_ROUNDS` is returned in its escaped form (still safe, merely less pretty).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

import nh3

MAX_ROUNDS = 8
#: C0/C1 control characters other than tab and newlines: invisible, and some break terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
CENSORED = "***"


def strip_html(text: str) -> str:
    """``text`` with all HTML removed and entities decoded (see the module docstring)."""
    for _ in range(MAX_ROUNDS):
        escaped = nh3.clean(text, tags=set())
        plain = html.unescape(escaped)
        if plain == text:
            return plain
        text = plain
    return nh3.clean(text, tags=set())


def phrases(setting: str) -> tuple[str, ...]:
    """The entries of a comma-separated word list (``--banned-words``). Commas only, not
    whitespace as list options split: a phrase such as ``heck no`` is one entry."""
    return tuple(part.strip() for part in setting.split(",") if part.strip())


class Sanitizer:
    """Cleans user text fields; the banned-word list is compiled once."""

    def __init__(self, banned_words: Iterable[str] = ()) -> None:
        words = sorted({w.strip() for w in banned_words if w.strip()}, key=len, reverse=True)
        # Whole words only ("ass" must not censor "class"); the longest alternative first so a
        # phrase wins over a word it contains.
        self._banned = (
            re.compile(
                r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE
            )
            if words
            else None
        )

    def censor(self, text: str) -> str:
        return self._banned.sub(CENSORED, text) if self._banned is not None else text

    def clean(self, text: str) -> str:
        text = _CONTROL.sub("", text)
        text = strip_html(text)
        text = self.censor(text)
        return text.strip()
