"""Streaming text assembly: partial UTF-8 and stop sequences across tokens."""

from __future__ import annotations

from services.inference.detokenize import TextAssembler


# A toy "tokenizer": each token id is a byte.
def _decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def _push_all(assembler: TextAssembler, data: bytes) -> list[str]:
    deltas = []
    for byte in data:
        deltas.append(assembler.push(byte))
        if assembler.stopped:
            break
    deltas.append(assembler.finish())
    return deltas


def test_partial_utf8_is_held_back_until_complete():
    assembler = TextAssembler(_decode)
    deltas = _push_all(assembler, "aé€b".encode())
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) == "aé€b"
    assert deltas[:2] == ["a", ""]  # first byte of é alone shows nothing


def test_stop_sequence_spanning_tokens_is_cut_and_never_sent():
    assembler = TextAssembler(_decode, stops=["END"])
    deltas = _push_all(assembler, b"hello ENDworld")
    assert assembler.stopped
    assert "".join(deltas) == "hello "
    assert all("E" not in d for d in deltas)


def test_text_that_only_looks_like_a_stop_prefix_is_released():
    assembler = TextAssembler(_decode, stops=["END"])
    deltas = _push_all(assembler, b"an ENtry")
    assert not assembler.stopped
    assert "".join(deltas) == "an ENtry"


def test_earliest_of_several_stops_wins():
    assembler = TextAssembler(_decode, stops=["xyz", "b"])
    assert "".join(_push_all(assembler, b"aaxyzb")) == "aa"
