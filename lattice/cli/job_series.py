"""A job's metric series from its event stream: the rows `lattice jobs metrics`
exports and `lattice jobs plot` draws."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable
from typing import TextIO

from lattice.v1 import trainer_pb2

COLUMNS = ("step", "loss", "validation_loss", "learning_rate", "gradient_norm", "tokens_per_second")


@dataclasses.dataclass
class Series:
    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)
    #: (step, kind name, cleared, message)
    alerts: list[tuple[int, str, bool, str]] = dataclasses.field(default_factory=list)


def collect(events: Iterable[trainer_pb2.WatchJobResponse]) -> Series:
    """Metrics rows by step (a step replayed after a restart or rollback keeps
    its last report) and the alerts, in order."""
    by_step: dict[int, dict[str, float]] = {}
    series = Series()
    for event in events:
        if event.HasField("metrics"):
            m = event.metrics
            by_step[m.step] = {
                "step": m.step,
                "loss": m.loss,
                "validation_loss": m.validation_loss if m.HasField("validation_loss") else math.nan,
                "learning_rate": m.learning_rate,
                "gradient_norm": m.gradient_norm,
                "tokens_per_second": m.tokens_per_second,
            }
        elif event.HasField("alert"):
            a = event.alert
            kind = trainer_pb2.AlertKind.Name(a.kind).removeprefix("ALERT_KIND_").lower()
            series.alerts.append((a.step, kind, a.cleared, a.message))
    series.rows = [by_step[step] for step in sorted(by_step)]
    return series


def write_csv(series: Series, out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in series.rows:
        writer.writerow({k: "" if math.isnan(row[k]) else row[k] for k in COLUMNS})
