"""Bytes to text without crashing: declared or detected encodings, bad bytes counted.

Detection, in order: a BOM wins (UTF-8, UTF-16 LE/BE, UTF-32); then strict
UTF-8; then UTF-8 with replacement if the file clearly is UTF-8 (more good
multi-byte characters than bad bytes: legacy CJK bytes rarely form valid UTF-8
sequences, so GB18030/Big5 files fail this); then charset-normalizer, which
tells GB18030, Big5, Shift-JIS, EUC-KR, UTF-16 without BOM and the single-byte
code pages apart; cp1252 as the last resort. Where charset-normalizer finds
single-byte code pages equally likely, cp1252 (the common Western one) is
preferred. Every byte that cannot be decoded becomes U+FFFD and is counted.
"""

from __future__ import annotations

import codecs
import dataclasses
import re

import charset_normalizer

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)
_FALLBACK = "cp1252"


@dataclasses.dataclass(frozen=True)
class Decoded:
    text: str
    #: Python's canonical codec name ("utf-8", "gb18030", "big5", "utf-16-le", ...).
    encoding: str
    invalid_bytes: int


def canonical(encoding: str) -> str:
    """Python's own name for an encoding ("UTF_16_LE" -> "utf-16-le");
    LookupError for an unknown name."""
    return codecs.lookup(encoding).name


def _decode_counting(data: bytes, encoding: str, reported: str = "") -> Decoded:
    invalid = 0
    parts: list[str] = []
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    position = 0
    while True:
        try:
            parts.append(decoder.decode(data[position:], final=True))
            break
        except UnicodeDecodeError as error:
            parts.append(decoder.decode(data[position : position + error.start], final=True))
            bad = max(1, error.end - error.start)
            invalid += bad
            parts.append("\ufffd")
            position += error.end
            decoder.reset()
    return Decoded("".join(parts), reported or canonical(encoding), invalid)


def _detected(data: bytes) -> str | None:
    """charset-normalizer's best guess, preferring cp1252 among equal guesses."""
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        tied = (match.chaos, match.coherence) == (best.chaos, best.coherence)
        if tied and _FALLBACK in match.could_be_from_charset:
            return _FALLBACK
    return best.encoding


def decode_bytes(data: bytes, declared: str = "") -> Decoded:
    """Decode `data` with the declared encoding, or detect one; never raises on bad bytes."""
    if declared:
        return _decode_counting(data, declared)  # LookupError for an unknown name
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            return _decode_counting(data, codec, name)
    try:
        text = data.decode("utf-8")
        if "\x00" not in text:  # NULs in "UTF-8" mean UTF-16/32 without a BOM
            return Decoded(text, "utf-8", 0)
    except UnicodeDecodeError:
        as_utf8 = _decode_counting(data, "utf-8")
        good_multibyte = sum(1 for ch in as_utf8.text if ord(ch) > 127 and ch != "\ufffd")
        if good_multibyte > as_utf8.invalid_bytes:
            return as_utf8
    return _decode_counting(data, _detected(data) or _FALLBACK)


# UTF-8 bytes shown as cp1252/latin-1: "Ã©", "â€™", "Â " ...
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152-\u0178\u02c6-\u2122]")


def repair_mojibake(text: str) -> tuple[str, bool]:
    """Undo UTF-8-read-as-cp1252 when that round-trips cleanly; (text, repaired)."""
    if not _MOJIBAKE.search(text):
        return text, False
    for legacy in ("cp1252", "latin-1"):
        try:
            fixed = text.encode(legacy).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if fixed != text:
            return fixed, True
    return text, False
