"""Canonical paper keys: the same paper under a differently cased or punctuated title is one paper."""

from __future__ import annotations

import re
import unicodedata

# Apostrophes vanish ("Don't" == "Dont"); every other run of punctuation or space is one space.
_APOSTROPHES = re.compile(r"['\u2018\u2019`\u00b4]")
_NON_WORD = re.compile(r"[\W_]+")


def normalise_title(title: str) -> str:
    """NFKC, casefold, apostrophes dropped, punctuation and whitespace folded to single spaces."""
    text = unicodedata.normalize("NFKC", title).casefold()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).strip()


def paper_key(title: str) -> str:
    """The store's unique key for a paper known only by its title."""
    return "title:" + normalise_title(title)
