"""Turn a growing list of generated tokens into safe text deltas, in constant
work per token.

Two things make naive `decode(token)` wrong for streaming: byte-level BPE
tokens can end in the middle of a UTF-8 character (decoding shows U+FFFD until
the next token completes it), and a stop sequence may span several tokens, so
text that could still become the start of a stop sequence must not be sent
yet. `TextAssembler` holds such text back until it is known to be final.

Decoding the whole list on every token costs O(n) per token. Instead only a
short window is decoded: the tokens since the last complete character plus
the tokens before them that produced it (as context, for decoders that
depend on the previous token, e.g. SentencePiece's leading spaces), the
method of Hugging Face text-generation-inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_REPLACEMENT = "\ufffd"


def _held_back_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextAssembler:
    """Accumulates token ids; `push` returns the text that is now final."""

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stops = tuple(s for s in stops if s)
        self._longest_stop = max((len(s) for s in self._stops), default=0)
        self._ids: list[int] = []
        self._prefix = 0  # window start: context tokens already decoded
        self._read = 0  # tokens up to here are in `_decoded`
        self._decoded = ""  # whole characters decoded so far
        self._sent = 0  # characters of `_decoded` already returned
        self.text = ""  # the full final text so far (what was returned)
        self.stopped = False

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one token; returns the new final text (possibly ""). Sets
        `stopped` when a stop sequence appeared (the stop is not returned)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        window = self._decode(self._ids[self._prefix :])
        if len(window) > len(before) and not window.endswith(_REPLACEMENT):
            self._decoded += window[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """Generation ended without a stop: release whatever was held back."""
        if self.stopped:
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        window = self._decode(self._ids[self._prefix :])
        self._decoded += window[len(before) :]
        self._prefix = self._read = len(self._ids)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        decoded = self._decoded
        cut = self._first_stop(decoded)
        if cut is not None:
            self.stopped = True
            return self._advance(cut)
        end = len(decoded)
        if not final:
            end -= _held_back_suffix(decoded, self._stops)
        return self._advance(max(end, self._sent))

    def _first_stop(self, decoded: str) -> int | None:
        if not self._stops:
            return None
        start = max(0, self._sent - self._longest_stop)
        found = (decoded.find(s, start) for s in self._stops)
        positions = [i for i in found if i >= 0]
        return min(positions) if positions else None

    def _advance(self, end: int) -> str:
        delta = self._decoded[self._sent : end]
        self._sent = end
        self.text += delta
        return delta
