"""Turn a growing list of generated tokens into safe text deltas.

Two things make naive `decode(token)` wrong for streaming: byte-level BPE
tokens can end in the middle of a UTF-8 character (decoding shows U+FFFD until
the next token completes it), and a stop sequence may span several tokens, so
text that could still become the start of a stop sequence must not be sent
yet. `TextAssembler` holds such text back until it is known to be final.
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
        self._ids: list[int] = []
        self._sent = 0  # characters of the decoded text already returned
        self.text = ""  # the full final text so far (what was returned)
        self.stopped = False

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one token; returns the new final text (possibly ""). Sets
        `stopped` when a stop sequence appeared (the stop is not returned)."""
        self._ids.append(token_id)
        full = self._decode(self._ids)
        cut = self._first_stop(full)
        if cut is not None:
            self.stopped = True
            return self._advance(full[:cut])
        end = len(full)
        if full.endswith(_REPLACEMENT):
            end = len(full.rstrip(_REPLACEMENT))
        end -= _held_back_suffix(full[:end], self._stops)
        return self._advance(full[: max(end, self._sent)])

    def finish(self) -> str:
        """Generation ended without a stop: release whatever was held back."""
        if self.stopped:
            return ""
        return self._advance(self._decode(self._ids))

    def _first_stop(self, full: str) -> int | None:
        found = (full.find(s, max(0, self._sent - len(s))) for s in self._stops)
        positions = [i for i in found if i >= 0]
        return min(positions) if positions else None

    def _advance(self, final: str) -> str:
        delta = final[self._sent :]
        self._sent = len(final)
        self.text = final
        return delta
