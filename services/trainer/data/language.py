"""Which language a document is in, told by its script (no statistical model).

Script is enough for what preparation needs it for: picking a stop-word list,
choosing character or word shingles, and deciding whether to segment. Han
characters mean Chinese unless kana make it Japanese; Latin script means
English (set `CleaningOptions.language` for other Latin-script languages).
"""

from __future__ import annotations

import re

import stopwordsiso

AUTO = "auto"
UNDETERMINED = "und"
#: Languages written without spaces between words: character shingles, segmentation.
CJK = frozenset({"zh", "ja"})
_SAMPLE = 2000

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
HAN = re.compile(f"[{_HAN}]")
_SCRIPTS = (
    ("zh", HAN),
    ("ja", re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")),
    ("ko", re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")),
    ("ru", re.compile("[\u0400-\u04ff]")),
    ("el", re.compile("[\u0370-\u03ff]")),
    ("ar", re.compile("[\u0600-\u06ff]")),
    ("he", re.compile("[\u0590-\u05ff]")),
    ("th", re.compile("[\u0e00-\u0e7f]")),
    ("hi", re.compile("[\u0900-\u097f]")),
    ("en", re.compile("[A-Za-z\u00c0-\u024f\uff21-\uff3a\uff41-\uff5a]")),
)


def known_language(code: str) -> bool:
    """An accepted value of `CleaningOptions.language`."""
    return code in ("", AUTO) or stopwordsiso.has_lang(code)


def detect_language(text: str) -> str:
    """ISO 639-1 code of the script most of the (first 2000) letters are in, or "und"."""
    sample = text[:_SAMPLE]
    if sample.isascii():
        return "en" if any(ch.isalpha() for ch in sample) else UNDETERMINED
    counts = {code: len(pattern.findall(sample)) for code, pattern in _SCRIPTS}
    if counts["ja"] and counts["ja"] * 5 >= counts["zh"]:
        counts["ja"] += counts["zh"]  # Japanese mixes kanji and kana
    best = max(counts, key=lambda code: counts[code])
    return best if counts[best] else UNDETERMINED


def language_of(text: str, declared: str) -> str:
    return detect_language(text) if declared in ("", AUTO) else declared
