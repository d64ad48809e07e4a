"""Train a tokenizer with Hugging Face `tokenizers`, saved as a `transformers` directory.

Byte-level BPE (GPT-2 style; round-trips any NFKC-normal text exactly) for
causal LMs, WordPiece (BERT style, lower-cased, each CJK character its own
word as in BERT's Chinese models) for encoders. NFKC (full-width to
half-width) is the first step of the tokenizer's own normalizer, so it is
saved in tokenizer.json and serving normalises exactly as training did. Either is saved with
`PreTrainedTokenizerFast.save_pretrained`, so the model export and the
inference service load it with `AutoTokenizer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tk_trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lattice.v1 import trainer_pb2

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


def _wordpiece(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = tk_trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS), show_progress=False
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
