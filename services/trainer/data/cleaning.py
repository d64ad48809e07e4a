"""Per-document cleaning steps. Each is a pure function of the text (stop words:
`stopwords.StopWords`)."""

from __future__ import annotations

import html
import re
import unicodedata

_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENTS = re.compile(r"<!--.*?-->", re.DOTALL)
_TAGS = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")
_HORIZONTAL = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


def normalize_unicode(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def strip_markup(text: str) -> str:
    """Drop HTML/XML tags, comments, script/style blocks; unescape entities;
    drop control and format characters (keeping newlines and tabs)."""
    text = _BLOCKS.sub(" ", text)
    text = _COMMENTS.sub(" ", text)
    text = _TAGS.sub(" ", text)
    text = html.unescape(text)
    if text.replace("\n", "").replace("\t", "").replace(" ", "").isprintable():
        return text  # the common case: nothing to drop, no per-character pass
    return "".join(
        ch
        for ch in text
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
    )


def normalize_whitespace(text: str) -> str:
    """One space between words, no trailing spaces, at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_HORIZONTAL.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
