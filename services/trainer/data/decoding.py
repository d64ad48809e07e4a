"""Bytes to text without crashing: declared or detected encodings, bad bytes counted.

Detection is deliberately simple and predictable: a BOM wins; then strict
UTF-8; then UTF-8 with replacement if the file clearly is UTF-8 (more good
multi-byte characters than bad bytes); otherwise cp1252, the usual legacy
single-byte encoding. Every byte that cannot be decoded becomes U+FFFD and is
counted.
"""

from __future__ import annotations

import codecs
import dataclasses
import re

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclasses.dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str
    invalid_bytes: int


def _decode_counting(data: bytes, encoding: str) -> Decoded:
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
    return Decoded("".join(parts), encoding, invalid)


def decode_bytes(data: bytes, declared: str = "") -> Decoded:
    """Decode `data` with the declared encoding, or detect one; never raises on bad bytes."""
    if declared:
        codecs.lookup(declared)  # LookupError for an unknown name: caller validates first
        return _decode_counting(data, declared)
    for bom, name in _BOMS:
        if data.startswith(bom):
            return _decode_counting(data, name)
    try:
        return Decoded(data.decode("utf-8"), "utf-8", 0)
    except UnicodeDecodeError:
        pass
    as_utf8 = _decode_counting(data, "utf-8")
    good_multibyte = sum(1 for ch in as_utf8.text if ord(ch) > 127 and ch != "\ufffd")
    if good_multibyte > as_utf8.invalid_bytes:
        return as_utf8
    return _decode_counting(data, "cp1252")


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
