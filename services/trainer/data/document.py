"""The per-document steps a `CleaningOptions` asks for, in their fixed order:
mojibake repair and NFKC -> markup -> whitespace -> language -> script
conversion -> words (segmentation) -> stop words. Deduplication and length
limits, which need the whole corpus or only the result, stay in `prepare`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import opencc

from lattice.v1 import trainer_pb2
from services.trainer.data import cleaning
from services.trainer.data.decoding import repair_mojibake
from services.trainer.data.language import language_of
from services.trainer.data.segment import WordSegmenter, words_of
from services.trainer.data.stopwords import StopWords


@dataclasses.dataclass(frozen=True)
class Cleaned:
    text: str
    language: str
    #: The word list (segment_words), else None.
    words: tuple[str, ...] | None = None
    repaired: bool = False
    converted: bool = False
    stop_words_removed: int = 0


class DocumentCleaner:
    """Built once per preparation (OpenCC tables, dictionaries, stop-word lists)."""

    def __init__(
        self,
        options: trainer_pb2.CleaningOptions,
        user_dictionary: Sequence[str] = (),
        extra_stop_words: Sequence[str] = (),
    ) -> None:
        self.options = options
        conversion = options.script_conversion.removesuffix(".json")
        self._converter = opencc.OpenCC(f"{conversion}.json") if conversion else None
        needs_words = options.segment_words or options.remove_stop_words
        self._segmenter = WordSegmenter(user_dictionary) if needs_words else None
        self._stop_words = StopWords(extra_stop_words) if options.remove_stop_words else None

    def clean(self, text: str) -> Cleaned:
        options = self.options
        repaired = converted = False
        if options.normalize_unicode:
            text, repaired = repair_mojibake(text)
            text = cleaning.normalize_unicode(text)
        if options.strip_markup:
            text = cleaning.strip_markup(text)
        if options.normalize_whitespace:
            text = cleaning.normalize_whitespace(text)
        language = language_of(text, options.language)
        if self._converter is not None:
            before, text = text, self._converter.convert(text)
            converted = text != before
        if self._segmenter is None:
            return Cleaned(text, language, None, repaired, converted)
        pieces = self._segmenter.pieces(text, language)
        removed = 0
        if self._stop_words is not None:
            text, pieces, removed = self._stop_words.remove(pieces, language)
        words = tuple(words_of(pieces)) if options.segment_words else None
        return Cleaned(text, language, words, repaired, converted, removed)
