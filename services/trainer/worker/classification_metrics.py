"""Classification figures, computed here because scikit-learn is not installed
(it would also pull numpy>=2 candidates past nvidia-pytriton's pin): accuracy,
macro-F1 and the per-class confusion matrix.

Definitions follow scikit-learn's: macro-F1 is the unweighted mean of per-class
F1 over the label set, a class with no true and no predicted example scores 0
(sklearn's `zero_division=0`), and `confusion[i][j]` counts examples of true
class i predicted as class j.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class ClassificationReport:
    labels: list[str]
    accuracy: float
    macro_f1: float
    #: confusion[i][j]: true labels[i], predicted labels[j].
    confusion: list[list[int]]
    per_class_f1: dict[str, float]

    def as_metrics(self) -> dict[str, float]:
        """Flat numbers for a registry version's metrics."""
        flat = {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        for label, score in self.per_class_f1.items():
            flat[f"f1.{label}"] = score
        for i, true in enumerate(self.labels):
            for j, predicted in enumerate(self.labels):
                flat[f"confusion.{true}.{predicted}"] = float(self.confusion[i][j])
        return flat


def report(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> ClassificationReport:
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t]][index[p]] += 1
    correct = sum(confusion[i][i] for i in range(len(labels)))
    f1 = {}
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        fp = sum(confusion[r][i] for r in range(len(labels))) - tp
        fn = sum(confusion[i]) - tp
        f1[label] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return ClassificationReport(
        labels=list(labels),
        accuracy=correct / len(truth) if truth else 0.0,
        macro_f1=sum(f1.values()) / len(labels) if labels else 0.0,
        confusion=confusion,
        per_class_f1=f1,
    )
