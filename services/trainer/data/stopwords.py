"""Stop words per language.

English keeps the classic list used by most IR toolkits: stopwords-iso's
English list (1,298 words) also removes content words such as "world" or
"research". Every other language uses the stopwords-iso list, which the
`stopwordsiso` package ships as data (no download). A user list extends all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import stopwordsiso

from services.trainer.data.language import CJK

STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)


_SPACES = re.compile(r"[ \t]{2,}")


class StopWords:
    """The stop-word sets in use for one preparation (loaded once per language)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._extra = frozenset(word.strip().lower() for word in extra if word.strip())
        self._lists: dict[str, frozenset[str]] = {}

    def of(self, language: str) -> frozenset[str]:
        found = self._lists.get(language)
        if found is None:
            if language == "en":
                base: frozenset[str] = STOP_WORDS
            elif stopwordsiso.has_lang(language):
                base = frozenset(word.lower() for word in stopwordsiso.stopwords(language))
            else:
                base = frozenset()
            found = self._lists[language] = base | self._extra
        return found

    def remove(self, pieces: Sequence[str], language: str) -> tuple[str, list[str], int]:
        """Drop the stop-word pieces; (text, remaining pieces, how many removed)."""
        words = self.of(language)
        kept = [piece for piece in pieces if piece.lower() not in words]
        text = "".join(kept)
        if language not in CJK:
            text = _SPACES.sub(" ", text).strip()
        return text, kept, len(pieces) - len(kept)
