"""Accuracy, macro-F1, confusion matrix and the stratified split, against values
worked out by hand (and as scikit-learn defines them)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.trainer.data.labels import stratified_split
from services.trainer.worker.classification_metrics import report


def test_report_on_a_worked_example():
    truth = ["pos", "pos", "pos", "neg", "neg", "neu"]
    predicted = ["pos", "neg", "pos", "neg", "pos", "neg"]
    result = report(truth, predicted, ["neg", "neu", "pos"])
    assert result.accuracy == pytest.approx(3 / 6)
    assert result.confusion == [[1, 0, 1], [1, 0, 0], [1, 0, 2]]
    # neg: tp 1, fp 2, fn 1 -> 2/5; neu: 0; pos: tp 2, fp 1, fn 1 -> 4/6
    assert result.per_class_f1 == pytest.approx({"neg": 0.4, "neu": 0.0, "pos": 2 / 3})
    assert result.macro_f1 == pytest.approx((0.4 + 0 + 2 / 3) / 3)
    metrics = result.as_metrics()
    assert metrics["confusion.pos.neg"] == 1.0 and metrics["f1.pos"] == pytest.approx(2 / 3)


def test_perfect_predictions_score_one():
    labels = ["a", "b", "a", "c"]
    result = report(labels, labels, ["a", "b", "c"])
    assert result.accuracy == 1.0 and result.macro_f1 == 1.0


@given(
    st.lists(st.sampled_from(["pos", "neg", "neu"]), min_size=2, max_size=200),
    st.floats(0.05, 0.5),
    st.integers(0, 10_000),
)
def test_stratified_split_keeps_class_shares(labels, fraction, seed):
    train, validation = stratified_split(labels, fraction, seed)
    assert sorted(train + validation) == list(range(len(labels)))
    counts = Counter(labels)
    held = Counter(labels[i] for i in validation)
    for label, n in counts.items():
        if n >= 2:
            expected = min(max(1, round(n * fraction)), n - 1)
            assert held[label] == expected
        else:
            assert held[label] == 0
    assert stratified_split(labels, fraction, seed) == (train, validation)
