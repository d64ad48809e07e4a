"""Train a tokenizer with Hugging Face `tokenizers`, saved as a `transformers` directory.

Byte-level BPE (GPT-2 style; round-trips any NFKC-normal text exactly) for
causal LMs, WordPiece (BERT style, lower-cased, each CJK character its own
word as in BERT's Chinese models) for encoders. NFKC (full-width to
half-width) is the first step of the tokenizer's own normalizer, so it is
saved in tokenizer.json and serving normalises exactly as training did.
A WordPiece vocabulary trained on Chinese text starts from every GB2312
character (6,763 hanzi and the common symbols) and CJK punctuation, as BERT's Chinese vocabulary
does, so characters the training split happens to lack are not [UNK]. Either is saved with
`PreTrainedTokenizerFast.save_pretrained`, so the model export and the
inference service load it with `AutoTokenizer`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tk_trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lattice.v1 import trainer_pb2
from services.trainer.data.language import HAN

EOS = "<|endoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _byte_level_bpe(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = tk_trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )


@functools.cache
def gb2312_characters() -> tuple[str, ...]:
    """Every character GB2312 encodes in two bytes (hanzi and symbols), and the
    CJK Symbols and Punctuation block (U+3001..U+303F: ideographic zero, quotes)."""
    found = [chr(code) for code in range(0x3001, 0x3040)]
    for lead in range(0xA1, 0xF8):
        for trail in range(0xA1, 0xFF):
            try:
                found.append(bytes((lead, trail)).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return tuple(found)


def _wordpiece(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)]
    )
    # BERT splits off punctuation; symbols (U+25CB, a zero in 1998's years) get
    # the same treatment, or a run of them is one word the vocabulary cannot spell.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Split(Regex(r"\p{So}"), "isolated")]
    )
    tokenizer.decoder = decoders.WordPiece()
    chinese = any(HAN.search(text) for text in texts)
    trainer = tk_trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BERT_SPECIALS),
        initial_alphabet=list(gb2312_characters()) if chinese else [],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id = tokenizer.token_to_id("[CLS]")
    sep_id = tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def train_tokenizer(
    kind: int, texts: Sequence[str], vocab_size: int, directory: Path
) -> PreTrainedTokenizerBase:
    """Train a tokenizer of `kind` on `texts` and save it under `directory`."""
    if kind == trainer_pb2.TOKENIZER_KIND_WORDPIECE:
        tokenizer = _wordpiece(texts, vocab_size)
    else:
        tokenizer = _byte_level_bpe(texts, vocab_size)
    tokenizer.save_pretrained(directory)
    return tokenizer


def copy_tokenizer(source_dir: Path, directory: Path) -> PreTrainedTokenizerBase:
    """Reuse a base model's tokenizer (from its unpacked artifact)."""
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    tokenizer.save_pretrained(directory)
    return tokenizer


def separator_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Token placed between documents in the token stream (EOS), if the tokenizer
    does not already frame each document (BERT's [CLS] ... [SEP])."""
    if tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
        return None
    return tokenizer.eos_token_id
